// Package tailfile reads the end of a log file that may still be growing.
package tailfile

import (
	"errors"
	"io"
	"io/fs"
	"os"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// Read returns at most the last n bytes of path; a missing file reads as
// empty.
func Read(path string, n int64) ([]byte, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, errdefs.FromOS(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, errdefs.FromOS(err)
	}
	if st.Size() > n {
		if _, err := f.Seek(-n, io.SeekEnd); err != nil {
			return nil, err
		}
	}
	// The writer may append meanwhile; never return more than asked.
	return io.ReadAll(io.LimitReader(f, n))
}

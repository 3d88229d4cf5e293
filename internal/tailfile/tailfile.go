// Package tailfile reads the end of a log file that may still be growing.
package tailfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// Read returns at most the last n bytes of path; a missing file reads as
// empty.
//
// The file may sit in a directory another (less trusted) user owns, such
// as a VMM's console log: Read never follows a symbolic link in the last
// path component (O_NOFOLLOW), does not block on a FIFO planted there
// (O_NONBLOCK), and refuses anything but a regular file, so that user
// cannot make the reader disclose another file or hang. The directories
// above must belong to the reader.
func Read(path string, n int64) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if errors.Is(err, syscall.ELOOP) {
		return nil, errdefs.New(errdefs.ErrFailedPrecondition, "%s is a symbolic link; not following it", path)
	}
	if err != nil {
		return nil, errdefs.FromOS(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, errdefs.FromOS(err)
	}
	if !st.Mode().IsRegular() {
		return nil, errdefs.New(errdefs.ErrFailedPrecondition, "%s is not a regular file (%s)", path, st.Mode().Type())
	}
	if st.Size() > n {
		if _, err := f.Seek(-n, io.SeekEnd); err != nil {
			return nil, fmt.Errorf("seek in %s: %w", path, err)
		}
	}
	// The writer may append meanwhile; never return more than asked.
	return io.ReadAll(io.LimitReader(f, n))
}

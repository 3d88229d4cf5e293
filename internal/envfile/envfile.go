// Package envfile reads .env files, the optional configuration file of
// wrenn-cp and wrenn-agent: KEY=VALUE lines, optionally prefixed by
// "export ", with blank lines and #-comments; a value in matching single or
// double quotes is taken literally without them (no escapes, no expansion).
package envfile

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// MaxSize bounds an env file: it is configuration, not data.
const MaxSize = 1 << 20

// Read parses the file at path. A missing file's error wraps
// fs.ErrNotExist (callers decide whether that is fine); every other
// problem is errdefs.ErrInvalidArgument, naming each bad line.
func Read(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("env file %s: %w", path, err)
	}
	if err != nil {
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "env file: %v", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "env file %s: %v", path, err)
	}
	if len(b) > MaxSize {
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "env file %s: larger than %d bytes", path, MaxSize)
	}
	m := map[string]string{}
	var errs []error
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 4096), MaxSize)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		line = strings.TrimPrefix(line, "export ")
		k, v, ok := strings.Cut(line, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || !validName(k) {
			errs = append(errs, fmt.Errorf("line %d: want KEY=VALUE", n))
			continue
		}
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		m[k] = v
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "env file %s: %v", path, errors.Join(errs...))
	}
	return m, nil
}

func validName(k string) bool {
	if k == "" || k[0] >= '0' && k[0] <= '9' {
		return false
	}
	for _, c := range k {
		if !(c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

package files

import (
	"bufio"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/wrenn/wrenn/internal/envd/envdhttp"
	"github.com/wrenn/wrenn/internal/envd/filesystem"
	"github.com/wrenn/wrenn/internal/envd/identity"
	"github.com/wrenn/wrenn/internal/errdefs"
)

// writeBuffer is the size of the writes an upload makes to disk.
const writeBuffer = 256 << 10

// uploaded is one element of the POST /files response, as E2B returns it.
type uploaded struct {
	Path string `json:"path"`
	Name string `json:"name"`
	Type string `json:"type"`
}

// upload stores a raw body (application/octet-stream, ?path required) or
// every multipart part named "file" (destination ?path, else the part's
// filename, which E2B's SDKs set to the full path for multi-file writes).
//
// Each file is streamed to a temporary file beside its destination, synced
// and renamed into place, so no reader ever sees a half-written file under
// the final name. Files are stored one after another: if a later part
// fails, earlier ones stay written and the response is the error.
func (h *handler) upload(w http.ResponseWriter, r *http.Request) {
	u, err := h.user(r)
	if err != nil {
		envdhttp.WriteError(w, err)
		return
	}
	body := io.Reader(r.Body)
	if strings.EqualFold(r.Header.Get("Content-Encoding"), "gzip") {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			envdhttp.WriteError(w, errdefs.New(errdefs.ErrInvalidArgument, "read gzip request body: %v", err))
			return
		}
		defer zr.Close()
		body = zr
	}
	pathParam := r.URL.Query().Get("path")
	mediaType, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		envdhttp.WriteError(w, errdefs.New(errdefs.ErrInvalidArgument,
			"Content-Type must be multipart/form-data or application/octet-stream, got %q", r.Header.Get("Content-Type")))
		return
	}
	var out []uploaded
	switch mediaType {
	case "application/octet-stream":
		if pathParam == "" {
			err = errdefs.New(errdefs.ErrInvalidArgument, "the path query parameter is required for a raw upload")
			break
		}
		var up uploaded
		up, err = store(u.Resolve(pathParam), body, u)
		out = append(out, up)
	case "multipart/form-data":
		out, err = storeParts(multipart.NewReader(body, params["boundary"]), pathParam, u)
	default:
		err = errdefs.New(errdefs.ErrInvalidArgument, "Content-Type must be multipart/form-data or application/octet-stream, got %q", mediaType)
	}
	if err != nil {
		envdhttp.WriteError(w, err)
		return
	}
	envdhttp.WriteJSON(w, http.StatusOK, out)
}

func storeParts(mr *multipart.Reader, pathParam string, u identity.User) ([]uploaded, error) {
	out := []uploaded{}
	seen := map[string]bool{}
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, errdefs.New(errdefs.ErrInvalidArgument, "read multipart body: %v", err)
		}
		if part.FormName() != "file" {
			// NextPart discards what is left of a part, so unknown
			// fields cost nothing but the bytes on the wire.
			continue
		}
		name := pathParam
		if name == "" {
			name = rawFilename(part)
		}
		if name == "" {
			return nil, errdefs.New(errdefs.ErrInvalidArgument, "a file part has no filename and no path query parameter was given")
		}
		dest := u.Resolve(name)
		if seen[dest] {
			return nil, errdefs.New(errdefs.ErrInvalidArgument, "more than one part is written to %s in the same request", dest)
		}
		seen[dest] = true
		up, err := store(dest, part, u)
		if err != nil {
			return nil, err
		}
		out = append(out, up)
	}
	if len(out) == 0 {
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "the multipart body has no part named \"file\"")
	}
	return out, nil
}

// rawFilename is the filename a part declares, with its directories:
// multipart.Part.FileName keeps only the base name, but E2B's SDKs put the
// whole destination path there.
func rawFilename(p *multipart.Part) string {
	_, params, err := mime.ParseMediaType(p.Header.Get("Content-Disposition"))
	if err != nil {
		return ""
	}
	return params["filename"]
}

// store writes src to dest atomically, owned by u. An existing file keeps
// its permission bits; a new one gets 0644. A symlink at dest is followed,
// so the file it points to is the one replaced.
func store(dest string, src io.Reader, u identity.User) (uploaded, error) {
	up := uploaded{Path: dest, Name: filepath.Base(dest), Type: "file"}
	target := dest
	if fi, err := os.Lstat(dest); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		if resolved, err := filepath.EvalSymlinks(dest); err == nil {
			target = resolved
		}
	}
	perm := os.FileMode(0o644)
	fi, err := os.Stat(target)
	switch {
	case err == nil && fi.IsDir():
		return up, errdefs.New(errdefs.ErrInvalidArgument, "upload to %s: it is a directory", dest)
	case err == nil && !fi.Mode().IsRegular():
		return up, errdefs.New(errdefs.ErrInvalidArgument, "upload to %s: not a regular file", dest)
	case err == nil:
		if !allowed(fi, u, accessWrite) {
			return up, errdefs.New(errdefs.ErrPermissionDenied, "upload to %s: user %s may not write it", dest, u.Name)
		}
		perm = fi.Mode().Perm()
	case errors.Is(err, fs.ErrNotExist):
		if err := checkCreate(filepath.Dir(target), u); err != nil {
			return up, fmt.Errorf("upload to %s: %w", dest, err)
		}
	default:
		return up, fmt.Errorf("upload to %s: %w", dest, errdefs.FromOS(err))
	}

	dir := filepath.Dir(target)
	if err := filesystem.MakeDirs(dir, u); err != nil {
		return up, fmt.Errorf("upload to %s: %w", dest, err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(target)+".upload-*")
	if err != nil {
		return up, fmt.Errorf("upload to %s: create temporary file: %w", dest, errdefs.FromOS(err))
	}
	committed := false
	defer func() {
		if !committed {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(perm); err != nil {
		return up, fmt.Errorf("upload to %s: %w", dest, errdefs.FromOS(err))
	}
	if err := filesystem.Chown(tmp.Name(), u); err != nil {
		return up, fmt.Errorf("upload to %s: %w", dest, err)
	}
	body := &readErr{r: src}
	// Multipart parts arrive a few KiB per Read; batching them into larger
	// writes cuts syscalls by two orders of magnitude at a fixed cost.
	bw := bufio.NewWriterSize(tmp, writeBuffer)
	if _, err := io.Copy(bw, body); err != nil {
		if body.err != nil {
			// The client's side failed (disconnect, truncated body), not
			// the disk.
			return up, errdefs.New(errdefs.ErrInvalidArgument, "upload to %s: read request body: %v", dest, body.err)
		}
		return up, fmt.Errorf("upload to %s: write: %w", dest, errdefs.FromOS(err))
	}
	if err := bw.Flush(); err != nil {
		return up, fmt.Errorf("upload to %s: write: %w", dest, errdefs.FromOS(err))
	}
	if err := tmp.Sync(); err != nil {
		return up, fmt.Errorf("upload to %s: sync: %w", dest, errdefs.FromOS(err))
	}
	if err := tmp.Close(); err != nil {
		return up, fmt.Errorf("upload to %s: close: %w", dest, errdefs.FromOS(err))
	}
	if err := os.Rename(tmp.Name(), target); err != nil {
		return up, fmt.Errorf("upload to %s: rename into place: %w", dest, errdefs.FromOS(err))
	}
	committed = true
	// Persist the rename itself; the data is already synced. A failure
	// here leaves a complete file in place, so it is not reported.
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return up, nil
}

// checkCreate reports whether u may create entries in dir, judged on the
// nearest directory that already exists (the rest MakeDirs creates for u).
func checkCreate(dir string, u identity.User) error {
	for p := dir; ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err == nil {
			if !fi.IsDir() {
				return errdefs.New(errdefs.ErrInvalidArgument, "%s is not a directory", p)
			}
			if !allowed(fi, u, accessWrite) {
				return errdefs.New(errdefs.ErrPermissionDenied, "user %s may not create files in %s", u.Name, p)
			}
			return nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return errdefs.FromOS(err)
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}

// readErr remembers the error its reader returned, so a failed copy can
// be blamed on the right side.
type readErr struct {
	r   io.Reader
	err error
}

func (e *readErr) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		e.err = err
	}
	return n, err
}

package envdclient

import (
	"context"
	"fmt"
	"io"
	"net/http"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// Upload writes r to path in the guest (POST /files, raw body), creating
// parent directories and replacing an existing file. r is streamed, never
// held in memory whole. A relative path is relative to the user's home.
func (c *Client) Upload(ctx context.Context, path string, r io.Reader, opts ...CallOption) error {
	if path == "" {
		return errdefs.New(errdefs.ErrInvalidArgument, "upload: empty path")
	}
	cc := callOpts(opts)
	// Hiding the concrete type (e.g. *bytes.Reader) stops net/http from
	// setting a Content-Length it cannot check mid-stream; the body streams.
	body := io.NopCloser(r)
	h := http.Header{"Content-Type": {"application/octet-stream"}}
	resp, err := c.do(ctx, http.MethodPost, "/files", fileQuery(path, cc.user), h, cc.user, body)
	if err != nil {
		return fmt.Errorf("upload %s: %w", path, err)
	}
	defer drainClose(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("upload %s: %w", path, httpError(resp))
	}
	return nil
}

// Download opens path in the guest for reading (GET /files). The caller
// must close the reader; its content streams from the guest as it is read.
func (c *Client) Download(ctx context.Context, path string, opts ...CallOption) (io.ReadCloser, error) {
	if path == "" {
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "download: empty path")
	}
	cc := callOpts(opts)
	resp, err := c.do(ctx, http.MethodGet, "/files", fileQuery(path, cc.user), nil, cc.user)
	if err != nil {
		return nil, fmt.Errorf("download %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer drainClose(resp.Body)
		return nil, fmt.Errorf("download %s: %w", path, httpError(resp))
	}
	return resp.Body, nil
}

func fileQuery(path, user string) map[string]string {
	return map[string]string{"path": path, "username": user}
}

package firecracker

import (
	"context"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/wrenn/wrenn/internal/errdefs"
)

func TestClientMapsAnswers(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "api.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/fault", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadRequest)
		w.Write([]byte(`{"fault_message":"bad thing"}`))
	})
	mux.HandleFunc("/plain", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "not json", http.StatusInternalServerError)
	})
	mux.HandleFunc("/missing", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte(`{"fault_message":"no such thing"}`))
	})
	mux.HandleFunc("/info", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"id":"x","state":"Paused"}`))
	})
	hs := &http.Server{Handler: mux}
	go hs.Serve(l)
	t.Cleanup(func() { hs.Close() })

	c := NewClient(sock)
	defer c.Close()
	ctx := context.Background()
	for _, tc := range []struct {
		path   string
		kind   error
		status int
		fault  string
	}{
		{"/fault", errdefs.ErrInvalidArgument, 400, "bad thing"},
		{"/missing", errdefs.ErrNotFound, 404, "no such thing"},
		{"/plain", nil, 500, "not json"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			err := c.Do(ctx, http.MethodPut, tc.path, map[string]int{"a": 1}, nil)
			var ae *APIError
			if !errors.As(err, &ae) || ae.Status != tc.status || ae.Fault != tc.fault || ae.Path != tc.path {
				t.Fatalf("err = %#v", err)
			}
			if tc.kind != nil && !errors.Is(err, tc.kind) {
				t.Fatalf("err = %v, want %v", err, tc.kind)
			}
			if tc.kind == nil && (errors.Is(err, errdefs.ErrInvalidArgument) || errors.Is(err, errdefs.ErrNotFound)) {
				t.Fatalf("a %d must not claim a kind: %v", tc.status, err)
			}
		})
	}
	t.Run("decodes 200", func(t *testing.T) {
		var info instanceInfo
		if err := c.Do(ctx, http.MethodGet, "/info", nil, &info); err != nil || info.State != "Paused" {
			t.Fatalf("info %+v, err %v", info, err)
		}
	})
	t.Run("socket gone", func(t *testing.T) {
		err := NewClient(filepath.Join(t.TempDir(), "none.sock")).Do(ctx, http.MethodGet, "/", nil, nil)
		if err == nil || isAPIError(err) {
			t.Fatalf("err = %v, want a transport error", err)
		}
	})
}

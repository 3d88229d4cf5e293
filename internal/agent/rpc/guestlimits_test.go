package rpc

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// A guest server answering with 1 MiB of headers must not have them held
// by the agent (a tenant is root in its guest).
func TestGuestTransportCapsHeaders(t *testing.T) {
	guest := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for i := range 64 {
			w.Header().Set(fmt.Sprintf("X-Junk-%d", i), strings.Repeat("j", 16<<10))
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer guest.Close()
	tr := newGuestTransport()
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, guest.URL, nil)
	resp, err := tr.RoundTrip(req)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("1 MiB of guest response headers accepted (status %s)", resp.Status)
	}
}

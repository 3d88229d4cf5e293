package wrenn_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/wrenn/wrenn/api"
	wrenn "github.com/wrenn/wrenn/sdk/go"
)

// idemServer is a create endpoint that remembers keys like the control
// plane: a repeated key answers the sandbox it first made. drop says, per
// attempt (1-based), whether to make the sandbox and then cut the
// connection instead of answering, or to answer a status without doing
// anything.
type idemServer struct {
	mu       sync.Mutex
	keys     []string
	made     map[string]string
	attempts int
	// fault returns, for an attempt, "drop", "503", "422" or "".
	fault func(attempt int) string
}

func (s *idemServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.ReadAll(r.Body)
	key := r.Header.Get("Idempotency-Key")
	s.mu.Lock()
	s.attempts++
	n := s.attempts
	s.keys = append(s.keys, key)
	fault := s.fault(n)
	switch fault {
	case "503", "422":
		s.mu.Unlock()
		code := map[string]string{"503": "unavailable", "422": "idempotency_key_reused"}[fault]
		status := map[string]int{"503": 503, "422": 422}[fault]
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"error":{"code":%q,"message":"nope"}}`, code)
		return
	}
	id, ok := s.made[key]
	if !ok {
		id = fmt.Sprintf("sb%d", len(s.made)+1)
		s.made[key] = id
	}
	s.mu.Unlock()
	if fault == "drop" {
		// Done, but the answer is lost: the connection closes unanswered.
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
		return
	}
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(api.Sandbox{Id: id, State: api.SandboxStateRunning, AccessToken: &id})
}

// sent is the keys received so far, in order; madeCount how many
// sandboxes were made.
func (s *idemServer) sent() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.keys...)
}

func (s *idemServer) madeCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.made)
}

func newIdemClient(t *testing.T, fault func(int) string) (*wrenn.Client, *idemServer) {
	t.Helper()
	s := &idemServer{made: map[string]string{}, fault: fault}
	hs := httptest.NewServer(s)
	t.Cleanup(hs.Close)
	c, err := wrenn.NewClient(wrenn.WithEnv(noEnv), wrenn.WithAPIKey("k"), wrenn.WithBaseURL(hs.URL))
	if err != nil {
		t.Fatal(err)
	}
	return c, s
}

// TestCreateRetriesWithSameKey: the first answer is lost after the server
// made the sandbox; the SDK retries with the same key and gets that
// sandbox, not a second one.
func TestCreateRetriesWithSameKey(t *testing.T) {
	c, s := newIdemClient(t, func(n int) string {
		if n == 1 {
			return "drop"
		}
		return ""
	})
	sb, err := c.Sandboxes.Create(context.Background(), wrenn.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.sent()) != 2 || s.sent()[0] == "" || s.sent()[0] != s.sent()[1] {
		t.Fatalf("keys sent %q: want two attempts with one non-empty key", s.sent())
	}
	if sb.ID != "sb1" || s.madeCount() != 1 {
		t.Errorf("got sandbox %s; server made %d", sb.ID, s.madeCount())
	}
	// Each call has its own fresh key.
	if _, err := c.Sandboxes.Create(context.Background(), wrenn.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if len(s.sent()) != 3 || s.sent()[2] == s.sent()[0] || s.madeCount() != 2 {
		t.Errorf("second create: keys %q, made %d", s.sent(), s.madeCount())
	}
}

// TestRetryOnlyTransportAnd503: 503 is retried with the same key (here
// a caller's own); any other error answer is final.
func TestRetryOnlyTransportAnd503(t *testing.T) {
	c, s := newIdemClient(t, func(n int) string {
		if n <= 2 {
			return "503"
		}
		return ""
	})
	sb, err := c.Sandboxes.Create(context.Background(), wrenn.CreateOptions{IdempotencyKey: "mine-1"})
	if err != nil || sb.ID != "sb1" {
		t.Fatalf("create: %v %v", sb, err)
	}
	if len(s.sent()) != 3 || s.sent()[0] != "mine-1" || s.sent()[2] != "mine-1" {
		t.Errorf("keys sent %q, want mine-1 three times", s.sent())
	}

	c, s = newIdemClient(t, func(int) string { return "422" })
	_, err = c.Sandboxes.Create(context.Background(), wrenn.CreateOptions{IdempotencyKey: "mine-2"})
	if !errors.Is(err, wrenn.ErrIdempotencyKeyReused) || len(s.sent()) != 1 {
		t.Errorf("422: %v after %d attempts, want idempotency_key_reused after 1", err, len(s.sent()))
	}

	// Always 503: a few attempts, then the error.
	c, s = newIdemClient(t, func(int) string { return "503" })
	_, err = c.Sandboxes.Create(context.Background(), wrenn.CreateOptions{})
	if !wrenn.IsUnavailable(err) || len(s.sent()) < 2 || len(s.sent()) > 5 {
		t.Errorf("always 503: %v after %d attempts", err, len(s.sent()))
	}

	// The context bounds the retries.
	c, _ = newIdemClient(t, func(int) string { return "drop" })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := c.Sandboxes.Create(ctx, wrenn.CreateOptions{}); err == nil {
		t.Error("create against a server that never answers succeeded")
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("retries outlived the context: %v", el)
	}
}

package wrenn

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// CallOptions tune one Fork or Snapshot call.
type CallOptions struct {
	// IdempotencyKey names the operation (1-255 printable ASCII): the
	// server answers a repeat of the same request with the same key with
	// the first one's result instead of doing it twice, for 24 hours.
	// Empty: the SDK makes a fresh random key for the call, so its own
	// retries are safe. Give your own to make retries across processes
	// (after a crash, say) safe too.
	IdempotencyKey string
}

// idempotentAttempts is how often an idempotent call is sent at most.
const idempotentAttempts = 4

// Backoff between attempts: first wait, and the most any wait (also a
// server's Retry-After) is allowed to be.
const (
	retryFirstWait = 200 * time.Millisecond
	retryMaxWait   = 5 * time.Second
)

// newIdempotencyKey returns a fresh random key.
func newIdempotencyKey() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return "wrenn-go-" + hex.EncodeToString(b)
}

func keyOf(opts []CallOptions) string {
	for _, o := range opts {
		if o.IdempotencyKey != "" {
			return o.IdempotencyKey
		}
	}
	return newIdempotencyKey()
}

// callIdempotent is call for a POST that creates something, sent with an
// Idempotency-Key (key; never empty) and retried with the same key and
// body only when it cannot have been answered (a transport error, the
// answer lost on the way) or the server said 503 (unavailable, try
// again): a few times, with backoff, while ctx lasts. Any other answer,
// error or not, is final.
func (c *Client) callIdempotent(ctx context.Context, path, key string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("encode request: %w", err)
	}
	wait := retryFirstWait
	for attempt := 1; ; attempt++ {
		err := c.postOnce(ctx, path, key, body, out)
		if err == nil || attempt == idempotentAttempts || ctx.Err() != nil || !retryable(err) {
			return err
		}
		d := wait
		var apiErr *Error
		if errors.As(err, &apiErr) && apiErr.RetryAfter > d {
			d = apiErr.RetryAfter
		}
		d = min(d, retryMaxWait)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		wait = min(2*wait, retryMaxWait)
	}
}

// retryable: the request may not have been done, or the server asked
// for a retry.
func retryable(err error) bool {
	var apiErr *Error
	if errors.As(err, &apiErr) {
		return apiErr.Status == http.StatusServiceUnavailable
	}
	var dec *decodeError
	return !errors.As(err, &dec)
}

// decodeError: a complete 2xx answer that is not what was expected; a
// retry would get the same.
type decodeError struct{ err error }

func (e *decodeError) Error() string { return e.err.Error() }
func (e *decodeError) Unwrap() error { return e.err }

// postOnce sends one attempt and decodes its answer. The body is read
// whole first, so a connection cut mid-answer is a transport error.
func (c *Client) postOnce(ctx context.Context, path, key string, body []byte, out any) error {
	req, err := c.newRequest(ctx, http.MethodPost, path, nil, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	resp, err := c.do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("read POST %s response: %w", path, err)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return &decodeError{fmt.Errorf("decode POST %s response: %w", path, err)}
	}
	return nil
}

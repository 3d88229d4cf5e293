package main

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/pgtest"
)

// Prometheus metrics are unauthenticated and describe every team's
// traffic: wrenn-cp serves them on WRENN_METRICS_ADDR only, and the API
// port answers /metrics with 404 (issue 11).
func TestMetricsOnTheirOwnListener(t *testing.T) {
	_, dsn := pgtest.NewWithDSN(t)
	t.Chdir(t.TempDir()) // no ./.env
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	metricsAddr := l.Addr().String()
	l.Close()
	var logs bytes.Buffer
	d := startDaemon(t, dsn, newTestLogger(&logs), "--listen", "127.0.0.1:0", "--metrics-listen", metricsAddr)
	base := "http://" + d.addr

	get := func(url string) (int, string) {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get(base + "/metrics"); code != http.StatusNotFound {
		t.Errorf("GET /metrics on the API port: %d (%.80q), want 404", code, body)
	}
	code, body := get("http://" + metricsAddr + "/metrics")
	if code != http.StatusOK || !strings.Contains(body, "wrenn_api_requests_total") || !strings.Contains(body, "go_goroutines") {
		t.Errorf("GET /metrics on WRENN_METRICS_ADDR: %d, body lacks wrenn_api_requests_total or go_goroutines:\n%.500s", code, body)
	}

	d.stop(t)
	if c, err := net.DialTimeout("tcp", metricsAddr, time.Second); err == nil {
		c.Close()
		t.Error("the metrics listener is still open after shutdown")
	}
}

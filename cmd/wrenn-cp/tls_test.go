package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/wrenn/wrenn/internal/agent/registration"
	"github.com/wrenn/wrenn/internal/capin"
	"github.com/wrenn/wrenn/internal/pgtest"
	hostagentv1 "github.com/wrenn/wrenn/proto/hostagent/v1"
)

// With WRENN_TLS=self-signed, wrenn-cp logs the cluster CA's fingerprint
// and serves HTTPS (HTTP/2) with a certificate from that CA: a client
// pinning the fingerprint gets in, API and registry alike; one pinning
// another CA, or speaking plain HTTP, does not.
func TestRunServesSelfSignedTLS(t *testing.T) {
	_, dsn := pgtest.NewWithDSN(t)
	t.Chdir(t.TempDir())
	logs := &lockedBuffer{b: &bytes.Buffer{}}
	d := startDaemon(t, dsn, slog.New(slog.NewJSONHandler(logs, nil)), "--listen", "127.0.0.1:0", "--tls", "self-signed")
	base := "https://" + d.addr
	logs.mu.Lock()
	text := logs.b.String()
	logs.mu.Unlock()
	var pin string
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		var rec struct {
			Msg  string `json:"msg"`
			Hash string `json:"ca_cert_hash"`
		}
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Hash != "" {
			pin = rec.Hash
		}
	}
	if _, err := capin.ParseHash(pin); err != nil {
		t.Fatalf("no CA fingerprint logged (%v):\n%s", err, text)
	}
	if strings.Contains(text, "PLAIN HTTP") {
		t.Errorf("warned about plain HTTP while serving TLS:\n%s", text)
	}

	hc, err := capin.Client(capin.Trust{Pin: pin}, base, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Get(base + "/healthz")
	if err != nil {
		t.Fatalf("GET /healthz pinning the logged fingerprint: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
		t.Errorf("GET /healthz: %d over %s, want 200 over HTTP/2", resp.StatusCode, resp.Proto)
	}

	reg, err := registration.NewClient(base, capin.Trust{Pin: pin})
	if err != nil {
		t.Fatal(err)
	}
	hb := connect.NewRequest(&hostagentv1.HeartbeatRequest{})
	hb.Header().Set("Authorization", "Bearer wrh_"+strings.Repeat("0", 64))
	if _, err := reg.Heartbeat(context.Background(), hb); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Errorf("registry over TLS with an unknown credential: %v, want unauthenticated", err)
	}

	wrong, _ := capin.Client(capin.Trust{Pin: "sha256:" + strings.Repeat("0", 64)}, base, 10*time.Second)
	if resp, err := wrong.Get(base + "/healthz"); err == nil {
		resp.Body.Close()
		t.Error("a client pinning another CA got in")
	}
	if resp, err := http.Get("http://" + strings.TrimPrefix(base, "https://") + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("plain HTTP answered on the TLS port")
		}
	}

	d.stop(t)
}

// Plain HTTP on every interface is allowed but loud; the CA fingerprint is
// logged in every mode (tokens carry it).
func TestRunWarnsPlainHTTPBeyondLoopback(t *testing.T) {
	_, dsn := pgtest.NewWithDSN(t)
	t.Chdir(t.TempDir())
	logs := &lockedBuffer{b: &bytes.Buffer{}}
	d := startDaemon(t, dsn, slog.New(slog.NewJSONHandler(logs, nil)), "--listen", "0.0.0.0:0")
	d.stop(t)
	logs.mu.Lock()
	text := logs.b.String()
	logs.mu.Unlock()
	if !strings.Contains(text, `"level":"WARN","msg":"SERVING PLAIN HTTP ON 0.0.0.0:0, BEYOND LOOPBACK`) {
		t.Errorf("no loud warning for plain HTTP on every interface:\n%s", text)
	}
	if !strings.Contains(text, `"ca_cert_hash":"sha256:`) {
		t.Errorf("CA fingerprint not logged:\n%s", text)
	}
}

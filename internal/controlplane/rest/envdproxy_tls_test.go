package rest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/controlplane/servetls"
	"github.com/wrenn/wrenn/proto/envd/process/processconnect"
)

// writeWildcardCert writes a self-signed certificate for *.{domain} (as
// an operator would pass in WRENN_TLS_CERT/WRENN_TLS_KEY) and returns a
// pool that trusts it.
func writeWildcardCert(t *testing.T, domain, certFile, keyFile string) *x509.CertPool {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "*." + domain},
		DNSNames:              []string{"*." + domain},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool
}

// TestSandboxHostsOverTLS serves the API as wrenn-cp does with an
// operator's wildcard certificate: the SDK's https://49983-{id}.{domain}
// reaches envd over HTTP/2 (what Python's SDK negotiates), Connect
// streams included, and {port}-{id}.{domain} a user port.
func TestSandboxHostsOverTLS(t *testing.T) {
	env := newSandboxEnv(t)
	env.addHost(t)
	sb := env.create(t, map[string]any{})
	token := *sb.AccessToken

	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	pool := writeWildcardCert(t, "wrenn.test", certFile, keyFile)
	cfg, err := servetls.Config(servetls.Options{CertFile: certFile, KeyFile: keyFile}, nil, nil, nil)
	if err != nil {
		t.Fatalf("servetls: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: env.Server.Handler(), TLSConfig: cfg, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
	})

	// Every name resolves to the test server, as wildcard DNS would.
	dialer := &net.Dialer{}
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool},
		ForceAttemptHTTP2: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, ln.Addr().String())
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr}
	get := func(t *testing.T, rawURL string, hdr http.Header) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", rawURL, nil)
		req.Header = hdr
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", rawURL, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	tok := http.Header{"X-Access-Token": {token}}

	resp, _ := get(t, "https://49983-"+sb.Id+".wrenn.test/health", tok)
	if resp.StatusCode != http.StatusNoContent || resp.ProtoMajor != 2 {
		t.Errorf("envd over TLS: %d %s", resp.StatusCode, resp.Proto)
	}
	resp, body := get(t, "https://8080-"+sb.Id+".wrenn.test/x?y=1", tok)
	if resp.StatusCode != 200 || !strings.Contains(body, "GET /x?y=1") || !strings.Contains(body, "host=8080-"+sb.Id+".wrenn.test") {
		t.Errorf("user port over TLS: %d %s", resp.StatusCode, body)
	}
	resp, _ = get(t, "https://api.wrenn.test/healthz", nil)
	if resp.StatusCode != 200 {
		t.Errorf("the API on the same certificate: %d", resp.StatusCode)
	}

	hc := &http.Client{Transport: headerTransport{hdr: tok, rt: tr}}
	pc := processconnect.NewProcessClient(hc, "https://49983-"+sb.Id+".wrenn.test")
	if gap := streamGap(t, pc); gap < time.Second {
		t.Errorf("over HTTP/2 the stream ended %v after its first output: buffered", gap)
	}
}

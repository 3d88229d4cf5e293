package servetls_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/capin"
	"github.com/wrenn/wrenn/internal/controlplane/hostreg"
	"github.com/wrenn/wrenn/internal/controlplane/servetls"
)

// handshake serves one TLS connection with cfg and dials it with trust,
// returning the client's error.
func handshake(t *testing.T, cfg *tls.Config, trust capin.Trust) (*tls.ConnectionState, error) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			_ = c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	tc, err := capin.TLSConfig(trust, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.Dial("tcp", ln.Addr().String(), tc)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	st := c.ConnectionState()
	return &st, nil
}

func TestSelfSigned(t *testing.T) {
	ca, err := hostreg.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	clk := func() time.Time { return now }
	cfg, err := servetls.Config(servetls.Options{Mode: servetls.ModeSelfSigned, Names: servetls.DefaultNames("cp.example.com", ":8000")}, ca, clk, nil)
	if err != nil || cfg == nil {
		t.Fatalf("config: %v %v", cfg, err)
	}
	st, err := handshake(t, cfg, capin.Trust{Pin: ca.Fingerprint()})
	if err != nil {
		t.Fatalf("a client pinning the cluster CA: %v", err)
	}
	leaf := st.PeerCertificates[0]
	for _, n := range []string{"cp.example.com", "localhost", "127.0.0.1", "::1"} {
		if err := leaf.VerifyHostname(n); err != nil {
			t.Errorf("serving certificate: %v", err)
		}
	}
	if _, err := handshake(t, cfg, capin.Trust{CAPEM: ca.CertPEM()}); err != nil {
		t.Errorf("a client holding the CA certificate: %v", err)
	}
	if _, err := handshake(t, cfg, capin.Trust{}); err == nil {
		t.Error("a client trusting only the system roots accepted the self-signed certificate")
	}
	other, _ := hostreg.NewCA(time.Now())
	if _, err := handshake(t, cfg, capin.Trust{Pin: other.Fingerprint()}); err == nil {
		t.Error("a client pinning another CA accepted the certificate")
	}

	first, _ := cfg.GetCertificate(nil)
	now = now.Add(hostreg.ServingCertTTL / 2)
	if c, _ := cfg.GetCertificate(nil); c != first {
		t.Error("re-issued before two thirds of the lifetime")
	}
	now = now.Add(hostreg.ServingCertTTL / 4)
	if c, _ := cfg.GetCertificate(nil); c == first {
		t.Error("not re-issued after two thirds of the lifetime")
	}
}

func TestPlainByDefault(t *testing.T) {
	cfg, err := servetls.Config(servetls.Options{}, nil, nil, nil)
	if err != nil || cfg != nil {
		t.Errorf("no TLS options: %v %v, want plain HTTP (nil config)", cfg, err)
	}
}

// writePair writes a certificate for 127.0.0.1 signed by a throwaway CA,
// returning the CA's PEM.
func writePair(t *testing.T, certFile, keyFile string) []byte {
	t.Helper()
	ca, err := hostreg.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c, err := ca.IssueServing([]string{"127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]})
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return ca.CertPEM()
}

func TestCertificateFiles(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	caPEM := writePair(t, certFile, keyFile)
	now := time.Now()
	clk := func() time.Time { return now }
	cfg, err := servetls.Config(servetls.Options{CertFile: certFile, KeyFile: keyFile}, nil, clk, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := handshake(t, cfg, capin.Trust{CAPEM: caPEM}); err != nil {
		t.Fatalf("serving the files: %v", err)
	}

	// Renewed on disk: picked up without a restart.
	newCA := writePair(t, certFile, keyFile)
	later := time.Now().Add(time.Hour)
	_ = os.Chtimes(certFile, later, later)
	now = now.Add(2 * time.Minute)
	if _, err := handshake(t, cfg, capin.Trust{CAPEM: newCA}); err != nil {
		t.Errorf("after the files changed: %v", err)
	}

	// A broken pair on disk keeps the previous one in force.
	if err := os.WriteFile(keyFile, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	later = later.Add(time.Hour)
	_ = os.Chtimes(keyFile, later, later)
	now = now.Add(2 * time.Minute)
	if _, err := handshake(t, cfg, capin.Trust{CAPEM: newCA}); err != nil {
		t.Errorf("after a broken key was written: %v", err)
	}

	if _, err := servetls.Config(servetls.Options{CertFile: certFile, KeyFile: filepath.Join(dir, "missing")}, nil, nil, nil); err == nil ||
		!strings.Contains(err.Error(), "WRENN_TLS_KEY") {
		t.Errorf("missing key file: %v, want an error naming WRENN_TLS_KEY", err)
	}
}

func TestWarnings(t *testing.T) {
	plain := servetls.Options{}
	self := servetls.Options{Mode: servetls.ModeSelfSigned}
	for _, c := range []struct {
		o      servetls.Options
		url    string
		listen string
		want   string
	}{
		{plain, "http://127.0.0.1:8000", "127.0.0.1:8000", ""},
		{plain, "http://localhost:8000", "localhost:8000", ""},
		{plain, "http://[::1]:8000", "[::1]:8000", ""},
		{plain, "http://cp:8000", ":8000", "PLAIN HTTP"},
		{plain, "http://cp:8000", "0.0.0.0:8000", "PLAIN HTTP"},
		{plain, "http://10.0.0.5:8000", "10.0.0.5:8000", "PLAIN HTTP"},
		{self, "https://cp:8000", ":8000", ""},
		{self, "http://cp:8000", ":8000", "WRENN_CP_URL"},
	} {
		w := strings.Join(servetls.Warnings(c.o, c.url, c.listen), "\n")
		if (c.want == "") != (w == "") || !strings.Contains(w, c.want) {
			t.Errorf("%+v %s %s: warnings %q, want %q", c.o, c.url, c.listen, w, c.want)
		}
	}
}

func TestDefaultNames(t *testing.T) {
	got := servetls.Options{}.WithDefaultNames("https://CP.example.com:8443", "10.0.0.5:8443").Names
	want := []string{"cp.example.com", "10.0.0.5", "localhost", "127.0.0.1", "::1"}
	if !slices.Equal(got, want) {
		t.Errorf("names %q, want %q", got, want)
	}
	if got := servetls.DefaultNames("", ":8000"); !slices.Equal(got, []string{"localhost", "127.0.0.1", "::1"}) {
		t.Errorf("names for :8000: %q", got)
	}
	given := servetls.Options{Names: []string{"a.example"}}.WithDefaultNames("https://b.example", ":1").Names
	if !slices.Equal(given, []string{"a.example"}) {
		t.Errorf("WRENN_TLS_NAMES overridden: %q", given)
	}
}

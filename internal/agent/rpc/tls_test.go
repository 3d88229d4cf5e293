package rpc_test

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"testing"

	"github.com/wrenn/wrenn/internal/agent/registration/cptest"
	"github.com/wrenn/wrenn/internal/agent/rpc"
)

// swappableCerts is a CertSource whose certificate and CA can change, as
// on renewal.
type swappableCerts struct {
	mu   sync.Mutex
	cert *tls.Certificate
	pool *x509.CertPool
}

func (s *swappableCerts) set(cert *tls.Certificate, pool *x509.CertPool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cert, s.pool = cert, pool
}

func (s *swappableCerts) Certificate() *tls.Certificate {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cert
}

func (s *swappableCerts) ClientCAs() *x509.CertPool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pool
}

func serverCert(t *testing.T, ca *cptest.CA, cn string) *tls.Certificate {
	t.Helper()
	certPEM, keyPEM := ca.ServerCert(t, cn)
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &c
}

// serveTLS serves a handler answering "ok" with ServerTLSConfig(src).
func serveTLS(t *testing.T, src rpc.CertSource) string {
	t.Helper()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.Proto) })
	srv := rpc.NewServer(h, rpc.ServerTLSConfig(src), slog.New(slog.DiscardHandler))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })
	return "https://" + ln.Addr().String()
}

// get makes one request on a fresh connection and returns the protocol
// the server saw and the serving certificate's CommonName.
func get(url string, conf *tls.Config) (proto, serverCN string, err error) {
	tr := &http.Transport{TLSClientConfig: conf, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	res, err := (&http.Client{Transport: tr}).Get(url)
	if err != nil {
		return "", "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return "", "", err
	}
	return string(b), res.TLS.PeerCertificates[0].Subject.CommonName, nil
}

func TestServerTLSConfig(t *testing.T) {
	ca := cptest.NewCA(t, "control plane CA")
	other := cptest.NewCA(t, "another CA")
	src := &swappableCerts{}
	src.set(serverCert(t, ca, "host-1"), ca.Pool())
	url := serveTLS(t, src)

	withCert := func(c tls.Certificate) *tls.Config {
		return &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{c}}
	}
	// A certificate for the right name but for server auth only.
	srvPEM, srvKey := ca.ServerCert(t, rpc.ControlPlaneCN)
	serverOnly, err := tls.X509KeyPair(srvPEM, srvKey)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		conf *tls.Config
		ok   bool
	}{
		{name: "control plane", conf: ca.ClientTLS(t, rpc.ControlPlaneCN), ok: true},
		{name: "no client certificate", conf: &tls.Config{RootCAs: ca.Pool()}},
		{name: "another CommonName from the same CA", conf: ca.ClientTLS(t, "host-2")},
		{name: "CommonName differing in case", conf: ca.ClientTLS(t, "Wrenn-Control-Plane")},
		{name: "right CommonName from another CA", conf: withCert(other.ClientCert(t, rpc.ControlPlaneCN))},
		{name: "right CommonName without client auth usage", conf: withCert(serverOnly)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			proto, cn, err := get(url, tt.conf)
			if tt.ok {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if proto != "HTTP/2.0" || cn != "host-1" {
					t.Errorf("proto %s, server CN %s; want HTTP/2.0 from host-1", proto, cn)
				}
				return
			}
			if err == nil {
				t.Fatal("admitted")
			}
		})
	}

	t.Run("renewal takes effect on the next connection", func(t *testing.T) {
		// The CA rotates too: the old client certificate must no longer
		// pass, the new CA's must, and the new serving certificate shows.
		src.set(serverCert(t, other, "host-1-renewed"), other.Pool())
		if _, _, err := get(url, &tls.Config{RootCAs: other.Pool(), Certificates: ca.ClientTLS(t, rpc.ControlPlaneCN).Certificates}); err == nil {
			t.Error("a client of the old CA is still admitted")
		}
		_, cn, err := get(url, other.ClientTLS(t, rpc.ControlPlaneCN))
		if err != nil || cn != "host-1-renewed" {
			t.Errorf("after renewal: CN %q, %v", cn, err)
		}
	})

	t.Run("no certificate yet", func(t *testing.T) {
		src.set(nil, nil)
		if _, _, err := get(url, other.ClientTLS(t, rpc.ControlPlaneCN)); err == nil {
			t.Error("served without a certificate")
		}
	})
}

package rpc

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"
)

// ControlPlaneCN is the Subject CommonName of the control plane's client
// certificate; the agent admits no other client, even one its CA signed
// (the CA also signs every agent's certificate).
const ControlPlaneCN = "wrenn-control-plane"

// CertSource gives the agent's current serving certificate and the CA its
// clients must chain to. Both change when the credentials are renewed, and
// each new TLS handshake sees the change.
type CertSource interface {
	// Certificate is the serving certificate with its private key; nil
	// when there is none.
	Certificate() *tls.Certificate
	// ClientCAs is the control plane's CA; nil when there is none.
	ClientCAs() *x509.CertPool
}

// alpn offers HTTP/2 for Connect calls and HTTP/1.1 for WebSocket
// upgrades, which HTTP/2 clients send over HTTP/1.1.
var alpn = []string{"h2", "http/1.1"}

// ServerTLSConfig is the agent listener's TLS: its certificate from src,
// client certificates required, chained to src's CA for client auth, and
// with CommonName ControlPlaneCN. It is built per handshake so a renewal
// takes effect without a restart.
func ServerTLSConfig(src CertSource) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: alpn,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			cert, pool := src.Certificate(), src.ClientCAs()
			if cert == nil || pool == nil {
				return nil, errors.New("agent has no certificate: not registered")
			}
			return &tls.Config{
				MinVersion:   tls.VersionTLS12,
				NextProtos:   alpn,
				Certificates: []tls.Certificate{*cert},
				ClientAuth:   tls.RequireAndVerifyClientCert,
				ClientCAs:    pool,
				// A resumed session would skip checking the client against
				// the current CA; handshakes are rare (the control plane
				// keeps its HTTP/2 connections), so resumption buys nothing.
				SessionTicketsDisabled: true,
				VerifyConnection:       verifyControlPlane,
			}, nil
		},
	}
}

// verifyControlPlane runs after the chain is verified (ClientCAs, client
// auth usage) and admits only the control plane's identity.
func verifyControlPlane(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("no client certificate")
	}
	if cn := cs.PeerCertificates[0].Subject.CommonName; cn != ControlPlaneCN {
		return fmt.Errorf("client certificate CN %q: only %q may call the agent", cn, ControlPlaneCN)
	}
	return nil
}

// NewServer returns the agent's HTTP server for h: TLS from tlsConf,
// HTTP/2 and HTTP/1.1, and no read or write deadline on bodies, which
// would cut long streams and WebSockets. Serve it with
// srv.ServeTLS(ln, "", "").
func NewServer(h http.Handler, tlsConf *tls.Config, log *slog.Logger) *http.Server {
	srv := &http.Server{
		Handler:           h,
		TLSConfig:         tlsConf,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       5 * time.Minute,
		// A failed handshake (a caller without the control plane's
		// certificate) is worth a debug line, not an error per probe.
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetHTTP2(true)
	return srv
}

// Package servetls decides how wrenn-cp serves its API: plain HTTP (the
// default, meant for the loopback one-box stack or behind a TLS-terminating
// proxy), HTTPS with the operator's certificate files (WRENN_TLS_CERT and
// WRENN_TLS_KEY, re-read when they change on disk), or HTTPS with a
// certificate the replica issues itself from the cluster CA
// (WRENN_TLS=self-signed) for WRENN_TLS_NAMES.
//
// In the self-signed mode the chain carries the CA after the leaf: an
// agent holding only the CA's fingerprint (from its registration token)
// finds the CA in the handshake, checks its fingerprint and verifies the
// leaf against it before sending anything (internal/capin).
package servetls

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/wrenn/wrenn/internal/controlplane/hostreg"
)

// Modes of WRENN_TLS.
const (
	// ModeOff is plain HTTP (unless certificate files are given).
	ModeOff = ""
	// ModeSelfSigned issues the serving certificate from the cluster CA.
	ModeSelfSigned = "self-signed"
)

// Options is the TLS part of wrenn-cp's configuration.
type Options struct {
	// Mode is WRENN_TLS: ModeOff or ModeSelfSigned.
	Mode string
	// CertFile and KeyFile are WRENN_TLS_CERT and WRENN_TLS_KEY (PEM).
	CertFile, KeyFile string
	// Names are WRENN_TLS_NAMES: the DNS names and IP addresses the
	// self-signed serving certificate is valid for.
	Names []string
}

// Enabled reports whether the API is served over TLS.
func (o Options) Enabled() bool { return o.Mode == ModeSelfSigned || o.CertFile != "" }

// DefaultNames are the names a self-signed serving certificate carries
// when WRENN_TLS_NAMES is empty: the public URL's host, the listen
// address's host when it is a specific one, localhost and the loopback
// addresses.
func DefaultNames(publicHost, listenAddr string) []string {
	var names []string
	add := func(n string) {
		n = strings.Trim(strings.ToLower(n), "[]")
		if n != "" && !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	add(publicHost)
	if h, _, err := net.SplitHostPort(listenAddr); err == nil {
		if ip := net.ParseIP(h); h != "" && (ip == nil || !ip.IsUnspecified()) {
			add(h)
		}
	}
	add("localhost")
	add("127.0.0.1")
	add("::1")
	return names
}

// Config returns the server's TLS configuration, or nil for plain HTTP.
// It fails when the certificate files cannot be loaded or the CA cannot
// issue, so a misconfiguration stops start-up rather than the first
// handshake.
func Config(o Options, ca *hostreg.CA, clk func() time.Time, log *slog.Logger) (*tls.Config, error) {
	if clk == nil {
		clk = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var get func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	switch {
	case o.CertFile != "":
		f := &fileCert{certFile: o.CertFile, keyFile: o.KeyFile, clk: clk, log: log}
		if err := f.load(); err != nil {
			return nil, err
		}
		get = f.get
	case o.Mode == ModeSelfSigned:
		s := &selfSigned{ca: ca, names: o.Names, clk: clk}
		if _, err := s.get(nil); err != nil {
			return nil, err
		}
		get = s.get
	default:
		return nil, nil
	}
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"h2", "http/1.1"},
		GetCertificate: get,
	}, nil
}

// selfSigned issues the serving certificate from the cluster CA and again
// once two thirds of its lifetime have passed.
type selfSigned struct {
	ca    *hostreg.CA
	names []string
	clk   func() time.Time

	mu      sync.Mutex
	cur     *tls.Certificate
	renewAt time.Time
}

func (s *selfSigned) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clk()
	if s.cur != nil && now.Before(s.renewAt) {
		return s.cur, nil
	}
	if s.ca == nil {
		return nil, errors.New("WRENN_TLS=self-signed: no cluster CA")
	}
	c, err := s.ca.IssueServing(s.names, now)
	if err != nil {
		return nil, err
	}
	s.cur, s.renewAt = c, now.Add(hostreg.ServingCertTTL*2/3)
	return c, nil
}

// fileCert serves the operator's certificate files and re-reads them when
// their modification time changes (checked at most every recheck), so a
// renewed certificate (certbot, cert-manager) is picked up without a
// restart. A pair that fails to load leaves the previous one in force.
type fileCert struct {
	certFile, keyFile string
	clk               func() time.Time
	log               *slog.Logger

	mu        sync.Mutex
	cur       *tls.Certificate
	modCert   time.Time
	modKey    time.Time
	checkedAt time.Time
}

const recheck = time.Minute

func (f *fileCert) load() error {
	cs, err := os.Stat(f.certFile)
	if err != nil {
		return fmt.Errorf("WRENN_TLS_CERT: %w", err)
	}
	ks, err := os.Stat(f.keyFile)
	if err != nil {
		return fmt.Errorf("WRENN_TLS_KEY: %w", err)
	}
	c, err := tls.LoadX509KeyPair(f.certFile, f.keyFile)
	if err != nil {
		return fmt.Errorf("load WRENN_TLS_CERT %s and WRENN_TLS_KEY %s: %w", f.certFile, f.keyFile, err)
	}
	f.cur, f.modCert, f.modKey = &c, cs.ModTime(), ks.ModTime()
	return nil
}

func (f *fileCert) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.clk()
	if now.Sub(f.checkedAt) < recheck {
		return f.cur, nil
	}
	f.checkedAt = now
	cs, cerr := os.Stat(f.certFile)
	ks, kerr := os.Stat(f.keyFile)
	if cerr != nil || kerr != nil || (cs.ModTime().Equal(f.modCert) && ks.ModTime().Equal(f.modKey)) {
		return f.cur, nil
	}
	old := f.cur
	if err := f.load(); err != nil {
		f.cur = old
		f.log.Warn("TLS certificate files changed but do not load; still serving the previous certificate", "err", err)
		return old, nil
	}
	f.log.Info("TLS certificate files reloaded", "cert", f.certFile)
	return f.cur, nil
}

// IsLoopback reports whether a listen address (host:port) accepts
// connections from the loopback interface only. An empty or unspecified
// host listens on every interface; a DNS name other than localhost may
// resolve anywhere.
func IsLoopback(listenAddr string) bool {
	h, _, err := net.SplitHostPort(listenAddr)
	if err != nil {
		return false
	}
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// WithDefaultNames fills Names, when empty, with DefaultNames for the
// public URL (WRENN_CP_URL) and the listen address.
func (o Options) WithDefaultNames(publicURL, listenAddr string) Options {
	if len(o.Names) > 0 {
		return o
	}
	host := ""
	if u, err := url.Parse(publicURL); err == nil {
		host = u.Hostname()
	}
	o.Names = DefaultNames(host, listenAddr)
	return o
}

// Warnings are what an operator should hear at start-up about how the API
// is served: plain HTTP beyond loopback (registration tokens, API keys and
// passwords travel in clear text, and an agent registering over it trusts
// the CA it is sent unless its token carries a pin), or a public URL
// whose scheme disagrees with the listener.
func Warnings(o Options, publicURL, listenAddr string) []string {
	var w []string
	https := strings.HasPrefix(strings.ToLower(publicURL), "https://")
	if !o.Enabled() && !IsLoopback(listenAddr) {
		w = append(w, fmt.Sprintf("SERVING PLAIN HTTP ON %s, BEYOND LOOPBACK: API keys, passwords and host registration tokens cross the network unencrypted. "+
			"Set WRENN_TLS=self-signed or WRENN_TLS_CERT/WRENN_TLS_KEY, or listen on 127.0.0.1 behind a TLS-terminating proxy", listenAddr))
	}
	if o.Enabled() && !https {
		w = append(w, fmt.Sprintf("serving HTTPS but WRENN_CP_URL is %s: agents and clients given that URL will speak plain HTTP to a TLS port", publicURL))
	}
	return w
}

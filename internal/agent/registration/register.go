// Package registration gives the host agent its identity at the control
// plane and keeps it: registration with a one-time token (a key made and
// kept on the host, a CSR signed by the control plane's CA, a long-lived
// host token), the credential files under WRENN_DIR, heartbeats, renewal
// before expiry, and letting go when the control plane has deleted the
// host.
package registration

import (
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/wrenn/wrenn/internal/capin"
	"github.com/wrenn/wrenn/internal/errdefs"
	hostagentv1 "github.com/wrenn/wrenn/proto/hostagent/v1"
	"github.com/wrenn/wrenn/proto/hostagent/v1/hostagentv1connect"
)

// requestTimeout bounds one call to the control plane.
const requestTimeout = 30 * time.Second

// NewClient returns a HostRegistryService client for the control plane at
// baseURL (like https://cp.example.com or http://127.0.0.1:8000). Over
// HTTPS the server must present a certificate that verifies against the
// system roots plus trust.CAPEM (the CA saved at registration), or against
// the CA in its chain whose fingerprint is trust.Pin (registration with a
// pinned token); otherwise the handshake fails before anything is sent.
func NewClient(baseURL string, trust capin.Trust) (hostagentv1connect.HostRegistryServiceClient, error) {
	hc := &http.Client{Timeout: requestTimeout}
	if isHTTPS(baseURL) {
		var err error
		if hc, err = capin.Client(trust, baseURL, requestTimeout); err != nil {
			return nil, fmt.Errorf("control plane TLS: %w", err)
		}
	}
	return hostagentv1connect.NewHostRegistryServiceClient(hc, baseURL), nil
}

func isHTTPS(u string) bool { return strings.HasPrefix(strings.ToLower(u), "https://") }

// isLoopbackURL reports whether u names this machine (the one-box stack),
// where plain HTTP crosses no network.
func isLoopbackURL(u string) bool {
	p, err := url.Parse(u)
	if err != nil {
		return false
	}
	h := p.Hostname()
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// ClientFunc builds a registry client for a control plane URL and what to
// trust it by; tests substitute one bound to a fake.
type ClientFunc func(cpURL string, trust capin.Trust) (hostagentv1connect.HostRegistryServiceClient, error)

// StartConfig is what the agent starts with.
type StartConfig struct {
	Store *Store
	// Token, when set, registers (again): --register.
	Token string
	// Address and CPURL override the saved ones; required to register.
	Address string
	CPURL   string
	// Specs describes the host at registration.
	Specs *hostagentv1.HostSpecs
	// NewClient builds the registry client; NewClient when nil.
	NewClient ClientFunc
	Logger    *slog.Logger
}

// tokenSum is how a registration token is remembered (never in clear).
func tokenSum(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// Start decides the agent's credentials at start-up. With a token it
// registers and saves the result, replacing any earlier registration.
// Without one it loads the saved credentials; a changed control plane URL
// is saved, but a changed address is FailedPrecondition, because the
// certificate and the control plane's record name the old one (register
// again). Nothing saved and no token is errdefs.ErrNotFound.
func Start(ctx context.Context, cfg StartConfig) (Credentials, error) {
	if cfg.NewClient == nil {
		cfg.NewClient = NewClient
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Token != "" {
		if old, err := cfg.Store.Load(); err == nil && old.RegisteredWith == tokenSum(cfg.Token) &&
			(cfg.Address == "" || cfg.Address == old.Address) {
			// A restart with the token it registered with (still in the
			// unit's environment): the token is spent; the credentials
			// it bought are what to use.
			cfg.Logger.Info("registration token already used for the saved credentials: using them", "host_id", old.HostID)
			cfg.Token = ""
		}
	}
	if cfg.Token != "" {
		if cfg.Address == "" || cfg.CPURL == "" {
			// Fall back on what an earlier registration saved.
			if old, err := cfg.Store.Load(); err == nil {
				cfg.Address = cmp.Or(cfg.Address, old.Address)
				cfg.CPURL = cmp.Or(cfg.CPURL, old.CPURL)
			}
		}
		_, pin, err := capin.SplitToken(cfg.Token)
		if err != nil {
			return Credentials{}, errdefs.New(errdefs.ErrInvalidArgument, "%v", err)
		}
		if pin == "" {
			cfg.Logger.Warn("the registration token carries no CA fingerprint: the CA the control plane sends is trusted as received; " +
				"issue a new token from an up-to-date control plane (<secret>.<sha256 hex>) to pin it")
		}
		if !isHTTPS(cfg.CPURL) && !isLoopbackURL(cfg.CPURL) {
			cfg.Logger.Warn("registering over plain HTTP: the registration token and host credential cross the network unencrypted; serve the control plane over TLS (WRENN_TLS)",
				"cp_url", cfg.CPURL)
		}
		client, err := cfg.NewClient(cfg.CPURL, capin.Trust{Pin: pin})
		if err != nil {
			return Credentials{}, err
		}
		c, err := Register(ctx, client, RegisterRequest{Token: cfg.Token, Address: cfg.Address, CPURL: cfg.CPURL, Specs: cfg.Specs})
		if err != nil {
			return Credentials{}, err
		}
		c.RegisteredWith = tokenSum(cfg.Token)
		if err := cfg.Store.Save(c); err != nil {
			return Credentials{}, fmt.Errorf("save host credentials: %w", err)
		}
		cfg.Logger.Info("registered with the control plane", "host_id", c.HostID, "address", c.Address, "cp_url", c.CPURL, "certificate", describeCert(c))
		return c, nil
	}
	c, err := cfg.Store.Load()
	if err != nil {
		return Credentials{}, err
	}
	if cfg.Address != "" && cfg.Address != c.Address {
		return Credentials{}, errdefs.New(errdefs.ErrFailedPrecondition,
			"address %s differs from the registered %s: register again with --register <token> --address %s", cfg.Address, c.Address, cfg.Address)
	}
	if cfg.CPURL != "" && cfg.CPURL != c.CPURL {
		cfg.Logger.Info("control plane URL changed", "from", c.CPURL, "to", cfg.CPURL)
		c.CPURL = cfg.CPURL
		if err := cfg.Store.Save(c); err != nil {
			return Credentials{}, fmt.Errorf("save control plane URL: %w", err)
		}
	}
	return c, nil
}

// RegisterRequest is one registration.
type RegisterRequest struct {
	Token   string
	Address string
	CPURL   string
	Specs   *hostagentv1.HostSpecs
}

// Register makes a new host key, sends a CSR for it with the registration
// token, and returns the credentials the control plane issued (checked:
// the certificate is for this key, for server auth, and chains to the
// returned CA). It saves nothing.
//
// A token "<secret>.<sha256 hex>" pins the control plane's CA: only the
// secret is sent, and a returned CA with another fingerprint is refused
// (an error wrapping capin.ErrMismatch and errdefs.ErrPermissionDenied).
// Over HTTPS, client must also verify the server by the pin (NewClient
// with capin.Trust{Pin}), so that the secret never reaches an impostor.
func Register(ctx context.Context, client hostagentv1connect.HostRegistryServiceClient, req RegisterRequest) (Credentials, error) {
	if req.Token == "" || req.Address == "" || req.CPURL == "" {
		return Credentials{}, errdefs.New(errdefs.ErrInvalidArgument, "registration needs a token (--register), an address (--address) and a control plane URL (--cp-url)")
	}
	secret, pin, err := capin.SplitToken(req.Token)
	if err != nil {
		return Credentials{}, errdefs.New(errdefs.ErrInvalidArgument, "%v", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Credentials{}, fmt.Errorf("generate host key: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return Credentials{}, fmt.Errorf("encode host key: %w", err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	csr, err := CSR(keyPEM, req.Address)
	if err != nil {
		return Credentials{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	res, err := client.Register(ctx, connect.NewRequest(&hostagentv1.RegisterRequest{
		RegistrationToken: secret, Address: req.Address, Specs: req.Specs, CsrPem: csr,
	}))
	if err != nil {
		if errors.Is(err, capin.ErrMismatch) {
			return Credentials{}, fmt.Errorf("register at %s: refused to send the registration token (%w): %w", req.CPURL, errdefs.ErrPermissionDenied, err)
		}
		var unknown x509.UnknownAuthorityError
		if errors.As(err, &unknown) {
			return Credentials{}, fmt.Errorf("register at %s: the control plane's certificate is not trusted by this machine; "+
				"register with a token that carries the CA fingerprint (<secret>.<sha256 hex>, issued by an up-to-date control plane): %w", req.CPURL, errdefs.FromConnect(err))
		}
		return Credentials{}, fmt.Errorf("register at %s: %w", req.CPURL, errdefs.FromConnect(err))
	}
	if pin != "" {
		if err := capin.Check(res.Msg.GetCaPem(), pin); err != nil {
			return Credentials{}, fmt.Errorf("register at %s: refusing the control plane's answer (%w): %w", req.CPURL, errdefs.ErrPermissionDenied, err)
		}
	}
	c := Credentials{
		HostID: res.Msg.GetHostId(), Token: res.Msg.GetHostToken(),
		KeyPEM: keyPEM, CertPEM: res.Msg.GetCertificatePem(), CAPEM: res.Msg.GetCaPem(),
		Address: req.Address, CPURL: req.CPURL,
	}
	if ms := res.Msg.GetHostTokenExpiresAtUnixMs(); ms > 0 {
		c.TokenExpiresAt = time.UnixMilli(ms)
	}
	if c.HostID == "" {
		return Credentials{}, errors.New("register: the control plane returned no host id")
	}
	if _, err := parse(c); err != nil {
		return Credentials{}, fmt.Errorf("register: the control plane's answer: %w", err)
	}
	return c, nil
}

// CSR returns a PEM certificate signing request for the PEM key, naming
// the host of address (an IP or a DNS name) as its subject alternative
// name. The control plane sets the certificate's CommonName (the host id).
func CSR(keyPEM []byte, address string) ([]byte, error) {
	host, _, err := net.SplitHostPort(address)
	if err != nil || host == "" {
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "address %q: want host:port", address)
	}
	block, _ := pem.Decode(keyPEM)
	if block == nil {
		return nil, errors.New("host key: no PEM block")
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("host key: %w", err)
	}
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: "wrenn-agent " + host}}
	if ip := net.ParseIP(host); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, fmt.Errorf("create CSR: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

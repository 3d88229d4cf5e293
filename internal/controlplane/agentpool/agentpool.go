// Package agentpool reaches the host agents from the control plane: one
// mutually authenticated HTTP/2 client per host, keyed by the host's
// current address in the database.
//
// The control plane trusts only the cluster CA and accepts only the
// certificate issued to the host it means to reach (CN = host id, a SAN
// matching the address it dials), so a host cannot answer for another.
package agentpool

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/wrenn/wrenn/internal/controlplane/hostaddr"
	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/rpclimit"
	"github.com/wrenn/wrenn/internal/store"
	"github.com/wrenn/wrenn/proto/hostagent/v1/hostagentv1connect"
)

// Identity is the control plane's TLS identity towards agents
// (hostreg.ClientIdentity implements it).
type Identity interface {
	// GetClientCertificate fits tls.Config.GetClientCertificate; it is
	// asked on every handshake so a renewed certificate is used at once.
	GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error)
	// Roots are the CAs agents' certificates must chain to.
	Roots() *x509.CertPool
}

// Timeouts of connection set-up; requests themselves have none here:
// callers bound each call with its context (creates and snapshots are long).
const (
	dialTimeout      = 10 * time.Second
	handshakeTimeout = 10 * time.Second
	// HTTP/2 pings find connections to hosts that vanished without a
	// FIN, instead of letting requests hang on them.
	pingAfterIdle = 30 * time.Second
	pingTimeout   = 15 * time.Second
)

// Bounds on what an agent may send back. A BYOC host is a tenant's own
// machine running whatever it likes as "wrenn-agent", so its replies are
// read under caps like a guest's (see internal/rpclimit); over a cap the
// call fails with resource_exhausted instead of growing the control plane.
const (
	// MaxAgentMessageBytes caps one reply of HostAgentService. The largest
	// honest ones are console logs (at most 1 MiB, agent.MaxConsoleTail)
	// and the lists of a full host's sandboxes or templates.
	MaxAgentMessageBytes = 8 << 20
	// MaxAgentListEntries caps the list entries of one reply, nested lists
	// included (sandboxes and their network rules, templates, images):
	// far more than one host holds.
	MaxAgentListEntries = 100_000
	// MaxResponseHeaderBytes caps the response headers of the agent and,
	// through its guest proxy, of a sandbox's own web servers (Go's default
	// is 10 MiB; common proxies allow 8-64 KiB).
	MaxResponseHeaderBytes = 256 << 10
)

// agentLimits is how RPC clients apply the bounds above.
var agentLimits = rpclimit.Limits{Peer: "host agent", MaxMessageBytes: MaxAgentMessageBytes, MaxRepeated: MaxAgentListEntries}

// Pool implements rest.Agents.
type Pool struct {
	q   *store.Queries
	id  Identity
	log *slog.Logger
	// dial is replaced in tests.
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// byocDial, when set, dials byoc hosts: it refuses internal addresses
	// (see internal/controlplane/hostaddr).
	byocDial func(ctx context.Context, network, addr string) (net.Conn, error)

	mu      sync.Mutex
	clients map[uuid.UUID]*client
}

type client struct {
	address string
	http    *http.Client
	rpc     hostagentv1connect.HostAgentServiceClient
}

// New returns a pool. log may be nil.
func New(db *pgxpool.Pool, id Identity, log *slog.Logger) *Pool {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
	return &Pool{q: store.New(db), id: id, log: log, dial: d.DialContext, clients: map[uuid.UUID]*client{}}
}

// RefusePrivateBYOC makes the pool refuse, at every dial, byoc hosts
// whose address is (or whose name resolves to) a loopback, private,
// link-local or other internal address: a tenant must not make the control
// plane reach the operator's network. wrenn-cp calls it unless
// WRENN_ALLOW_PRIVATE_HOST_ADDRESSES=true. Call it before the pool is used.
func (p *Pool) RefusePrivateBYOC() {
	d := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second, Control: hostaddr.Control}
	p.byocDial = d.DialContext
}

// RPC returns a Connect client for the agent on host hostID.
func (p *Pool) RPC(ctx context.Context, hostID string) (hostagentv1connect.HostAgentServiceClient, error) {
	c, err := p.get(ctx, hostID)
	if err != nil {
		return nil, err
	}
	return c.rpc, nil
}

// HTTP returns a client and the base URL (https://address) of the agent's
// guest proxy on host hostID.
func (p *Pool) HTTP(ctx context.Context, hostID string) (*http.Client, string, error) {
	c, err := p.get(ctx, hostID)
	if err != nil {
		return nil, "", err
	}
	return c.http, baseURL(c.address), nil
}

func baseURL(address string) string { return "https://" + address }

// get returns the host's client, making a new one when the host's address
// changed (it re-registered elsewhere).
func (p *Pool) get(ctx context.Context, hostID string) (*client, error) {
	id, err := uuid.Parse(hostID)
	if err != nil {
		return nil, errdefs.New(errdefs.ErrNotFound, "host %q not found", hostID)
	}
	h, err := p.q.GetHostAddress(ctx, id)
	if errors.Is(err, pgx.ErrNoRows) {
		p.forget(id)
		return nil, errdefs.New(errdefs.ErrUnavailable, "host %s unreachable: it no longer exists", id)
	}
	if err != nil {
		return nil, fmt.Errorf("look up host %s: %w", id, err)
	}
	switch h.Status {
	case "online":
	case "deleted":
		p.forget(id)
		return nil, errdefs.New(errdefs.ErrUnavailable, "host %s unreachable: it was deleted", id)
	default:
		return nil, errdefs.New(errdefs.ErrUnavailable, "host %s unreachable (status %s)", id, h.Status)
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.clients[id]; ok && c.address == h.Address {
		return c, nil
	}
	if old, ok := p.clients[id]; ok {
		p.log.Info("host address changed; new agent client", "host_id", id, "old", old.address, "new", h.Address)
		old.http.CloseIdleConnections()
	}
	c, err := p.newClient(id, h.Address, h.Type)
	if err != nil {
		return nil, err
	}
	p.clients[id] = c
	return c, nil
}

func (p *Pool) forget(id uuid.UUID) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.clients[id]; ok {
		c.http.CloseIdleConnections()
		delete(p.clients, id)
	}
}

// Close drops every idle connection.
func (p *Pool) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, c := range p.clients {
		c.http.CloseIdleConnections()
		delete(p.clients, id)
	}
}

func (p *Pool) newClient(id uuid.UUID, address, hostType string) (*client, error) {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return nil, errdefs.New(errdefs.ErrUnavailable, "host %s unreachable: bad address %q", id, address)
	}
	t := &http.Transport{
		DialContext:         p.dialFor(hostType),
		TLSClientConfig:     TLSConfig(p.id, id, host),
		TLSHandshakeTimeout: handshakeTimeout,
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     90 * time.Second,
		HTTP2:               &http.HTTP2Config{SendPingTimeout: pingAfterIdle, PingTimeout: pingTimeout},
		// The guest proxy passes a sandbox's own headers through.
		MaxResponseHeaderBytes: MaxResponseHeaderBytes,
	}
	hc := &http.Client{Transport: t}
	return &client{
		address: address,
		// The guest proxy's bodies are file downloads and streams: bounded
		// per message by envdclient, never in total. RPC replies share the
		// connections but are bounded whole.
		http: hc,
		rpc:  hostagentv1connect.NewHostAgentServiceClient(agentLimits.Doer(hc), baseURL(address), agentLimits.ClientOptions()...),
	}, nil
}

// dialFor checks, at every dial, the address a byoc host's name resolves
// to then: registration checked it too, but DNS may change since.
func (p *Pool) dialFor(hostType string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	if hostType == "byoc" && p.byocDial != nil {
		return p.byocDial
	}
	return p.dial
}

// TLSConfig is the client side of mTLS towards host hostID dialled at
// serverName (the host part of its address): the cluster CA only, the
// replica's client certificate, and a server certificate that names both
// the address (standard hostname verification) and the host id (its CN).
func TLSConfig(id Identity, hostID uuid.UUID, serverName string) *tls.Config {
	want := hostID.String()
	return &tls.Config{
		MinVersion:           tls.VersionTLS13,
		RootCAs:              id.Roots(),
		ServerName:           serverName,
		GetClientCertificate: id.GetClientCertificate,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("agent sent no certificate")
			}
			if cn := cs.PeerCertificates[0].Subject.CommonName; cn != want {
				return fmt.Errorf("agent certificate is for host %q, want %s", cn, want)
			}
			return nil
		},
	}
}

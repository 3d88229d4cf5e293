// Package portfwd makes servers that a sandbox's processes bind on loopback
// reachable on the guest's external address. It polls the kernel's table
// of listening TCP sockets and, for each port listened on only by loopback,
// opens a listener of its own on the forward addresses and proxies every
// connection to the loopback server. It replaces E2B's socat-per-port.
package portfwd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// Config configures a Forwarder.
type Config struct {
	// Addrs are the addresses forwards listen on, e.g. 169.254.0.21 in the
	// guest. Each must be a specific, non-wildcard address.
	Addrs []netip.Addr
	// Exclude lists ports never forwarded, such as envd's own.
	Exclude []uint16
	// Interval between scans of the socket table; default 500 ms.
	Interval time.Duration
	// DialTimeout bounds connecting to the loopback server; default 5 s.
	DialTimeout time.Duration
	// ProcRoot is where the net/tcp and net/tcp6 tables are read; default /proc.
	ProcRoot string
}

// Forwarder keeps the set of forwards in step with the listening sockets.
// Create it with New and run it with Run.
type Forwarder struct {
	cfg    Config
	logger *slog.Logger

	// Owned by Run's goroutine: what is forwarded, and ports whose
	// listener could not be opened (logged once, retried each scan).
	forwards map[uint16]*forward
	failed   map[uint16]bool

	// mu guards conns, which Run closes on shutdown.
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	// portsMu guards ports, a copy of the forwarded ports for Ports.
	portsMu sync.Mutex
	ports   []uint16

	wg sync.WaitGroup // accept loops and proxied connections
}

// forward is one forwarded port: a listener per forward address, all
// proxying to target.
type forward struct {
	target    netip.AddrPort
	listeners []net.Listener
}

// New validates cfg and returns a Forwarder.
func New(cfg Config, logger *slog.Logger) (*Forwarder, error) {
	if len(cfg.Addrs) == 0 {
		return nil, errors.New("port forwarding needs at least one forward address")
	}
	for _, a := range cfg.Addrs {
		if !a.IsValid() || a.IsUnspecified() {
			// A wildcard listener on port P cannot coexist with the
			// loopback server on P, and would catch loopback traffic too.
			return nil, fmt.Errorf("forward address %q must be a specific address", a)
		}
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 500 * time.Millisecond
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.ProcRoot == "" {
		cfg.ProcRoot = "/proc"
	}
	cfg.Addrs = slices.Clone(cfg.Addrs)
	for i, a := range cfg.Addrs {
		cfg.Addrs[i] = a.Unmap()
	}
	return &Forwarder{
		cfg:      cfg,
		logger:   logger,
		forwards: map[uint16]*forward{},
		failed:   map[uint16]bool{},
		conns:    map[net.Conn]struct{}{},
	}, nil
}

// Run scans immediately and then every Interval until ctx is done. It then
// closes every forward listener and proxied connection and returns once
// they are all gone. It always returns nil after ctx is done; scan errors
// are logged and retried, since a transient read failure must not stop
// forwarding.
func (f *Forwarder) Run(ctx context.Context) error {
	defer f.shutdown()
	t := time.NewTicker(f.cfg.Interval)
	defer t.Stop()
	for {
		f.sync(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Ports returns the ports currently forwarded, sorted.
func (f *Forwarder) Ports() []uint16 {
	f.portsMu.Lock()
	defer f.portsMu.Unlock()
	return slices.Clone(f.ports)
}

// sync reads the socket table once and opens and closes forwards to match.
func (f *Forwarder) sync(ctx context.Context) {
	socks, err := readListeners(f.cfg.ProcRoot)
	if err != nil {
		f.logger.Warn("scan listening sockets", "err", err)
		return
	}
	want := f.plan(socks)

	for port, fw := range f.forwards {
		if target, ok := want[port]; !ok || target != fw.target {
			f.close(port, fw)
		}
	}
	for port := range f.failed {
		if _, ok := want[port]; !ok {
			delete(f.failed, port)
		}
	}
	for port, target := range want {
		if _, ok := f.forwards[port]; ok {
			continue
		}
		if err := f.open(ctx, port, target); err != nil {
			if !f.failed[port] {
				f.logger.Warn("open port forward", "port", port, "err", err)
				f.failed[port] = true
			}
			continue
		}
		delete(f.failed, port)
	}

	ports := make([]uint16, 0, len(f.forwards))
	for p := range f.forwards {
		ports = append(ports, p)
	}
	slices.Sort(ports)
	f.portsMu.Lock()
	f.ports = ports
	f.portsMu.Unlock()
}

// plan decides which ports to forward and where to: a port is forwarded
// when some loopback address listens on it and neither a wildcard address
// nor a forward address does, except where that forward-address listener
// is our own.
func (f *Forwarder) plan(socks []netip.AddrPort) map[uint16]netip.AddrPort {
	type portState struct {
		target   netip.Addr
		wildcard bool
		taken    bool // a forward address is bound by someone else
	}
	ports := map[uint16]*portState{}
	for _, s := range socks {
		port := s.Port()
		if slices.Contains(f.cfg.Exclude, port) {
			continue
		}
		st := ports[port]
		if st == nil {
			st = &portState{}
			ports[port] = st
		}
		addr := s.Addr()
		switch {
		case addr.IsUnspecified():
			st.wildcard = true
		case slices.Contains(f.cfg.Addrs, addr):
			// Our own forward listeners show up here, and with forward
			// address 127.0.0.2 they are loopback too: never forward them.
			if _, ours := f.forwards[port]; !ours {
				st.taken = true
			}
		case addr.IsLoopback():
			st.target = preferTarget(st.target, addr)
		}
	}
	want := map[uint16]netip.AddrPort{}
	for port, st := range ports {
		if st.target.IsValid() && !st.wildcard && !st.taken {
			want[port] = netip.AddrPortFrom(st.target, port)
		}
	}
	return want
}

// preferTarget picks the loopback address to dial: 127.0.0.1 first, then
// ::1, then whichever was seen first, so the choice is stable across scans.
func preferTarget(cur, next netip.Addr) netip.Addr {
	rank := func(a netip.Addr) int {
		switch {
		case !a.IsValid():
			return 3
		case a == netip.AddrFrom4([4]byte{127, 0, 0, 1}):
			return 0
		case a == netip.IPv6Loopback():
			return 1
		}
		return 2
	}
	if rank(next) < rank(cur) {
		return next
	}
	return cur
}

// open starts forwarding port to target on every forward address.
func (f *Forwarder) open(ctx context.Context, port uint16, target netip.AddrPort) error {
	fw := &forward{target: target}
	var lc net.ListenConfig
	for _, a := range f.cfg.Addrs {
		ln, err := lc.Listen(ctx, "tcp", netip.AddrPortFrom(a, port).String())
		if err != nil {
			for _, l := range fw.listeners {
				_ = l.Close()
			}
			return fmt.Errorf("listen on %s port %d: %w", a, port, err)
		}
		fw.listeners = append(fw.listeners, ln)
	}
	f.forwards[port] = fw
	for _, ln := range fw.listeners {
		f.wg.Go(func() { f.accept(ctx, ln, target) })
	}
	f.logger.Info("port forward opened", "port", port, "target", target.String())
	return nil
}

// close stops accepting on a forward. Connections already proxied carry on
// until either side ends them, as they would with the server itself.
func (f *Forwarder) close(port uint16, fw *forward) {
	for _, ln := range fw.listeners {
		_ = ln.Close()
	}
	delete(f.forwards, port)
	f.logger.Info("port forward closed", "port", port)
}

// shutdown closes every forward and connection and waits for them.
func (f *Forwarder) shutdown() {
	for port, fw := range f.forwards {
		f.close(port, fw)
	}
	f.mu.Lock()
	for c := range f.conns {
		_ = c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
	f.portsMu.Lock()
	f.ports = nil
	f.portsMu.Unlock()
}

// accept serves one forward listener until it is closed.
func (f *Forwarder) accept(ctx context.Context, ln net.Listener, target netip.AddrPort) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off instead of
			// spinning, and keep serving once it passes.
			f.logger.Warn("accept forwarded connection", "addr", ln.Addr().String(), "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		f.wg.Go(func() { f.proxy(ctx, c, target) })
	}
}

// track registers c for closing on shutdown; it reports false when
// shutdown has already begun, in which case c is closed.
func (f *Forwarder) track(ctx context.Context, c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ctx.Err() != nil {
		_ = c.Close()
		return false
	}
	f.conns[c] = struct{}{}
	return true
}

func (f *Forwarder) untrack(c net.Conn) {
	f.mu.Lock()
	delete(f.conns, c)
	f.mu.Unlock()
	_ = c.Close()
}

package portfwd

import (
	"context"
	"io"
	"net"
	"net/netip"
	"sync"
)

// proxy connects an accepted connection to target and copies both ways
// until both directions have ended. An EOF in one direction is passed on as
// a half-close, so protocols that shut down writing and then read the
// reply keep working.
func (f *Forwarder) proxy(ctx context.Context, down net.Conn, target netip.AddrPort) {
	if !f.track(ctx, down) {
		return
	}
	defer f.untrack(down)

	d := net.Dialer{Timeout: f.cfg.DialTimeout}
	up, err := d.DialContext(ctx, "tcp", target.String())
	if err != nil {
		f.logger.Debug("dial forward target", "target", target.String(), "err", err)
		return
	}
	if !f.track(ctx, up) {
		return
	}
	defer f.untrack(up)

	var wg sync.WaitGroup
	wg.Go(func() { pipe(up, down) })
	pipe(down, up)
	wg.Wait()
}

// pipe copies src to dst. At EOF it half-closes dst; on an error it closes
// both, so the opposite direction stops too instead of waiting forever.
func pipe(dst, src net.Conn) {
	_, err := io.Copy(dst, src)
	if err == nil {
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			if cw.CloseWrite() == nil {
				return
			}
		}
	}
	_ = dst.Close()
	_ = src.Close()
}

package devstack

import (
	"context"
	"fmt"
	"path/filepath"
	"time"
)

// Names of the daemons the stack supervises, for PID and Restarts.
const (
	CP       = "wrenn-cp"
	Agent    = "wrenn-agent"
	Postgres = "postgresql" // the private cluster (none with Config.DatabaseURL)
)

// pgPollInterval is how often the private PostgreSQL is checked: pg_ctl
// runs it as a daemon of its own, not as our child, so there is no exit
// to wait for.
const pgPollInterval = time.Second

// daemon is one supervised child: how to start it again (same arguments
// and environment) and how to tell it serves again.
type daemon struct {
	name  string
	start func() (*child, error)
	// ready waits until c, started at start, is healthy; it fails when c
	// exits or the stack's ready timeout passes.
	ready func(ctx context.Context, c *child, start time.Time) error
}

// supervise starts one supervisor per daemon, and one for the private
// PostgreSQL cluster if there is one. They run until Close (or until one
// gives up), independent of ctx's cancellation: Up's context bounds
// starting the stack, not its life.
func (s *Stack) supervise(ctx context.Context, ds ...*daemon) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.stopSupervising = cancel
	run := func(f func(context.Context) error) {
		s.supervisors.Go(func() {
			if err := f(ctx); err != nil {
				s.failOnce.Do(func() {
					s.failErr = err
					close(s.failed)
				})
			}
		})
	}
	for _, d := range ds {
		run(func(ctx context.Context) error { return s.watch(ctx, d) })
	}
	if s.cluster != nil {
		run(s.watchPostgres)
	}
}

// crashes counts a daemon's recent crashes against the restart policy.
type crashes struct {
	p     RestartPolicy
	times []time.Time
}

// add records a crash now and returns how many fall within the window,
// whether that is too many, and how long to wait before the restart.
func (c *crashes) add(now time.Time) (n int, giveUp bool, delay time.Duration) {
	recent := c.times[:0]
	for _, t := range c.times {
		if now.Sub(t) < c.p.Window {
			recent = append(recent, t)
		}
	}
	c.times = append(recent, now)
	n = len(c.times)
	return n, n > c.p.MaxCrashes, min(c.p.Backoff<<(n-1), c.p.MaxBackoff)
}

func (s *Stack) countRestart(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.restarts[name]++
}

// current is the daemon's running child (nil for a name not started).
func (s *Stack) current(name string) *child {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch name {
	case CP:
		return s.cp
	case Agent:
		return s.agent
	}
	return nil
}

func (s *Stack) replace(name string, c *child) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch name {
	case CP:
		s.cp = c
	case Agent:
		s.agent = c
	}
}

// PID is the process id of daemon name (CP or Agent) as it runs now, or 0
// when the stack has none (no agent, or between a crash and its restart).
// Fault-injection tests kill it.
func (s *Stack) PID(name string) int {
	if name == Postgres {
		if s.cluster == nil {
			return 0
		}
		return s.cluster.PID()
	}
	c := s.current(name)
	if c == nil {
		return 0
	}
	select {
	case <-c.done:
		return 0
	default:
		return c.cmd.Process.Pid
	}
}

// Restarts is how many times daemon name was restarted and became healthy
// again since Up.
func (s *Stack) Restarts(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.restarts[name]
}

// watch restarts d each time it exits until ctx ends (Close), and returns
// an error when d crashed more than the policy allows within its window.
func (s *Stack) watch(ctx context.Context, d *daemon) error {
	crashed := crashes{p: s.cfg.Restart}
	for {
		c := s.current(d.name)
		select {
		case <-ctx.Done():
			return nil
		case <-c.done:
		}
		// Close cancels ctx before it stops any daemon, so an exit seen
		// here was not Close's doing, unless both happened at once.
		if ctx.Err() != nil {
			return nil
		}
		why := exitReason(c.err)
		for {
			n, giveUp, delay := crashed.add(time.Now())
			if giveUp {
				return fmt.Errorf("%s exited: %s; it crashed %d times within %s, giving up (see %s); last log lines:\n%s",
					d.name, why, n, s.cfg.Restart.Window, c.logPath, tailString(c.logPath, 2048))
			}
			s.step("%s exited: %s; restarting (attempt %d)", d.name, why, n)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(delay):
			}
			start := time.Now()
			nc, err := d.start()
			if err != nil {
				why = err.Error()
				continue
			}
			s.replace(d.name, nc)
			c = nc
			if err := d.ready(ctx, nc, start); err != nil {
				// Close stops nc itself (it is the current child).
				if ctx.Err() != nil {
					return nil
				}
				// Started but not serving (exited while we waited, or
				// hung): that counts as another crash.
				select {
				case <-nc.done:
					why = exitReason(nc.err)
				default:
					why = err.Error()
					if stopErr := nc.stop(10 * time.Second); stopErr != nil {
						why += "; " + stopErr.Error()
					}
				}
				continue
			}
			s.countRestart(d.name)
			s.step("%s is back (%s)", d.name, since(start))
			break
		}
	}
}

// watchPostgres starts the private cluster again when its server is gone,
// under the same policy as the daemons. The control plane keeps running
// meanwhile (its pool reconnects); requests that need the database fail
// until it is back.
func (s *Stack) watchPostgres(ctx context.Context) error {
	crashed := crashes{p: s.cfg.Restart}
	logPath := filepath.Join(s.cluster.Dir, "server.log")
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(pgPollInterval):
		}
		if s.cluster.PID() != 0 {
			continue
		}
		why := "its server is gone"
		for {
			n, giveUp, delay := crashed.add(time.Now())
			if giveUp {
				return fmt.Errorf("postgresql stopped: %s; it stopped %d times within %s, giving up (see %s); last log lines:\n%s",
					why, n, s.cfg.Restart.Window, logPath, tailString(logPath, 2048))
			}
			s.step("postgresql stopped (%s); restarting (attempt %d)", why, n)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(delay):
			}
			start := time.Now()
			sctx, cancel := context.WithTimeout(ctx, s.cfg.ReadyTimeout)
			err := s.cluster.Start(sctx)
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				why = err.Error()
				continue
			}
			s.countRestart(Postgres)
			s.step("postgresql is back (%s)", since(start))
			break
		}
	}
}

// exitReason says how a daemon ended, as exec reports it ("signal:
// killed", "exit status 1").
func exitReason(err error) string {
	if err == nil {
		// A daemon has no business exiting on its own, even cleanly.
		return "exit status 0"
	}
	return err.Error()
}

package devstack

import (
	"context"
	"fmt"
	"time"
)

// Names of the daemons the stack supervises, for PID and Restarts.
const (
	CP    = "wrenn-cp"
	Agent = "wrenn-agent"
)

// daemon is one supervised child: how to start it again (same arguments
// and environment) and how to tell it serves again.
type daemon struct {
	name  string
	start func() (*child, error)
	// ready waits until c, started at start, is healthy; it fails when c
	// exits or the stack's ready timeout passes.
	ready func(ctx context.Context, c *child, start time.Time) error
}

// supervise starts one supervisor per daemon. They run until Close (or
// until one gives up), independent of ctx's cancellation: Up's context
// bounds starting the stack, not its life.
func (s *Stack) supervise(ctx context.Context, ds ...*daemon) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.stopSupervising = cancel
	for _, d := range ds {
		s.supervisors.Go(func() {
			if err := s.watch(ctx, d); err != nil {
				s.failOnce.Do(func() {
					s.failErr = err
					close(s.failed)
				})
			}
		})
	}
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
	p := s.cfg.Restart
	var crashes []time.Time
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
			now := time.Now()
			recent := crashes[:0]
			for _, t := range crashes {
				if now.Sub(t) < p.Window {
					recent = append(recent, t)
				}
			}
			crashes = append(recent, now)
			if len(crashes) > p.MaxCrashes {
				return fmt.Errorf("%s exited: %s; it crashed %d times within %s, giving up (see %s); last log lines:\n%s",
					d.name, why, len(crashes), p.Window, c.logPath, tailString(c.logPath, 2048))
			}
			s.step("%s exited: %s; restarting (attempt %d)", d.name, why, len(crashes))
			delay := min(p.Backoff<<(len(crashes)-1), p.MaxBackoff)
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
			s.mu.Lock()
			s.restarts[d.name]++
			s.mu.Unlock()
			s.step("%s is back (%s)", d.name, since(start))
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

// Package vmmtest holds what every vmm.Driver is tested with: Run, a
// behavioural suite each driver passes, and Fake, an in-memory Driver for
// code that uses the contract (the agent) to test against.
package vmmtest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/vmm"
)

// Harness tells Run how to make drivers and specs.
type Harness struct {
	// NewDriver returns a driver; Attach is tested across two of them, as an
	// agent restart would see it.
	NewDriver func(t *testing.T) vmm.Driver
	// NewSpec returns a spec for a guest that keeps running until stopped,
	// with its own Dir (and memory file, if the driver needs one).
	NewSpec func(t *testing.T) vmm.Spec
	// Release lets go of a machine without stopping its VMM, as a dying
	// agent does, so another driver can Attach. Nil skips the Attach test.
	Release func(m vmm.Machine) error
	// Timeout bounds each subtest; 60s when zero.
	Timeout time.Duration
}

// Run checks the vmm.Driver contract.
func Run(t *testing.T, h Harness) {
	if h.Timeout == 0 {
		h.Timeout = 60 * time.Second
	}
	ctxFor := func(t *testing.T) context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), h.Timeout)
		t.Cleanup(cancel)
		return ctx
	}
	stopAtEnd := func(t *testing.T, m vmm.Machine) {
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := m.Stop(ctx); err != nil {
				t.Errorf("cleanup stop: %v", err)
			}
		})
	}

	t.Run("boot pause resume stop", func(t *testing.T) {
		ctx := ctxFor(t)
		d := h.NewDriver(t)
		if d.Name() == "" {
			t.Fatal("driver has no name")
		}
		m, err := d.Boot(ctx, h.NewSpec(t))
		if err != nil {
			t.Fatal(err)
		}
		stopAtEnd(t, m)
		if m.PID() <= 0 {
			t.Fatalf("pid %d", m.PID())
		}
		must(t, "pause", m.Pause(ctx))
		must(t, "resume", m.Resume(ctx))
		must(t, "stop", m.Stop(ctx))
		must(t, "wait after stop", m.Wait(ctx))
		must(t, "second stop", m.Stop(ctx))
	})

	t.Run("wait honours ctx", func(t *testing.T) {
		ctx := ctxFor(t)
		m, err := h.NewDriver(t).Boot(ctx, h.NewSpec(t))
		if err != nil {
			t.Fatal(err)
		}
		stopAtEnd(t, m)
		wctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		if err := m.Wait(wctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Wait on a running guest = %v, want DeadlineExceeded", err)
		}
	})

	t.Run("snapshot needs a paused guest", func(t *testing.T) {
		ctx := ctxFor(t)
		m, err := h.NewDriver(t).Boot(ctx, h.NewSpec(t))
		if err != nil {
			t.Fatal(err)
		}
		stopAtEnd(t, m)
		if err := m.Snapshot(ctx, t.TempDir()); !errors.Is(err, errdefs.ErrFailedPrecondition) {
			t.Fatalf("snapshot of a running guest = %v, want FailedPrecondition", err)
		}
	})

	t.Run("snapshot and restore", func(t *testing.T) {
		ctx := ctxFor(t)
		d := h.NewDriver(t)
		spec := h.NewSpec(t)
		m, err := d.Boot(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		stopAtEnd(t, m)
		must(t, "pause", m.Pause(ctx))
		snap := t.TempDir()
		must(t, "snapshot", m.Snapshot(ctx, snap))
		must(t, "stop", m.Stop(ctx))
		r, err := d.Restore(ctx, spec, snap)
		if err != nil {
			t.Fatal(err)
		}
		stopAtEnd(t, r)
		// Restore returns a running guest: pausing it must work.
		must(t, "pause restored", r.Pause(ctx))
		must(t, "resume restored", r.Resume(ctx))
	})

	t.Run("restore of a missing snapshot", func(t *testing.T) {
		ctx := ctxFor(t)
		if _, err := h.NewDriver(t).Restore(ctx, h.NewSpec(t), t.TempDir()); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("err = %v, want NotFound", err)
		}
	})

	t.Run("attach", func(t *testing.T) {
		ctx := ctxFor(t)
		spec := h.NewSpec(t)
		if _, err := h.NewDriver(t).Attach(ctx, spec); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("attach with nothing running = %v, want NotFound", err)
		}
		if h.Release == nil {
			t.Skip("harness cannot release a machine without stopping it")
		}
		m, err := h.NewDriver(t).Boot(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		must(t, "release", h.Release(m))
		d2 := h.NewDriver(t)
		a, err := d2.Attach(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		stopAtEnd(t, a)
		if a.PID() != m.PID() {
			t.Fatalf("attached pid %d, booted %d", a.PID(), m.PID())
		}
		must(t, "pause attached", a.Pause(ctx))
		must(t, "stop attached", a.Stop(ctx))
		must(t, "wait attached", a.Wait(ctx))
		if _, err := d2.Attach(ctx, spec); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("attach after stop = %v, want NotFound", err)
		}
	})
}

func must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

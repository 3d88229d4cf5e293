package vmmtest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/vmm"
)

// Fake is an in-memory vmm.Driver. Machines live in a FakeHost that several
// Fakes may share, so Attach after an "agent restart" finds them. No process
// runs; PIDs are made up. Snapshot writes a marker file so Restore can check
// the directory.
type Fake struct {
	Host *FakeHost

	mu   sync.Mutex
	fail map[string]error
}

// FakeHost is the fake's notion of running VMMs, keyed by Spec.Dir.
type FakeHost struct {
	mu       sync.Mutex
	nextPID  int
	machines map[string]*FakeMachine
}

// NewFake returns a Fake with a host of its own.
func NewFake() *Fake { return &Fake{Host: &FakeHost{machines: map[string]*FakeMachine{}}} }

// FailNext makes the next call of op ("boot", "restore", "attach") return err.
func (f *Fake) FailNext(op string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail == nil {
		f.fail = map[string]error{}
	}
	f.fail[op] = err
}

func (f *Fake) injected(op string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	err := f.fail[op]
	delete(f.fail, op)
	return err
}

var _ vmm.Driver = (*Fake)(nil)

// Name is "fake".
func (f *Fake) Name() string { return "fake" }

// Boot "starts" a running machine for spec.
func (f *Fake) Boot(ctx context.Context, spec vmm.Spec) (vmm.Machine, error) {
	if err := f.injected("boot"); err != nil {
		return nil, err
	}
	return f.Host.start(spec)
}

const fakeSnapshotFile = "fake-snapshot"

// Restore starts a machine from a directory Snapshot wrote.
func (f *Fake) Restore(ctx context.Context, spec vmm.Spec, dir string) (vmm.Machine, error) {
	if err := f.injected("restore"); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(dir, fakeSnapshotFile)); err != nil {
		return nil, errdefs.FromOS(fmt.Errorf("restore %s: %w", spec.ID, err))
	}
	return f.Host.start(spec)
}

// Attach returns the machine running for spec.Dir.
func (f *Fake) Attach(ctx context.Context, spec vmm.Spec) (vmm.Machine, error) {
	if err := f.injected("attach"); err != nil {
		return nil, err
	}
	f.Host.mu.Lock()
	defer f.Host.mu.Unlock()
	m := f.Host.machines[spec.Dir]
	if m == nil {
		return nil, errdefs.New(errdefs.ErrNotFound, "attach %s: no vmm runs", spec.ID)
	}
	return m, nil
}

func (h *FakeHost) start(spec vmm.Spec) (*FakeMachine, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.machines[spec.Dir] != nil {
		return nil, errdefs.New(errdefs.ErrAlreadyExists, "a vmm already runs for %s", spec.Dir)
	}
	h.nextPID++
	m := &FakeMachine{host: h, Spec: spec, pid: 10000 + h.nextPID, state: "running", exited: make(chan struct{})}
	h.machines[spec.Dir] = m
	return m, nil
}

// Running reports how many machines the host runs.
func (h *FakeHost) Running() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.machines)
}

// FakeMachine is a Fake's machine.
type FakeMachine struct {
	host *FakeHost
	Spec vmm.Spec
	pid  int

	mu     sync.Mutex
	state  string // "running", "paused", "stopped"
	exited chan struct{}
}

var _ vmm.Machine = (*FakeMachine)(nil)

// PID is a made-up pid.
func (m *FakeMachine) PID() int { return m.pid }

// Status is the machine's state.
func (m *FakeMachine) Status() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state
}

func (m *FakeMachine) transition(from, to, what string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.state == "stopped" {
		return errdefs.New(errdefs.ErrFailedPrecondition, "%s %s: vmm has exited", what, m.Spec.ID)
	}
	if from != "" && m.state != from {
		return errdefs.New(errdefs.ErrFailedPrecondition, "%s %s: guest is %s", what, m.Spec.ID, m.state)
	}
	m.state = to
	return nil
}

// Pause pauses a running or paused machine.
func (m *FakeMachine) Pause(ctx context.Context) error { return m.transition("", "paused", "pause") }

// Resume continues a machine.
func (m *FakeMachine) Resume(ctx context.Context) error { return m.transition("", "running", "resume") }

// Snapshot writes a marker into dir; the guest must be paused.
func (m *FakeMachine) Snapshot(ctx context.Context, dir string) error {
	if err := m.transition("paused", "paused", "snapshot"); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("snapshot %s: %w", m.Spec.ID, err)
	}
	if err := os.WriteFile(filepath.Join(dir, fakeSnapshotFile), []byte(m.Spec.ID), 0o600); err != nil {
		return fmt.Errorf("snapshot %s: %w", m.Spec.ID, err)
	}
	return nil
}

// Stop ends the machine; stopping a stopped machine succeeds.
func (m *FakeMachine) Stop(ctx context.Context) error {
	m.mu.Lock()
	if m.state != "stopped" {
		m.state = "stopped"
		close(m.exited)
	}
	m.mu.Unlock()
	m.host.mu.Lock()
	if m.host.machines[m.Spec.Dir] == m {
		delete(m.host.machines, m.Spec.Dir)
	}
	m.host.mu.Unlock()
	return nil
}

// Wait blocks until Stop.
func (m *FakeMachine) Wait(ctx context.Context) error {
	select {
	case <-m.exited:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait %s: %w", m.Spec.ID, ctx.Err())
	}
}

// Close lets go of the machine; the fake VMM keeps running, as a real one
// does, and Attach finds it again.
func (m *FakeMachine) Close() error { return nil }

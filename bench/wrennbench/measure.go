package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/wrenn/wrenn/internal/agent"
	"github.com/wrenn/wrenn/internal/cgroup"
	"github.com/wrenn/wrenn/internal/vmm/qemu"
)

// measurement is one pluggable piece of the report: it takes its figures
// and adds them to the report, each carrying its own error or skip reason,
// so that one broken piece never hides the others. What several need (the
// in-process agent, a running source sandbox, the template snapshot) is
// made on first use by whichever runs first.
type measurement struct {
	name  string
	about string
	run   func(ctx context.Context, b *bench)
}

// measurements is every figure of the report, in the order they run:
// baselines first, so that they see the quietest machine.
func measurements() []measurement {
	return []measurement{
		{"bare-qemu", "baselines: bare QEMU cold boot, QMP stop/cont, restore to first answer", func(ctx context.Context, b *bench) { b.bareQEMU(ctx) }},
		{"runsc", "baseline: gVisor `runsc do /bin/true`", func(ctx context.Context, b *bench) { b.runsc(ctx) }},
		{"cold", "Wrenn cold create (boot) → first exec", func(ctx context.Context, b *bench) { b.cold(ctx) }},
		{"create", "Wrenn create from a template snapshot → first exec", func(ctx context.Context, b *bench) { b.createFromTemplate(ctx) }},
		{"pause", "Wrenn pause and resume of a running sandbox", func(ctx context.Context, b *bench) { b.pauseResume(ctx) }},
		{"hibernate", "Wrenn hibernate and resume from hibernation", func(ctx context.Context, b *bench) { b.hibernate(ctx) }},
		{"fork", "Wrenn fork ×1 and ×N of a running sandbox → all answer exec", func(ctx context.Context, b *bench) { b.forks(ctx) }},
		{"exec", "exec `true` round trip: envd direct, through the agent", func(ctx context.Context, b *bench) { b.execs(ctx) }},
		{"files", "file upload and download through envd, 1 MiB and large", func(ctx context.Context, b *bench) { b.files(ctx) }},
		{"templates", "template build cold and cached; create from a warm template → first answer of its server", func(ctx context.Context, b *bench) { b.templates(ctx) }},
		{"concurrent", "concurrent creates from one template → all ready; memory of the idle ones", func(ctx context.Context, b *bench) { b.concurrent(ctx) }},
		{"density", "idle sandboxes until a PSS budget: count and PSS per sandbox", func(ctx context.Context, b *bench) { b.density(ctx) }},
		{"stack", "control plane (wrenn-cp + wrenn-agent): REST figures, E2B SDK through the compat layer, request rates", func(ctx context.Context, b *bench) { b.stack(ctx) }},
	}
}

// templateName is the template snapshot the Wrenn figures restore from.
// It lives in the benchmark's own WRENN_DIR.
const templateName = "wrennbench"

// bench carries what the measurements share.
type bench struct {
	w        *world
	cfg      Config
	rep      *Report
	progress func(string, ...any)

	// m is the in-process agent, mErr why it could not be made.
	m    *agent.Manager
	mErr error
	// src is the running sandbox the template, pause, fork, exec and file
	// figures use; srcErr why it could not be made.
	src    string
	srcErr error
	// tplDone says the template snapshot exists; tplErr why it does not.
	tplDone bool
	tplErr  error

	// end, when set by a sample, is where its phases end: what follows
	// (destroying what the sample made) is off the clock.
	end int
}

// add puts figures in the report under group.
func (b *bench) add(group string, fs ...*Figure) {
	for _, f := range fs {
		b.rep.add(f.in(group))
	}
}

// manager is the in-process agent, made on first use the way the agent's
// test harness makes one, in the benchmark's own corner of the host.
func (b *bench) manager(ctx context.Context) (*agent.Manager, error) {
	if b.m != nil || b.mErr != nil {
		return b.m, b.mErr
	}
	b.mErr = func() error {
		cg, err := cgroup.Detect("", b.w.cgroup)
		if err != nil {
			return err
		}
		m, err := agent.New(agent.Config{
			Dir:          b.w.dir,
			Driver:       qemu.New(qemu.Config{Accel: b.w.accel.Accel, Logger: b.w.log}),
			Network:      b.w.pool,
			Cgroups:      cg,
			Logger:       b.w.log,
			MemoryDir:    b.w.memDir,
			ReadyTimeout: b.cfg.ReadyTimeout,
		})
		if err != nil {
			return err
		}
		b.w.onClose("wrenn sandboxes and template", func(ctx context.Context) error { return destroyAll(ctx, m) })
		if err := m.Recover(ctx); err != nil {
			return err
		}
		b.m = m
		return nil
	}()
	if b.mErr != nil {
		b.mErr = fmt.Errorf("in-process agent: %w", b.mErr)
	}
	return b.m, b.mErr
}

// source is the running sandbox, cold-booted on first use (off the clock:
// the cold figure times boots).
func (b *bench) source(ctx context.Context) (string, error) {
	if b.src != "" || b.srcErr != nil {
		return b.src, b.srcErr
	}
	m, err := b.manager(ctx)
	if err != nil {
		b.srcErr = err
		return "", err
	}
	info, err := m.Create(ctx, agent.CreateRequest{MemoryMB: b.cfg.MemoryMB, VCPUs: b.cfg.VCPUs, DiskMB: b.cfg.DiskMB, Timeout: time.Hour})
	if err == nil {
		err = execTrue(ctx, m, info.ID)
	}
	if err != nil {
		b.srcErr = fmt.Errorf("source sandbox: %w", err)
		return "", b.srcErr
	}
	b.src = info.ID
	return b.src, nil
}

// template snapshots the source sandbox as the template on first use and
// reports how long that took.
func (b *bench) template(ctx context.Context) error {
	if b.tplDone || b.tplErr != nil {
		return b.tplErr
	}
	f := &Figure{Key: "wrenn-template", Name: "Wrenn snapshot a running sandbox as a template"}
	defer func() { b.add(GroupWrenn, f) }()
	src, err := b.source(ctx)
	if err != nil {
		b.tplErr = err
		f.failed(err)
		return err
	}
	b.measure(ctx, f, 1, func(ctx context.Context) (time.Duration, error) {
		t := time.Now()
		err := b.m.SnapshotTemplate(ctx, src, templateName)
		return time.Since(t), err
	})
	if f.Error != "" {
		b.tplErr = errors.New(f.Error)
		return b.tplErr
	}
	b.tplDone = true
	if n, err := allocated(filepath.Join(b.w.dir, "images", templateName, "snapshot", "memory")); err == nil {
		f.note("template memory file holds %d MiB of %d", n>>20, b.cfg.MemoryMB)
	}
	return nil
}

// measure runs one figure's samples, collecting the phases logged while
// each ran, up to its call of stopClock if it makes one.
func (b *bench) measure(ctx context.Context, f *Figure, n int, sample func(ctx context.Context) (time.Duration, error)) *Figure {
	var d []time.Duration
	var ph []phase
	for range n {
		if ctx.Err() != nil {
			f.failed(errors.New("interrupted"))
			break
		}
		mark := b.w.phases.mark()
		b.end = -1
		x, err := sample(ctx)
		end := b.end
		if end < 0 {
			end = b.w.phases.mark()
		}
		ph = append(ph, b.w.phases.between(mark, end)...)
		if err != nil {
			f.failed(err)
			break
		}
		d = append(d, x)
	}
	r := durations(f.Key, f.Name, d)
	r.Error, r.Notes, r.Breakdown = f.Error, f.Notes, stepStats(ph)
	r.Group, r.Goal, r.GoalMax, r.GoalFactor, r.Baseline, r.Compare, r.Bytes = f.Group, f.Goal, f.GoalMax, f.GoalFactor, f.Baseline, f.Compare, f.Bytes
	*f = *r
	return f
}

// stopClock marks the end of a sample's phases.
func (b *bench) stopClock() { b.end = b.w.phases.mark() }

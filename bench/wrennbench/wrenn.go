package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/wrenn/wrenn/internal/agent"
	"github.com/wrenn/wrenn/internal/envdclient"
	"github.com/wrenn/wrenn/internal/errdefs"
)

// destroyParallelism bounds concurrent destroys between samples (off the
// clock), so that tearing down 20 VMMs does not starve the next sample.
const destroyParallelism = 4

// cold: Create that boots (no template snapshot) to the first exec of
// `true`; the sandbox is destroyed off the clock.
func (b *bench) cold(ctx context.Context) {
	f := (&Figure{Key: "cold", Name: fmt.Sprintf("Wrenn cold create (boot, %d MiB) → first exec `true`", b.cfg.MemoryMB)}).
		against("bare-boot", 0).also("runsc-true")
	defer func() { b.add(GroupWrenn, f) }()
	m, err := b.manager(ctx)
	if err != nil {
		f.failed(err)
		return
	}
	f.note("the baseline bare-boot ends at the first /health answer, this figure at the first exec's result")
	b.measure(ctx, f, b.cfg.BootSamples, func(ctx context.Context) (time.Duration, error) {
		t := time.Now()
		info, err := m.Create(ctx, agent.CreateRequest{MemoryMB: b.cfg.MemoryMB, VCPUs: b.cfg.VCPUs, DiskMB: b.cfg.DiskMB})
		if err != nil {
			return 0, err
		}
		created := time.Since(t)
		err = execTrue(ctx, m, info.ID)
		d := time.Since(t)
		b.w.phases.add("Create returned", created)
		b.w.phases.add("first exec `true`", d-created)
		b.stopClock()
		return d, errors.Join(err, m.Destroy(context.WithoutCancel(ctx), info.ID))
	})
}

// createFromTemplate: Create from the template snapshot, then the first
// exec of `true` through envd; the sandbox is destroyed off the clock.
func (b *bench) createFromTemplate(ctx context.Context) {
	f := (&Figure{Key: "create", Name: "Wrenn create from template snapshot → first exec `true`"}).
		against("bare-restore", 1.2).also("bare-restore-envd", "runsc-true")
	defer func() { b.add(GroupWrenn, f) }()
	if err := b.template(ctx); err != nil {
		f.failed(err)
		return
	}
	b.measure(ctx, f, b.cfg.Samples, func(ctx context.Context) (time.Duration, error) {
		t := time.Now()
		info, err := b.m.Create(ctx, agent.CreateRequest{Template: templateName})
		if err != nil {
			return 0, err
		}
		created := time.Since(t)
		cpu0 := pidCPU(info.PID)
		err = execTrue(ctx, b.m, info.ID)
		d := time.Since(t)
		cpu1 := pidCPU(info.PID)
		b.w.phases.add("Create returned", created)
		b.w.phases.add("first exec `true`", d-created)
		// The VMM's CPU time, read from /proc (10 ms ticks): what one
		// create costs the host, the unit of the concurrent figures.
		b.w.phases.add("VMM CPU time until Create returned", cpu0)
		b.w.phases.add("VMM CPU time during the first exec", cpu1-cpu0)
		if err == nil {
			t2 := time.Now()
			err = execTrue(ctx, b.m, info.ID)
			b.w.phases.add("second exec `true` (not in the figure)", time.Since(t2))
		}
		b.stopClock()
		return d, errors.Join(err, b.m.Destroy(context.WithoutCancel(ctx), info.ID))
	})
}

// pauseResume pauses and resumes the source sandbox; it answers an exec
// between samples, so every pause catches a running guest.
func (b *bench) pauseResume(ctx context.Context) {
	pause := (&Figure{Key: "pause", Name: fmt.Sprintf("Wrenn pause (%d MiB sandbox)", b.cfg.MemoryMB), Unit: "ms"}).
		atMost(20).against("bare-stop", 0)
	resume := &Figure{Key: "resume", Name: "Wrenn resume of a paused sandbox"}
	defer func() { b.add(GroupWrenn, pause, resume) }()
	src, err := b.source(ctx)
	if err != nil {
		pause.failed(err)
		resume.failed(err)
		return
	}
	var resumes []time.Duration
	var ph []phase
	b.measure(ctx, pause, b.cfg.Samples, func(ctx context.Context) (time.Duration, error) {
		t := time.Now()
		if err := b.m.Pause(ctx, src); err != nil {
			return 0, err
		}
		d := time.Since(t)
		b.stopClock()
		mark := b.w.phases.mark()
		t = time.Now()
		if err := b.m.Resume(ctx, src); err != nil {
			return d, err
		}
		resumes = append(resumes, time.Since(t))
		// What Resume does besides QMP cont: persist the sandbox record
		// (JSON, write, rename) in the sandbox directory.
		t = time.Now()
		if err := writeRename(b.w.dir, 1024); err != nil {
			return d, err
		}
		b.w.phases.add("write+rename of a 1 KiB file in the work dir (diagnostic)", time.Since(t))
		ph = append(ph, b.w.phases.since(mark)...)
		return d, execTrue(ctx, b.m, src)
	})
	r := durations(resume.Key, resume.Name, resumes)
	r.Breakdown = stepStats(ph)
	r.note("Resume returns when QMP cont has been answered and the new state recorded; the first exec after it is not timed")
	r.note("the issue's goal compares resume with a bare restore; bare-cont (QMP cont alone) is the like-for-like floor")
	*resume = *r.against("bare-restore", 1.2).also("bare-cont")
	if pause.Error != "" && resume.N == 0 {
		resume.Error = "stopped with pause: " + pause.Error
	}
}

// hibernate: Hibernate a paused sandbox (memory to disk, VMM, network and
// cgroup freed), then Resume it (restore into a new slot, envd answers and
// is re-initialised).
func (b *bench) hibernate(ctx context.Context) {
	hib := &Figure{Key: "hibernate", Name: "Wrenn hibernate (paused → on disk)"}
	unhib := &Figure{Key: "resume-hib", Name: "Wrenn resume from hibernation → envd ready"}
	defer func() { b.add(GroupWrenn, hib, unhib) }()
	src, err := b.source(ctx)
	if err != nil {
		hib.failed(err)
		unhib.failed(err)
		return
	}
	var resumes []time.Duration
	var ph []phase
	b.measure(ctx, hib, b.cfg.Samples, func(ctx context.Context) (time.Duration, error) {
		if err := b.m.Pause(ctx, src); err != nil {
			return 0, err
		}
		t := time.Now()
		if err := b.m.Hibernate(ctx, src); err != nil {
			return 0, err
		}
		d := time.Since(t)
		b.stopClock()
		mark := b.w.phases.mark()
		t = time.Now()
		if err := b.m.Resume(ctx, src); err != nil {
			return d, err
		}
		total := time.Since(t)
		resumes = append(resumes, total)
		got := b.w.phases.since(mark)
		ph = append(ph, got...)
		ph = append(ph, outsideSteps(got, "sandbox resumed from hibernation", total)...)
		return d, execTrue(ctx, b.m, src)
	})
	r := durations(unhib.Key, unhib.Name, resumes)
	r.Breakdown = stepStats(ph)
	r.note("the snapshot directory (memory file included) is on %s's disk, not tmpfs", b.w.dir)
	if hib.Error != "" {
		r.Error = "stopped with hibernate: " + hib.Error
	}
	*unhib = *r.against("bare-restore", 1.2)
}

// forks: Fork the running source sandbox once and n ways; the clock
// stops when every fork has answered an exec of `true`. The goal
// is for n = 10.
func (b *bench) forks(ctx context.Context) {
	for _, n := range []int{1, b.cfg.Forks} {
		f := &Figure{Key: fmt.Sprintf("fork%d", n), Name: fmt.Sprintf("Wrenn fork ×%d of a running sandbox → all answer exec", n)}
		if n == 10 {
			f.atMost(2000)
		} else if n > 1 {
			f.note("the goal (≤ 2 s) is for fork ×10; run the full mode or --forks 10 to judge it")
		}
		b.fork(ctx, f, n)
		b.add(GroupWrenn, f)
		if n == b.cfg.Forks {
			break // --forks 1
		}
	}
}

func (b *bench) fork(ctx context.Context, f *Figure, n int) {
	src, err := b.source(ctx)
	if err != nil {
		f.failed(err)
		return
	}
	b.measure(ctx, f, b.cfg.ForkSamples, func(ctx context.Context) (time.Duration, error) {
		srcPID := b.pid(ctx, src)
		cpu0, srcCPU0 := selfCPU(), pidCPU(srcPID)
		t := time.Now()
		infos, err := b.m.Fork(ctx, src, n)
		if err != nil {
			return 0, err
		}
		forked := time.Since(t)
		ids := make([]string, len(infos))
		pids := make([]int, len(infos))
		for i, in := range infos {
			ids[i], pids[i] = in.ID, in.PID
		}
		err = execAll(ctx, b.m, ids)
		d := time.Since(t)
		b.w.phases.add("Fork returned", forked)
		b.w.phases.add("execs after Fork", d-forked)
		b.cpuDemand(f, d, selfCPU()-cpu0, sumCPU(pids)+pidCPU(srcPID)-srcCPU0)
		b.stopClock()
		return d, errors.Join(err, destroyIDs(context.WithoutCancel(ctx), b.m, ids))
	})
}

// concurrent: for each count n, n creates from the template at once; the
// clock stops when the last one is ready. After the last sample of the
// largest count the sandboxes answer an exec, stay idle a moment, and the
// memory figure is read off their VMMs.
func (b *bench) concurrent(ctx context.Context) {
	largest := slices.Max(b.cfg.Concurrency)
	for _, n := range b.cfg.Concurrency {
		name := fmt.Sprintf("Wrenn %d concurrent creates from one template → all ready", n)
		if n == 1 {
			name = "Wrenn 1 create from the template → ready (the concurrent figures' unit)"
		}
		many := &Figure{Key: fmt.Sprintf("create-c%d", n), Name: name}
		if n == 20 {
			many.atMost(2000)
		} else if n > 1 {
			many.note("the goal (≤ 2 s) is for 20 concurrent creates; run the full mode to judge it")
		}
		var mem *Figure
		if n == largest {
			mem = (&Figure{Key: fmt.Sprintf("mem-c%d", n), Name: fmt.Sprintf("memory of %d idle sandboxes: Σ VMM PSS / (%d × guest RAM)", n, n), Unit: "%"}).atMost(40)
		}
		b.concurrentN(ctx, n, many, mem)
		b.add(GroupWrenn, many)
		if mem != nil {
			b.add(GroupWrenn, mem)
		}
	}
}

func (b *bench) concurrentN(ctx context.Context, n int, many, mem *Figure) {
	if err := b.template(ctx); err != nil {
		many.failed(err)
		if mem != nil {
			mem.failed(err)
		}
		return
	}
	var memNotes []string
	var memVals []float64
	samples := b.cfg.ConcurrentSamples
	i := 0
	b.measure(ctx, many, samples, func(ctx context.Context) (time.Duration, error) {
		i++
		ids := make([]string, n)
		each := make([]time.Duration, n)
		g, gctx := errgroup.WithContext(ctx)
		cpu0 := selfCPU()
		t := time.Now()
		for k := range n {
			g.Go(func() error {
				t := time.Now()
				info, err := b.m.Create(gctx, agent.CreateRequest{Template: templateName})
				ids[k], each[k] = info.ID, time.Since(t)
				return err
			})
		}
		err := g.Wait()
		d := time.Since(t)
		for _, e := range each {
			b.w.phases.add("one Create call", e)
		}
		var pids []int
		for _, id := range ids {
			if id != "" {
				pids = append(pids, b.pid(ctx, id))
			}
		}
		b.cpuDemand(many, d, selfCPU()-cpu0, sumCPU(pids))
		b.stopClock()
		if err == nil && i == samples && mem != nil {
			v, notes, merr := b.memory(ctx, ids)
			if merr != nil {
				mem.failed(merr)
			} else {
				memVals, memNotes = append(memVals, v), notes
			}
		}
		var live []string
		for _, id := range ids {
			if id != "" {
				live = append(live, id)
			}
		}
		return d, errors.Join(err, destroyIDs(context.WithoutCancel(ctx), b.m, live))
	})
	if mem == nil {
		return
	}
	r := values(mem.Key, mem.Name, "%", memVals)
	r.Error, r.Notes = mem.Error, memNotes
	if many.Error != "" && len(memVals) == 0 && r.Error == "" {
		r.Error = "see " + many.Key + ": " + many.Error
	}
	*mem = *r.atMost(40)
}

// memory reads the VMMs' proportional set size once the sandboxes have
// answered an exec and stayed idle for cfg.Settle. It returns Σ PSS as a
// percentage of n × guest RAM, and notes with what PSS leaves out.
func (b *bench) memory(ctx context.Context, ids []string) (float64, []string, error) {
	if err := execAll(ctx, b.m, ids); err != nil {
		return 0, nil, err
	}
	select {
	case <-ctx.Done():
		return 0, nil, ctx.Err()
	case <-time.After(b.cfg.Settle):
	}
	var pss, shmem, files int64
	for _, id := range ids {
		info, err := b.m.Get(ctx, id)
		if err != nil {
			return 0, nil, err
		}
		p, err := readPss(info.PID)
		if err != nil {
			return 0, nil, err
		}
		pss, shmem = pss+p.Total, shmem+p.Shmem
		n, err := allocated(filepath.Join(b.w.memDir, id+".mem"))
		if err != nil {
			return 0, nil, err
		}
		files += n
	}
	guest := int64(len(ids)) * int64(b.cfg.MemoryMB) << 20
	pct := func(x int64) float64 { return 100 * float64(x) / float64(guest) }
	notes := []string{
		fmt.Sprintf("Σ PSS %d MiB (%.1f%%) of %d MiB guest RAM, measured %s after every sandbox answered an exec; of it guest RAM pages mapped from the tmpfs files (Pss_Shmem) %d MiB, VMM's own memory %d MiB",
			pss>>20, pct(pss), guest>>20, b.cfg.Settle, shmem>>20, (pss-shmem)>>20),
		fmt.Sprintf("PSS counts only the pages a VMM has mapped: the guest RAM files in %s hold %d MiB (%.1f%%), the copy each create makes of the template's memory, mapped or not; host memory held = VMM own + RAM files = %d MiB (%.1f%%)",
			b.w.memDir, files>>20, pct(files), (pss-shmem+files)>>20, pct(pss-shmem+files)),
	}
	return pct(pss), notes, nil
}

// writeRename writes n bytes to a temporary file in dir and renames it
// over another, the way the agent persists a sandbox record.
func writeRename(dir string, n int) error {
	tmp := filepath.Join(dir, ".diag.tmp")
	if err := os.WriteFile(tmp, make([]byte, n), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, "diag"))
}

// outsideSteps derives, from the phases of one resume from hibernation,
// the time spent outside its plan steps. The agent logs its total from
// after it has opened (verified) the snapshot until after it has removed
// the used snapshot; the plan logs each step. So: Resume's wall time −
// logged total = opening the snapshot; logged total − Σ steps = removing it.
func outsideSteps(ps []phase, totalKey string, wall time.Duration) []phase {
	var steps, logged time.Duration
	for _, p := range ps {
		switch {
		case p.key == totalKey:
			logged = p.d
		case strings.HasPrefix(p.key, "step "):
			steps += p.d
		}
	}
	if logged == 0 {
		return nil
	}
	return []phase{
		{"before the plan: open + verify the snapshot (derived)", wall - logged},
		{"after the plan: remove the used snapshot (derived)", logged - steps},
	}
}

// cpuDemand notes how much CPU a sample used against what the host had
// in the same wall time: a sample near 100% is CPU-bound, so its time is
// set by the work every VMM does (TCG) divided by the cores, not by
// waiting on anything.
func (b *bench) cpuDemand(f *Figure, wall, agent, vmms time.Duration) {
	avail := wall * time.Duration(runtime.NumCPU())
	f.note("sample of %s: the VMMs used %.2f s CPU, this process (agent, incl. qemu-img children) %.2f s: %.0f%% of the %.2f s the %d cores had",
		wall.Round(time.Millisecond), vmms.Seconds(), agent.Seconds(), 100*(vmms+agent).Seconds()/avail.Seconds(), avail.Seconds(), runtime.NumCPU())
}

// pid is a sandbox's VMM pid, 0 when unknown.
func (b *bench) pid(ctx context.Context, id string) int {
	in, err := b.m.Get(ctx, id)
	if err != nil {
		return 0
	}
	return in.PID
}

// selfCPU is this process's CPU time, its reaped children's (qemu-img)
// included.
func selfCPU() time.Duration {
	var total time.Duration
	for _, who := range []int{unix.RUSAGE_SELF, unix.RUSAGE_CHILDREN} {
		var ru unix.Rusage
		if unix.Getrusage(who, &ru) == nil {
			total += time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		}
	}
	return total
}

// pidCPU is a process's CPU time so far, 0 when unreadable.
func pidCPU(pid int) time.Duration {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	return parseCPUTime(b)
}

func sumCPU(pids []int) time.Duration {
	var t time.Duration
	for _, p := range pids {
		t += pidCPU(p)
	}
	return t
}

// execTrue runs /bin/true in a sandbox through envd.
func execTrue(ctx context.Context, m *agent.Manager, id string) error {
	c, err := m.Envd(ctx, id)
	if err != nil {
		return err
	}
	res, err := c.Run(ctx, envdclient.RunRequest{Cmd: "/bin/true"})
	if err != nil {
		return fmt.Errorf("exec true in %s: %w", id, err)
	}
	if res.ExitCode != 0 {
		return fmt.Errorf("exec true in %s: %s", id, res.Status)
	}
	return nil
}

// execAll runs /bin/true in every sandbox at once.
func execAll(ctx context.Context, m *agent.Manager, ids []string) error {
	g, gctx := errgroup.WithContext(ctx)
	for _, id := range ids {
		g.Go(func() error { return execTrue(gctx, m, id) })
	}
	return g.Wait()
}

// destroyIDs destroys sandboxes, a few at a time.
func destroyIDs(ctx context.Context, m *agent.Manager, ids []string) error {
	var g errgroup.Group
	g.SetLimit(destroyParallelism)
	errs := make([]error, len(ids))
	for i, id := range ids {
		g.Go(func() error { errs[i] = m.Destroy(ctx, id); return nil })
	}
	_ = g.Wait()
	return errors.Join(errs...)
}

// destroyAll destroys every sandbox the manager has, then the template,
// then lets go of the manager.
func destroyAll(ctx context.Context, m *agent.Manager) error {
	list, err := m.List(ctx)
	if err != nil {
		return err
	}
	ids := make([]string, 0, len(list))
	for _, in := range list {
		ids = append(ids, in.ID)
	}
	errs := []error{destroyIDs(ctx, m, ids)}
	if err := m.DeleteTemplate(ctx, templateName); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		errs = append(errs, err)
	}
	errs = append(errs, m.Close())
	return errors.Join(errs...)
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/wrenn/wrenn/internal/envdclient"
	"github.com/wrenn/wrenn/internal/network"
	"github.com/wrenn/wrenn/internal/vmm"
	"github.com/wrenn/wrenn/internal/vmm/qemu"
)

// The baseline is QEMU alone: this program execs qemu-system-x86_64 with
// the argv the driver would build (qemu.Args: same machine, devices,
// seccomp filter and shared memory file as a Wrenn sandbox) and speaks
// QMP itself. No agent, plan, cgroup, VMM identity, disk or snapshot
// package is in the loop; the only Wrenn pieces are the argv builder, the
// QMP client and the network slot the guest answers in.

// guestKernelArgs are the agent's (internal/agent vmSpec), so the baseline
// guest boots the same init and envd.
const guestKernelArgs = "root=/dev/vda rw init=/usr/local/sbin/wrenn-init quiet wrenn.hostname="

// guestMAC is the agent's guest MAC (internal/agent vmSpec).
const guestMAC = "02:77:72:6e:00:01"

// bareVM is one QEMU process the baseline started.
type bareVM struct {
	cmd  *exec.Cmd
	qmp  *qemu.QMP
	done chan struct{} // closed when the process has been reaped
}

// bareQEMU adds the bare-QEMU baselines to the report.
func (b *bench) bareQEMU(ctx context.Context) {
	restore, stop, cont, info, err := b.w.baseline(ctx, b.cfg)
	if err != nil && restore.Error == "" {
		restore.failed(fmt.Errorf("baseline: %w", err))
	}
	b.add(GroupBaseline, restore, stop, cont)
	b.add(GroupBaseline, info...)
}

// baseline measures (a) restore-to-first-answer: copy the memory file,
// start QEMU on the saved state, continue, first envd /health 204; and (b)
// QMP stop and cont on a running guest. It returns the restore, stop and
// cont figures and the boot and snapshot times for information.
func (w *world) baseline(ctx context.Context, cfg Config) (restore, stop, cont *Figure, info []*Figure, err error) {
	restore = &Figure{Key: "bare-restore", Name: "bare QEMU restore → first /health 204", Unit: "ms"}
	stop = &Figure{Key: "bare-stop", Name: "bare QEMU pause (QMP stop)", Unit: "ms"}
	cont = &Figure{Key: "bare-cont", Name: "bare QEMU resume (QMP cont)", Unit: "ms"}

	slot, err := w.pool.Acquire(ctx)
	if err != nil {
		return restore, stop, cont, nil, err
	}
	w.onClose("baseline network slot", func(ctx context.Context) error { return w.pool.Release(ctx, slot) })
	if err := w.pool.Setup(ctx, slot, network.Policy{}); err != nil {
		return restore, stop, cont, nil, err
	}
	dir := filepath.Join(w.dir, "baseline")
	health := "http://" + net.JoinHostPort(slot.HostIP().String(), strconv.Itoa(envdclient.Port)) + "/health"
	spec := vmm.Spec{
		ID: "wrennbench-baseline", Dir: dir, Kernel: w.kernel.Path,
		KernelArgs: guestKernelArgs + "wrennbench-baseline",
		RootDisk:   vmm.Disk{Path: filepath.Join(dir, "rootfs.qcow2"), Format: "qcow2"},
		VCPUs:      cfg.VCPUs, MemoryMB: cfg.MemoryMB,
		MemoryFile: filepath.Join(w.memDir, "baseline.mem"),
		Net:        &vmm.NetDevice{TAP: network.TapName, MAC: guestMAC},
	}
	if err := qemuImg(ctx, "create", "-q", "-f", "qcow2", "-F", "raw", "-b", w.rootfs, spec.RootDisk.Path, strconv.Itoa(cfg.DiskMB)+"M"); err != nil {
		return restore, stop, cont, nil, err
	}
	if err := truncate(spec.MemoryFile, int64(cfg.MemoryMB)<<20); err != nil {
		return restore, stop, cont, nil, err
	}

	// Boot to the first answer, BootSamples times; the last guest stays
	// up for the stop/cont and snapshot figures. Each boot gets a fresh
	// overlay and memory file, as a sandbox would.
	args, err := qemu.Args(spec, w.accel.Accel, false)
	if err != nil {
		return restore, stop, cont, nil, err
	}
	var boots []time.Duration
	var vm *bareVM
	for i := range cfg.BootSamples {
		if i > 0 {
			if err := vm.quit(ctx); err != nil {
				return restore, stop, cont, nil, err
			}
			for _, p := range []string{spec.RootDisk.Path, spec.MemoryFile} {
				if err := os.Remove(p); err != nil {
					return restore, stop, cont, nil, err
				}
			}
			if err := qemuImg(ctx, "create", "-q", "-f", "qcow2", "-F", "raw", "-b", w.rootfs, spec.RootDisk.Path, strconv.Itoa(cfg.DiskMB)+"M"); err != nil {
				return restore, stop, cont, nil, err
			}
			if err := truncate(spec.MemoryFile, int64(cfg.MemoryMB)<<20); err != nil {
				return restore, stop, cont, nil, err
			}
		}
		t0 := time.Now()
		vm, err = w.startQEMU(ctx, args, slot.NetNSPath(), dir, spec.Dir)
		if err != nil {
			return restore, stop, cont, nil, err
		}
		if err := vm.qmp.Execute(ctx, "cont", nil, nil); err != nil {
			return restore, stop, cont, nil, err
		}
		if err := pollHealth(ctx, health, cfg.ReadyTimeout); err != nil {
			return restore, stop, cont, nil, fmt.Errorf("baseline boot: %w", err)
		}
		boots = append(boots, time.Since(t0))
	}
	info = append(info, durations("bare-boot", "bare QEMU cold boot → first /health 204", boots))

	// (b) stop and cont on the running guest; the guest answers between
	// samples, so each stop catches it running.
	var stops, conts []time.Duration
	for range cfg.Samples {
		t := time.Now()
		if err := vm.qmp.Execute(ctx, "stop", nil, nil); err != nil {
			return restore, stop, cont, info, err
		}
		stops = append(stops, time.Since(t))
		t = time.Now()
		if err := vm.qmp.Execute(ctx, "cont", nil, nil); err != nil {
			return restore, stop, cont, info, err
		}
		conts = append(conts, time.Since(t))
		if err := pollHealth(ctx, health, cfg.ReadyTimeout); err != nil {
			return restore, stop, cont, info, fmt.Errorf("guest after cont: %w", err)
		}
	}
	*stop = *durations(stop.Key, stop.Name, stops)
	*cont = *durations(cont.Key, cont.Name, conts)

	// Pause and save the device state; RAM stays in the memory file.
	t0 := time.Now()
	state := filepath.Join(dir, "vmstate")
	if err := snapshotBare(ctx, vm, state); err != nil {
		return restore, stop, cont, info, err
	}
	snap := durations("bare-snapshot", "bare QEMU stop + save device state", []time.Duration{time.Since(t0)})
	if st, err := os.Stat(state); err == nil {
		snap.note("device state %d KiB; memory file holds %d MiB of %d", st.Size()>>10, allocatedOrZero(spec.MemoryFile)>>20, cfg.MemoryMB)
	}
	info = append(info, snap)
	if err := vm.quit(ctx); err != nil {
		return restore, stop, cont, info, err
	}

	// (a) restore, N times, each from a fresh copy of the memory file and
	// a fresh overlay over the now frozen disk (made off the clock: a disk
	// is not part of "restore", and Wrenn's own disk step is in its figure).
	var restores []time.Duration
	mark := w.phases.mark()
	for i := range cfg.Samples {
		d, err := w.restoreBare(ctx, spec, state, slot.NetNSPath(), health, i, cfg, false)
		if err != nil {
			restore.failed(err)
			break
		}
		restores = append(restores, d)
	}
	r := durations(restore.Key, restore.Name, restores)
	r.Error = restore.Error
	r.Breakdown = stepStats(w.phases.since(mark))
	r.note("each sample: sparse copy of the memory file, qemu exec with -incoming defer, migrate-incoming from the saved state, cont, poll GET /health every 1 ms (100 ms connect timeout)")
	*restore = *r

	var viaEnvd []time.Duration
	mark = w.phases.mark()
	envdFig := &Figure{Key: "bare-restore-envd", Name: "bare QEMU restore → envd client WaitReady + Init + first exec `true`", Unit: "ms"}
	for i := range cfg.Samples {
		d, err := w.restoreBare(ctx, spec, state, slot.NetNSPath(), health, i, cfg, true)
		if err != nil {
			envdFig.failed(err)
			break
		}
		viaEnvd = append(viaEnvd, d)
	}
	e := durations(envdFig.Key, envdFig.Name, viaEnvd)
	e.Error, e.Breakdown = envdFig.Error, stepStats(w.phases.since(mark))
	if len(w.tbNotes) > 0 {
		e.note("TCG translation blocks added during the first/second exec, per sample (QMP info jit): %s", strings.Join(w.tbNotes, ", "))
	}
	e.note("diagnostic, no goal: the baseline restore, but the guest is reached through internal/envdclient as the agent reaches it; compare with the create figure to tell envd-protocol cost from agent cost")
	info = append(info, e)
	// The slot goes back now so the agent's pool can hand it out.
	return restore, stop, cont, info, w.pool.Release(ctx, slot)
}

// restoreBare is one baseline restore sample.
//
// With viaEnvd the guest is reached as the agent reaches it instead: the
// envd client's WaitReady (its backoff), then Init, then an exec of `true`.
// That variant is a diagnostic: it tells the cost of the envd protocol
// apart from the cost of the agent's orchestration.
func (w *world) restoreBare(ctx context.Context, spec vmm.Spec, state, nsPath, health string, i int, cfg Config, viaEnvd bool) (time.Duration, error) {
	frozen := spec.RootDisk.Path
	spec.RootDisk.Path = filepath.Join(spec.Dir, fmt.Sprintf("restore-%t-%d.qcow2", viaEnvd, i))
	spec.MemoryFile = filepath.Join(w.memDir, fmt.Sprintf("baseline-restore-%t-%d.mem", viaEnvd, i))
	defer os.Remove(spec.RootDisk.Path)
	defer os.Remove(spec.MemoryFile)
	if err := qemuImg(ctx, "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", frozen, spec.RootDisk.Path); err != nil {
		return 0, err
	}
	args, err := qemu.Args(spec, w.accel.Accel, true)
	if err != nil {
		return 0, err
	}
	stateFile, err := os.Open(state)
	if err != nil {
		return 0, err
	}
	defer stateFile.Close()

	t0 := time.Now()
	if err := copySparse(filepath.Join(w.memDir, "baseline.mem"), spec.MemoryFile); err != nil {
		return 0, err
	}
	t1 := time.Now()
	vm, err := w.startQEMU(ctx, args, nsPath, spec.Dir, spec.Dir)
	if err != nil {
		return 0, err
	}
	defer vm.quit(context.WithoutCancel(ctx))
	t2 := time.Now()
	ignoreShared := map[string]any{"capabilities": []map[string]any{{"capability": "x-ignore-shared", "state": true}}}
	if err := vm.qmp.Execute(ctx, "migrate-set-capabilities", ignoreShared, nil); err != nil {
		return 0, err
	}
	if err := vm.qmp.ExecuteWithFD(ctx, "getfd", map[string]string{"fdname": "state"}, nil, int(stateFile.Fd())); err != nil {
		return 0, err
	}
	if err := vm.qmp.Execute(ctx, "migrate-incoming", map[string]string{"uri": "fd:state"}, nil); err != nil {
		return 0, err
	}
	if err := waitStatus(ctx, vm.qmp, "paused"); err != nil {
		return 0, err
	}
	t3 := time.Now()
	if err := vm.qmp.Execute(ctx, "cont", nil, nil); err != nil {
		return 0, err
	}
	if viaEnvd {
		return w.envdAfterRestore(ctx, vm, strings.TrimSuffix(health, "/health"), t0, t3, cfg)
	}
	if err := pollHealth(ctx, health, cfg.ReadyTimeout); err != nil {
		return 0, fmt.Errorf("restored guest: %w", err)
	}
	t4 := time.Now()
	w.phases.add("copy memory file", t1.Sub(t0))
	w.phases.add("qemu exec → QMP greeting", t2.Sub(t1))
	w.phases.add("migrate-incoming → paused", t3.Sub(t2))
	w.phases.add("cont → first /health 204", t4.Sub(t3))
	return t4.Sub(t0), nil
}

// envdAfterRestore reaches a just continued guest through the envd
// client, as the agent does: WaitReady, Init, then exec `true`.
//
// Around each exec it also reads, QEMU-side, the CPU time QEMU used and the
// number of translation blocks TCG holds: a first exec that costs far
// more than the second is explained by one or the other.
func (w *world) envdAfterRestore(ctx context.Context, vm *bareVM, base string, t0, cont time.Time, cfg Config) (time.Duration, error) {
	c := envdclient.New(base, envdclient.WithUser("user"))
	defer c.CloseIdleConnections()
	rctx, cancel := context.WithTimeout(ctx, cfg.ReadyTimeout)
	defer cancel()
	if err := c.WaitReady(rctx); err != nil {
		return 0, err
	}
	t1 := time.Now()
	if err := c.Init(ctx, envdclient.InitRequest{AccessToken: "wrennbench-baseline-token", DefaultUser: "user"}); err != nil {
		return 0, err
	}
	cpu0, tb0 := vm.cpuTime(), vm.tbCount(ctx)
	t2 := time.Now()
	res, err := c.Run(ctx, envdclient.RunRequest{Cmd: "/bin/true"})
	if err != nil {
		return 0, err
	}
	if res.ExitCode != 0 {
		return 0, fmt.Errorf("exec true: %s", res.Status)
	}
	t3 := time.Now()
	cpu1, tb1 := vm.cpuTime(), vm.tbCount(ctx)
	if _, err := c.Run(ctx, envdclient.RunRequest{Cmd: "/bin/true"}); err != nil {
		return 0, err
	}
	t4 := time.Now()
	cpu2, tb2 := vm.cpuTime(), vm.tbCount(ctx)
	w.phases.add("QEMU CPU time during first exec", cpu1-cpu0)
	w.phases.add("QEMU CPU time during second exec", cpu2-cpu1)
	if tb0 >= 0 && tb1 >= 0 && tb2 >= 0 {
		w.tbNotes = append(w.tbNotes, fmt.Sprintf("%d/%d", tb1-tb0, tb2-tb1))
	}
	w.phases.add("cont → envdclient.WaitReady returned", t1.Sub(cont))
	w.phases.add("envd Init", t2.Sub(t1))
	w.phases.add("first exec `true`", t3.Sub(t2))
	w.phases.add("second exec `true` (not in the figure)", t4.Sub(t3))
	return t3.Sub(t0), nil
}

// startQEMU execs QEMU inside nsPath (a forked child inherits the network
// namespace of the OS thread that forks it) and connects QMP.
func (w *world) startQEMU(ctx context.Context, args []string, nsPath, logDir, sockDir string) (*bareVM, error) {
	logf, err := os.OpenFile(filepath.Join(logDir, "qemu.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(w.qemuBin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group: a ctrl-C on the terminal reaches the
	// benchmark, whose cleanup stops QEMU, not QEMU mid-measurement.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// The thread never unlocks: it exits with this goroutine, so no
		// other goroutine ever runs in the guest's namespace.
		ns, err := netns.GetFromPath(nsPath)
		if err != nil {
			errc <- fmt.Errorf("open netns %s: %w", nsPath, err)
			return
		}
		defer ns.Close()
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", nsPath, err)
			return
		}
		errc <- cmd.Start()
	}()
	if err := <-errc; err != nil {
		return nil, fmt.Errorf("start qemu: %w", err)
	}
	vm := &bareVM{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(vm.done) }()
	w.onClose("baseline qemu "+strconv.Itoa(cmd.Process.Pid), vm.kill)

	sock := filepath.Join(sockDir, qemu.QMPSocketName)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		q, err := qemu.DialQMP(ctx, sock)
		if err == nil {
			vm.qmp = q
			return vm, nil
		}
		select {
		case <-vm.done:
			return nil, fmt.Errorf("qemu exited at start (see %s)", filepath.Join(logDir, "qemu.log"))
		case <-ctx.Done():
			return nil, errors.Join(ctx.Err(), vm.kill(context.Background()))
		case <-tick.C:
		}
	}
}

// cpuTime is the CPU time (user+system) QEMU has used, from
// /proc/<pid>/stat, at clock-tick resolution; 0 if unreadable.
func (vm *bareVM) cpuTime() time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(vm.cmd.Process.Pid) + "/stat")
	if err != nil {
		return 0
	}
	return parseCPUTime(b)
}

// parseCPUTime takes utime and stime (fields 14 and 15) from a stat line;
// the command name (field 2) may hold spaces, so fields count from its
// closing parenthesis. Ticks are USER_HZ, 100 on Linux.
func parseCPUTime(stat []byte) time.Duration {
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	k, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return time.Duration(u+k) * 10 * time.Millisecond
}

// tbCount is the number of translation blocks TCG holds (HMP "info jit"),
// or -1 when QEMU does not say.
func (vm *bareVM) tbCount(ctx context.Context) int {
	var out string
	if err := vm.qmp.Execute(ctx, "human-monitor-command", map[string]string{"command-line": "info jit"}, &out); err != nil {
		return -1
	}
	return parseTBCount(out)
}

// parseTBCount finds "TB count <n>" in "info jit" output.
func parseTBCount(out string) int {
	for line := range strings.SplitSeq(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == "TB" && f[1] == "count" {
			if n, err := strconv.Atoi(f[2]); err == nil {
				return n
			}
		}
	}
	return -1
}

// quit asks QEMU to exit and waits; SIGKILL if it will not.
func (vm *bareVM) quit(ctx context.Context) error {
	if vm.qmp != nil {
		qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_ = vm.qmp.Execute(qctx, "quit", nil, nil)
		cancel()
		vm.qmp.Close()
	}
	select {
	case <-vm.done:
		return nil
	case <-time.After(5 * time.Second):
		return vm.kill(ctx)
	}
}

// kill ends QEMU if it still runs; a reaped QEMU is fine.
func (vm *bareVM) kill(context.Context) error {
	select {
	case <-vm.done:
		return nil
	default:
	}
	_ = vm.cmd.Process.Kill()
	select {
	case <-vm.done:
		return nil
	case <-time.After(5 * time.Second):
		return fmt.Errorf("qemu pid %d survived SIGKILL", vm.cmd.Process.Pid)
	}
}

// snapshotBare stops the guest and migrates its device state to path
// (RAM is skipped: it lives in the shared memory file, x-ignore-shared).
func snapshotBare(ctx context.Context, vm *bareVM, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	q := vm.qmp
	ignoreShared := map[string]any{"capabilities": []map[string]any{{"capability": "x-ignore-shared", "state": true}}}
	for _, c := range []struct {
		cmd  string
		args any
	}{
		{"stop", nil},
		{"migrate-set-capabilities", ignoreShared},
		{"migrate-set-parameters", map[string]any{"max-bandwidth": int64(1) << 40, "downtime-limit": 2000}},
	} {
		if err := q.Execute(ctx, c.cmd, c.args, nil); err != nil {
			return err
		}
	}
	if err := q.ExecuteWithFD(ctx, "getfd", map[string]string{"fdname": "state"}, nil, int(f.Fd())); err != nil {
		return err
	}
	if err := q.Execute(ctx, "migrate", map[string]string{"uri": "fd:state"}, nil); err != nil {
		return err
	}
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		var st struct {
			Status    string `json:"status"`
			ErrorDesc string `json:"error-desc"`
		}
		if err := q.Execute(ctx, "query-migrate", nil, &st); err != nil {
			return err
		}
		switch st.Status {
		case "completed":
			return f.Sync()
		case "failed", "cancelled":
			return fmt.Errorf("migration %s: %s", st.Status, st.ErrorDesc)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// waitStatus polls query-status until QEMU reports want.
func waitStatus(ctx context.Context, q *qemu.QMP, want string) error {
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		var st struct {
			Status string `json:"status"`
		}
		if err := q.Execute(ctx, "query-status", nil, &st); err != nil {
			return err
		}
		if st.Status == want {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("qemu status %q, want %q: %w", st.Status, want, ctx.Err())
		case <-tick.C:
		}
	}
}

// pollHealth polls envd's /health until it answers 204. Each attempt gives
// up after 100 ms so that a SYN the guest did not see yet is retried at
// once instead of after the kernel's 1 s retransmission.
func pollHealth(ctx context.Context, url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tr := &http.Transport{DisableKeepAlives: true, DialContext: (&net.Dialer{Timeout: 100 * time.Millisecond}).DialContext}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: time.Second}
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusNoContent {
				return nil
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w (last: %v)", url, ctx.Err(), last)
		case <-tick.C:
		}
	}
}

func qemuImg(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "qemu-img", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("qemu-img %v: %w: %s", args, err, out)
	}
	return nil
}

func truncate(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// copySparse copies src's data extents (SEEK_DATA/SEEK_HOLE) to a new dst
// of the same size with copy_file_range: the cheapest copy of a tmpfs
// memory file there is, as a baseline for Wrenn's.
func copySparse(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()
	if err := out.Truncate(st.Size()); err != nil {
		return err
	}
	for off := int64(0); off < st.Size(); {
		data, err := unix.Seek(int(in.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole remains
		}
		if err != nil {
			return fmt.Errorf("seek data: %w", err)
		}
		hole, err := unix.Seek(int(in.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("seek hole: %w", err)
		}
		for pos := data; pos < hole; {
			roff, woff := pos, pos
			n, err := unix.CopyFileRange(int(in.Fd()), &roff, int(out.Fd()), &woff, int(hole-pos), 0)
			if err != nil {
				return fmt.Errorf("copy_file_range: %w", err)
			}
			if n == 0 {
				return fmt.Errorf("copy_file_range: short copy at %d", pos)
			}
			pos += int64(n)
		}
		off = hole
	}
	return out.Close()
}

// allocatedOrZero is allocated for a note: 0 when unknown.
func allocatedOrZero(path string) int64 {
	n, _ := allocated(path)
	return n
}

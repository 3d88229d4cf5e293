package firecracker

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/vmm"
	"github.com/wrenn/wrenn/internal/vmm/firecracker/fctest"
)

func TestBootRequestSequence(t *testing.T) {
	for _, tc := range []struct {
		name  string
		net   bool
		calls []string
	}{
		{"with network", true, []string{
			"PUT /machine-config", "PUT /boot-source", "PUT /drives/rootfs",
			"PUT /network-interfaces/eth0", "PUT /actions",
		}},
		{"without network", false, []string{
			"PUT /machine-config", "PUT /boot-source", "PUT /drives/rootfs", "PUT /actions",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			spec := testSpec(t)
			if !tc.net {
				spec.Net = nil
			}
			spec.RootDisk.ReadOnly = true
			m, err := testDriver(t).Boot(ctx, spec)
			if err != nil {
				t.Fatal(err)
			}
			stopAtEnd(t, m)
			reqs := requests(t, spec.Dir)
			wantCalls(t, "boot", calls(reqs, 0), tc.calls...)
			for _, r := range reqs {
				if r.Status != 204 {
					t.Errorf("%s answered %d %s", r.Call(), r.Status, r.Fault)
				}
				if r.PID != m.PID() {
					t.Errorf("%s served by pid %d, machine pid %d", r.Call(), r.PID, m.PID())
				}
			}
			checkBody(t, reqs[0], map[string]any{"vcpu_count": 2.0, "mem_size_mib": 256.0, "smt": false, "track_dirty_pages": false})
			checkBody(t, reqs[1], map[string]any{
				"kernel_image_path": spec.Kernel,
				"boot_args":         "console=ttyS0 reboot=k panic=1 pci=off no_timer_check init=/sbin/wrenn-init",
			})
			checkBody(t, reqs[2], map[string]any{
				"drive_id": "rootfs", "path_on_host": spec.RootDisk.Path, "is_root_device": true, "is_read_only": true,
			})
			if tc.net {
				checkBody(t, reqs[3], map[string]any{"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "02:fc:00:00:00:01"})
			}
			checkBody(t, reqs[len(reqs)-1], map[string]any{"action_type": "InstanceStart"})

			// The process is the one the pid file names, started with our socket.
			b, err := os.ReadFile(filepath.Join(spec.Dir, PIDFileName))
			if err != nil || strings.TrimSpace(string(b)) != itoa(m.PID()) {
				t.Fatalf("pid file %q (%v), pid %d", b, err, m.PID())
			}
			if st, err := m.(*Machine).State(ctx); err != nil || st != fctest.StateRunning {
				t.Fatalf("state %q, %v; want Running", st, err)
			}
		})
	}
}

func TestLifecycleRequestSequences(t *testing.T) {
	ctx := testCtx(t)
	spec := testSpec(t)
	d := testDriver(t)
	m, err := d.Boot(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	stopAtEnd(t, m)
	mark := len(requests(t, spec.Dir))
	next := func() []string {
		reqs := requests(t, spec.Dir)
		c := calls(reqs, mark)
		mark = len(reqs)
		return c
	}

	must(t, "pause", m.Pause(ctx))
	wantCalls(t, "pause", next(), "PATCH /vm")
	must(t, "resume", m.Resume(ctx))
	wantCalls(t, "resume", next(), "PATCH /vm")
	reqs := requests(t, spec.Dir)
	checkBody(t, reqs[len(reqs)-2], map[string]any{"state": "Paused"})
	checkBody(t, reqs[len(reqs)-1], map[string]any{"state": "Resumed"})

	must(t, "pause", m.Pause(ctx))
	next()
	snap := t.TempDir()
	must(t, "snapshot", m.Snapshot(ctx, snap))
	wantCalls(t, "snapshot", next(), "GET /", "PUT /snapshot/create")
	reqs = requests(t, spec.Dir)
	checkBody(t, reqs[len(reqs)-1], map[string]any{
		"snapshot_type": "Full",
		"snapshot_path": filepath.Join(snap, "vmstate.tmp"),
		"mem_file_path": filepath.Join(snap, "memory.tmp"),
	})
	for _, name := range []string{stateFileName, memoryFileName, snapshotMetaName} {
		if _, err := os.Stat(filepath.Join(snap, name)); err != nil {
			t.Errorf("snapshot file: %v", err)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(snap, "*.tmp")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}

	// A paused guest cannot react to ctrl-alt-del: Stop kills at once.
	must(t, "stop paused", m.Stop(ctx))
	wantCalls(t, "stop paused", next(), "GET /")

	// Restore onto a different TAP: the new process gets only snapshot/load.
	spec.Net.TAP = "tap9"
	r, err := d.Restore(ctx, spec, snap)
	if err != nil {
		t.Fatal(err)
	}
	stopAtEnd(t, r)
	reqs = requests(t, spec.Dir)
	wantCalls(t, "restore", calls(reqs, mark), "PUT /snapshot/load")
	mark = len(reqs)
	last := reqs[len(reqs)-1]
	if last.PID != r.PID() || r.PID() == m.PID() {
		t.Fatalf("restore served by pid %d; restored pid %d, old pid %d", last.PID, r.PID(), m.PID())
	}
	checkBody(t, last, map[string]any{
		"snapshot_path":     filepath.Join(snap, stateFileName),
		"mem_backend":       map[string]any{"backend_type": "File", "backend_path": filepath.Join(snap, memoryFileName)},
		"resume_vm":         true,
		"network_overrides": []any{map[string]any{"iface_id": "eth0", "host_dev_name": "tap9"}},
	})
	if st, err := r.(*Machine).State(ctx); err != nil || st != fctest.StateRunning {
		t.Fatalf("restored state %q, %v; want Running", st, err)
	}
	next()

	// A running guest gets ctrl-alt-del, and the stand-in exits like a
	// guest that reboots with reboot=k: no SIGKILL needed.
	must(t, "stop running", r.Stop(ctx))
	wantCalls(t, "stop running", next(), "GET /", "PUT /actions")
	reqs = requests(t, spec.Dir)
	checkBody(t, reqs[len(reqs)-1], map[string]any{"action_type": "SendCtrlAltDel"})
	for _, name := range []string{APISocketName, PIDFileName, ConsoleFIFOName} {
		if _, err := os.Stat(filepath.Join(spec.Dir, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after stop: %v", name, err)
		}
	}
	log, err := os.ReadFile(filepath.Join(spec.Dir, ConsoleLogName))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"fctest: guest booted", "fctest: guest restored", "guest rebooting after ctrl-alt-del"} {
		if !strings.Contains(string(log), want) {
			t.Errorf("console.log lacks %q:\n%s", want, log)
		}
	}
}

func TestRestoreSameTAPSendsNoOverride(t *testing.T) {
	ctx := testCtx(t)
	spec := testSpec(t)
	d := testDriver(t)
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
	reqs := requests(t, spec.Dir)
	if b := body(t, reqs[len(reqs)-1]); b["network_overrides"] != nil {
		t.Fatalf("load body %v has network_overrides for an unchanged tap", b)
	}
	// Snapshot again into the directory the guest was restored from.
	must(t, "pause restored", r.Pause(ctx))
	must(t, "re-snapshot", r.Snapshot(ctx, snap))
}

func TestFaultsAreSurfaced(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fail  string // fctest.FailEnv
		spec  func(*vmm.Spec)
		op    string // "boot" or "pause"
		want  string
		calls []string
	}{
		{
			name: "drive rejected", fail: "PUT /drives/rootfs=Unable to create the block device: injected",
			op: "boot", want: "firecracker PUT /drives/rootfs: 400 Unable to create the block device: injected",
			calls: []string{"PUT /machine-config", "PUT /boot-source", "PUT /drives/rootfs"},
		},
		{
			name: "missing kernel", spec: func(s *vmm.Spec) { s.Kernel = "/nonexistent/vmlinux" },
			op: "boot", want: "The kernel file cannot be opened",
			calls: []string{"PUT /machine-config", "PUT /boot-source"},
		},
		{
			name: "pause rejected", fail: "PATCH /vm=injected pause fault",
			op: "pause", want: "pause vm sb-1: firecracker PATCH /vm: 400 injected pause fault",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			spec := testSpec(t)
			if tc.spec != nil {
				tc.spec(&spec)
			}
			var env []string
			if tc.fail != "" {
				env = append(env, fctest.FailEnv+"="+tc.fail)
			}
			d := testDriver(t, env...)
			m, err := d.Boot(ctx, spec)
			if tc.op == "pause" {
				if err != nil {
					t.Fatal(err)
				}
				stopAtEnd(t, m)
				err = m.Pause(ctx)
			} else if err == nil {
				stopAtEnd(t, m)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("err = %v, want ErrInvalidArgument", err)
			}
			var ae *APIError
			if !errors.As(err, &ae) || ae.Status != 400 {
				t.Errorf("err = %#v, want an *APIError with status 400", err)
			}
			if tc.op == "boot" {
				wantCalls(t, "failed boot", calls(requests(t, spec.Dir), 0), tc.calls...)
				// A failed boot leaves nothing running and nothing behind.
				if _, err := d.Attach(ctx, spec); !errors.Is(err, errdefs.ErrNotFound) {
					t.Errorf("attach after failed boot = %v, want NotFound", err)
				}
				if _, err := os.Stat(filepath.Join(spec.Dir, APISocketName)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("api socket after failed boot: %v", err)
				}
			}
		})
	}
}

func TestRejectedBeforeStart(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*vmm.Spec)
		want string
	}{
		{"qcow2 disk", func(s *vmm.Spec) { s.RootDisk.Format = "qcow2" }, "firecracker only reads raw"},
		{"empty format", func(s *vmm.Spec) { s.RootDisk.Format = "" }, "firecracker only reads raw"},
		{"no root disk", func(s *vmm.Spec) { s.RootDisk.Path = "" }, "root disk"},
		{"relative kernel", func(s *vmm.Spec) { s.Kernel = "vmlinux" }, "kernel"},
		{"33 vcpus", func(s *vmm.Spec) { s.VCPUs = 33 }, "vcpus 33"},
		{"bad mac", func(s *vmm.Spec) { s.Net.MAC = "zz" }, "mac"},
		{"long tap", func(s *vmm.Spec) { s.Net.TAP = "a-very-long-tap-name" }, "tap"},
		{"newline in args", func(s *vmm.Spec) { s.KernelArgs = "a\nb" }, "kernel args"},
		{"init args in kernel args", func(s *vmm.Spec) { s.KernelArgs = "quiet -- single" }, "--"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := testSpec(t)
			tc.edit(&spec)
			_, err := testDriver(t).Boot(testCtx(t), spec)
			if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want InvalidArgument mentioning %q", err, tc.want)
			}
			if _, err := os.Stat(filepath.Join(spec.Dir, fctest.RequestLogName)); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("a process was started: %v", err)
			}
		})
	}
}

func TestRestoreChecksSpecAgainstSnapshot(t *testing.T) {
	ctx := testCtx(t)
	spec := testSpec(t)
	d := testDriver(t)
	m, err := d.Boot(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	stopAtEnd(t, m)
	must(t, "pause", m.Pause(ctx))
	snap := t.TempDir()
	must(t, "snapshot", m.Snapshot(ctx, snap))
	must(t, "stop", m.Stop(ctx))

	for _, tc := range []struct {
		name string
		edit func(*vmm.Spec)
		want error
	}{
		{"other memory size", func(s *vmm.Spec) { s.MemoryMB = 512 }, errdefs.ErrInvalidArgument},
		{"other vcpus", func(s *vmm.Spec) { s.VCPUs = 1 }, errdefs.ErrInvalidArgument},
		{"other disk", func(s *vmm.Spec) { s.RootDisk.Path = s.Kernel }, errdefs.ErrInvalidArgument},
		{"other mac", func(s *vmm.Spec) { s.Net.MAC = "02:fc:00:00:00:02" }, errdefs.ErrInvalidArgument},
		{"no network", func(s *vmm.Spec) { s.Net = nil }, errdefs.ErrInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := spec
			n := *spec.Net
			s.Net = &n
			tc.edit(&s)
			if _, err := d.Restore(ctx, s, snap); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	t.Run("missing memory file", func(t *testing.T) {
		if err := os.Remove(filepath.Join(snap, memoryFileName)); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Restore(ctx, spec, snap); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("err = %v, want NotFound", err)
		}
	})
}

func TestBootTwiceInOneDir(t *testing.T) {
	ctx := testCtx(t)
	spec := testSpec(t)
	d := testDriver(t)
	m, err := d.Boot(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	stopAtEnd(t, m)
	if _, err := d.Boot(ctx, spec); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("second boot = %v, want AlreadyExists", err)
	}
}

func TestStopEscalatesToSIGKILL(t *testing.T) {
	for _, tc := range []struct {
		name  string
		env   string
		grace time.Duration
		calls []string // the requests Stop makes
		slow  bool     // Stop waits out the grace period
	}{
		// The guest accepts ctrl-alt-del but never resets.
		{"guest ignores ctrl-alt-del", fctest.IgnoreCADEnv + "=1", 300 * time.Millisecond,
			[]string{"GET /", "PUT /actions"}, true},
		// Firecracker refuses the action.
		{"ctrl-alt-del refused", fctest.FailEnv + "=PUT /actions=refused", time.Minute,
			[]string{"GET /", "PUT /actions"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			spec := testSpec(t)
			// The stand-in reads its behaviour from the environment at
			// start. An injected PUT /actions failure would also fail
			// InstanceStart, so that case boots a plain stand-in and
			// moves the guest, by snapshot and restore, into one that
			// refuses actions.
			cfg := fakeConfig(t)
			if tc.env != "" && !strings.HasPrefix(tc.env, fctest.FailEnv) {
				cfg.Env = append(cfg.Env, tc.env)
			}
			cfg.StopGrace = tc.grace
			m, err := New(cfg).Boot(ctx, spec)
			if err != nil {
				t.Fatal(err)
			}
			if strings.HasPrefix(tc.env, fctest.FailEnv) {
				// Injected failures are read at process start; restart
				// the stand-in with the failure by restoring a snapshot.
				must(t, "pause", m.Pause(ctx))
				snap := t.TempDir()
				must(t, "snapshot", m.Snapshot(ctx, snap))
				must(t, "stop", m.Stop(ctx))
				cfg.Env = append(cfg.Env, tc.env)
				m, err = New(cfg).Restore(ctx, spec, snap)
				if err != nil {
					t.Fatal(err)
				}
			}
			mark := len(requests(t, spec.Dir))
			start := time.Now()
			must(t, "stop", m.Stop(ctx))
			took := time.Since(start)
			must(t, "wait", m.Wait(ctx))
			wantCalls(t, "stop", calls(requests(t, spec.Dir), mark), tc.calls...)
			if tc.slow && took < tc.grace {
				t.Errorf("stop took %s, less than the %s grace", took, tc.grace)
			}
			if !tc.slow && took > 5*time.Second {
				t.Errorf("stop took %s after a refused ctrl-alt-del", took)
			}
		})
	}
}

func TestAvailable(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "firecracker")
	plain := filepath.Join(dir, "plain")
	must(t, "write", os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755))
	must(t, "write", os.WriteFile(plain, []byte("x"), 0o644))
	for _, tc := range []struct {
		name string
		path string
		want bool
	}{
		{"executable", exe, true},
		{"not executable", plain, false},
		{"missing", filepath.Join(dir, "nope"), false},
		{"directory", dir, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Available(tc.path); got != tc.want {
				t.Fatalf("Available(%s) = %t, want %t", tc.path, got, tc.want)
			}
		})
	}
	t.Run("missing binary fails boot", func(t *testing.T) {
		_, err := New(Config{Binary: filepath.Join(dir, "nope")}).Boot(testCtx(t), testSpec(t))
		if !errors.Is(err, errdefs.ErrFailedPrecondition) {
			t.Fatalf("err = %v, want FailedPrecondition", err)
		}
	})
}

func checkBody(t *testing.T, r fctest.Request, want map[string]any) {
	t.Helper()
	got := body(t, r)
	if !equalJSON(got, want) {
		t.Errorf("%s body\n got %v\nwant %v", r.Call(), got, want)
	}
}

func equalJSON(a, b any) bool {
	switch a := a.(type) {
	case map[string]any:
		b, ok := b.(map[string]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for k, v := range a {
			if !equalJSON(v, b[k]) {
				return false
			}
		}
		return true
	case []any:
		b, ok := b.([]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for i := range a {
			if !equalJSON(a[i], b[i]) {
				return false
			}
		}
		return true
	default:
		return a == b
	}
}

func must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestConfineRunsBeforeAnyRequest(t *testing.T) {
	ctx := testCtx(t)
	spec := testSpec(t)
	confined, seen := 0, -1
	spec.Confine = func(pid int) error {
		confined = pid
		reqs, err := fctest.ReadRequestLog(spec.Dir)
		if err == nil {
			seen = len(reqs)
		} else {
			seen = 0 // no request log yet: nothing was asked
		}
		return nil
	}
	m, err := testDriver(t).Boot(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	stopAtEnd(t, m)
	if confined != m.PID() || seen != 0 {
		t.Fatalf("confine got pid %d (machine %d) after %d requests, want before any", confined, m.PID(), seen)
	}

	t.Run("failure leaves nothing running", func(t *testing.T) {
		spec := testSpec(t)
		spec.Confine = func(int) error { return errors.New("no cgroup") }
		_, err := testDriver(t).Boot(ctx, spec)
		if err == nil || !strings.Contains(err.Error(), "no cgroup") {
			t.Fatalf("err = %v", err)
		}
		if _, err := testDriver(t).Attach(ctx, spec); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("attach after failed confine = %v, want NotFound", err)
		}
	})
	t.Run("missing netns", func(t *testing.T) {
		spec := testSpec(t)
		spec.NetNS = "/nonexistent/netns"
		if _, err := testDriver(t).Boot(ctx, spec); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("err = %v, want NotFound", err)
		}
	})
}

func TestAttachReopensConsole(t *testing.T) {
	ctx := testCtx(t)
	spec := testSpec(t)
	m, err := testDriver(t).Boot(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	must(t, "release", m.(*Machine).Close())
	a, err := testDriver(t).Attach(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	stopAtEnd(t, a)
	mark := len(requests(t, spec.Dir))
	// Output after the agent "restart" must reach console.log: the stand-in
	// writes a line when it gets ctrl-alt-del.
	must(t, "stop", a.Stop(ctx))
	wantCalls(t, "stop attached", calls(requests(t, spec.Dir), mark), "GET /", "PUT /actions")
	log, err := os.ReadFile(filepath.Join(spec.Dir, ConsoleLogName))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(log), "guest rebooting after ctrl-alt-del") {
		t.Fatalf("console.log after attach lacks the stop line:\n%s", log)
	}
}

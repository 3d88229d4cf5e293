package qemu

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// AccelChoice is Probe's decision and why, for the agent to log once.
type AccelChoice struct {
	Accel  Accel
	Reason string
}

// ProbeTimeout bounds the KVM probe guest. Under working KVM the probe
// kernel reaches its root-mount panic in well under a second.
const ProbeTimeout = 15 * time.Second

// bootMarkers are printk lines a kernel prints late in boot. Reaching any of
// them means KVM really executes guest code, which the mere presence of
// /dev/kvm does not prove (a PVM host exposes /dev/kvm yet cannot run a
// stock guest kernel).
var bootMarkers = []string{
	"VFS: Unable to mount root",
	"Kernel panic",
	"Run /init",
	"Freeing unused kernel",
}

// Host paths Probe inspects.
const (
	kvmDevice = "/dev/kvm"
	pvmModule = "/sys/module/kvm_pvm"
)

// probeFacts is what Probe observed; decide turns it into a choice.
type probeFacts struct {
	devErr  error  // opening /dev/kvm read-write
	pvm     bool   // the host's KVM is PVM
	bootErr error  // the probe guest did not reach a marker
	marker  string // the marker it reached
	elapsed time.Duration
}

// Probe decides between KVM and TCG by booting kernel (no root disk, so it
// panics at root mount) under KVM and requiring a late-boot printk within
// ProbeTimeout. Run it once at agent start; it never fails, it falls back to
// TCG and says why.
func Probe(ctx context.Context, qemuBin, kernel string) AccelChoice {
	var f probeFacts
	dev, err := os.OpenFile(kvmDevice, os.O_RDWR, 0)
	if err != nil {
		f.devErr = err
		return decide(f)
	}
	dev.Close()
	if _, err := os.Stat(pvmModule); err == nil {
		f.pvm = true
	}
	if _, err := os.Stat(kernel); err != nil {
		f.bootErr = fmt.Errorf("probe kernel: %w", err)
		return decide(f)
	}
	ctx, cancel := context.WithTimeout(ctx, ProbeTimeout)
	defer cancel()
	start := time.Now()
	f.marker, f.bootErr = probeBoot(ctx, qemuBin, probeArgs(kernel))
	f.elapsed = time.Since(start)
	return decide(f)
}

func decide(f probeFacts) AccelChoice {
	tcg := func(format string, args ...any) AccelChoice {
		return AccelChoice{Accel: AccelTCG, Reason: fmt.Sprintf(format, args...)}
	}
	switch {
	case errors.Is(f.devErr, os.ErrNotExist):
		return tcg("%s missing", kvmDevice)
	case f.devErr != nil:
		return tcg("%s unusable: %v", kvmDevice, f.devErr)
	case f.bootErr != nil && f.pvm:
		return tcg("%s is PVM (%s exists) and the probe guest failed: %v", kvmDevice, pvmModule, f.bootErr)
	case f.bootErr != nil:
		return tcg("%s exists but the probe guest failed: %v", kvmDevice, f.bootErr)
	}
	return AccelChoice{Accel: AccelKVM,
		Reason: fmt.Sprintf("KVM probe guest reached %q in %s", f.marker, f.elapsed.Round(time.Millisecond))}
}

func probeArgs(kernel string) []string {
	return []string{
		"-M", "microvm,acpi=off", "-accel", "kvm", "-cpu", "host,-arch-capabilities",
		"-m", "128", "-smp", "1",
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
		"-serial", "stdio",
		"-kernel", kernel, "-append", "console=ttyS0 panic=1 reboot=k",
	}
}

// probeBoot runs QEMU and scans the serial console (stdout) for a boot
// marker. It returns the marker, or an error carrying QEMU's first stderr
// line: why a guest did not boot is usually there ("KVM internal error",
// "failed to set MSR ...").
func probeBoot(ctx context.Context, bin string, args []string) (string, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	var stderr limitedBuffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return "", fmt.Errorf("probe: %w", err)
	}
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("probe: start %s: %w", bin, err)
	}
	marker := ""
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 4096), 64<<10)
scan:
	for sc.Scan() {
		for _, m := range bootMarkers {
			if strings.Contains(sc.Text(), m) {
				marker = m
				break scan
			}
		}
	}
	_ = cmd.Process.Kill()
	_, _ = io.Copy(io.Discard, stdout)
	_ = cmd.Wait()
	if marker != "" {
		return marker, nil
	}
	why := stderr.firstLine()
	if why == "" {
		why = "no output on stderr"
	}
	if ctx.Err() != nil {
		return "", fmt.Errorf("no boot message before the deadline: %w (%s)", ctx.Err(), why)
	}
	return "", fmt.Errorf("qemu exited before the kernel booted: %s", why)
}

// limitedBuffer keeps the first 4 KiB written to it.
type limitedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := 4096 - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (b *limitedBuffer) firstLine() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	line, _, _ := strings.Cut(strings.TrimSpace(b.buf.String()), "\n")
	return strings.TrimSpace(line)
}

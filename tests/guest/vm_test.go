//go:build linux

// Package guest_test boots the real guest image (kernel + minimal rootfs)
// in QEMU through internal/vmm/qemu, inside a network namespace it creates,
// and drives the envd inside through internal/envdclient over the TAP.
//
// As root, after images/kernel/build.sh and images/rootfs/build.sh:
//
//	go test -v ./tests/guest/
//	go test -run '^$' -bench . -benchtime 5x ./tests/guest/
//
// internal/testenv checks for root, /dev/net/tun, QEMU, the kernel and the
// rootfs (under $WRENN_DIR, default /var/lib/wrenn): without one the tests
// skip and say which; WRENN_TEST_REQUIRE_VM=1 makes that a failure.
// WRENN_TEST_ACCEL=tcg|kvm skips the accelerator probe.
package guest_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/wrenn/wrenn/internal/envdclient"
	"github.com/wrenn/wrenn/internal/testenv"
	"github.com/wrenn/wrenn/internal/vmm"
	"github.com/wrenn/wrenn/internal/vmm/qemu"
)

const (
	kernelArgs = "root=/dev/vda rw init=/usr/local/sbin/wrenn-init"

	guestIP  = "169.254.0.21"
	guestMAC = "02:fc:00:00:00:15"
	hostIP   = "169.254.0.22"
	tapName  = "tap0"

	// readyTimeout is generous: under TCG on a loaded 2-core host a boot
	// to envd can take many seconds.
	readyTimeout = 120 * time.Second
)

var envdURL = "http://" + net.JoinHostPort(guestIP, strconv.Itoa(envdclient.Port))

// guest is one booted VM and a client to its envd.
type guest struct {
	spec   vmm.Spec
	m      vmm.Machine
	client *envdclient.Client
	probe  *envdclient.Client
	ns     netns.NsHandle
	dir    string
	// bootStart is when QEMU was asked to start.
	bootStart time.Time
	undos     []func() error
}

var nsSeq atomic.Int32

// createNetNS must run on a locked thread: netns.NewNamed moves the calling
// thread into the new namespace, and a TAP is created in the namespace of
// the thread that opens /dev/net/tun.
func createNetNS(name string) (ns netns.NsHandle, err error) {
	runtime.LockOSThread()
	origin, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return 0, fmt.Errorf("get current netns: %w", err)
	}
	defer origin.Close()
	ns, err = netns.NewNamed(name)
	if err != nil {
		runtime.UnlockOSThread()
		return 0, fmt.Errorf("new netns: %w", err)
	}
	setupErr := setupTAP()
	if err := netns.Set(origin); err != nil {
		// This thread is stuck in the sandbox namespace: leave it locked so
		// the runtime discards it when the goroutine ends.
		_ = netns.DeleteNamed(name)
		return 0, fmt.Errorf("return to host netns: %w", err)
	}
	runtime.UnlockOSThread()
	if setupErr != nil {
		_ = ns.Close()
		_ = netns.DeleteNamed(name)
		return 0, setupErr
	}
	return ns, nil
}

// setupTAP runs inside the new namespace.
func setupTAP() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("set lo up: %w", err)
	}
	tap := &netlink.Tuntap{
		LinkAttrs: netlink.LinkAttrs{Name: tapName},
		Mode:      netlink.TUNTAP_MODE_TAP,
		Flags:     netlink.TUNTAP_NO_PI | netlink.TUNTAP_ONE_QUEUE,
	}
	if err := netlink.LinkAdd(tap); err != nil {
		return fmt.Errorf("add tap %s: %w", tapName, err)
	}
	// The device is persistent; the creating fds are not needed (QEMU opens
	// its own), and keeping them would hold the queue.
	for _, f := range tap.Fds {
		_ = f.Close()
	}
	addr, err := netlink.ParseAddr(hostIP + "/30")
	if err != nil {
		return err
	}
	if err := netlink.AddrAdd(tap, addr); err != nil {
		return fmt.Errorf("address tap %s: %w", tapName, err)
	}
	if err := netlink.LinkSetUp(tap); err != nil {
		return fmt.Errorf("set tap %s up: %w", tapName, err)
	}
	// We chose the guest's MAC, so pin its neighbour entry: otherwise a
	// probe sent before the guest's eth0 is up leaves ARP retrying once a
	// second, and readiness would be seen up to a second late.
	mac, err := net.ParseMAC(guestMAC)
	if err != nil {
		return err
	}
	neigh := &netlink.Neigh{LinkIndex: tap.Attrs().Index, State: netlink.NUD_PERMANENT, IP: net.ParseIP(guestIP), HardwareAddr: mac}
	if err := netlink.NeighAdd(neigh); err != nil {
		return fmt.Errorf("pin guest neighbour on %s: %w", tapName, err)
	}
	return nil
}

// dialIn returns a DialContext that creates its sockets inside ns: the
// goroutine's thread enters ns only for socket creation and connect, and
// the socket stays in ns afterwards.
func dialIn(ns netns.NsHandle) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		runtime.LockOSThread()
		origin, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			return nil, fmt.Errorf("get current netns: %w", err)
		}
		defer origin.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			return nil, fmt.Errorf("enter sandbox netns: %w", err)
		}
		var d net.Dialer
		conn, dialErr := d.DialContext(ctx, network, addr)
		if err := netns.Set(origin); err != nil {
			// Leave the thread locked: the runtime kills it with the goroutine
			// instead of reusing a thread in the wrong namespace.
			if conn != nil {
				_ = conn.Close()
			}
			return nil, fmt.Errorf("return to host netns: %w", err)
		}
		runtime.UnlockOSThread()
		return conn, dialErr
	}
}

// prepareGuest creates everything a guest needs but does not start it: a
// netns with its TAP, a private directory, and a qcow2 overlay over the
// shared raw rootfs (the base is never written or copied). g.close, also
// registered with tb.Cleanup, undoes everything in reverse: client
// connections, VM, overlay, netns and TAP.
func prepareGuest(tb testing.TB, images testenv.Images) *guest {
	tb.Helper()
	g := &guest{}
	tb.Cleanup(func() {
		if err := g.close(); err != nil {
			tb.Errorf("clean up guest: %v", err)
		}
	})
	fail := func(format string, args ...any) *guest {
		tb.Helper()
		err := fmt.Errorf(format, args...)
		if cerr := g.close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
		tb.Fatal(err)
		return nil
	}

	name := fmt.Sprintf("wrenn-gt-%d-%d", os.Getpid(), nsSeq.Add(1))
	ns, err := createNetNS(name)
	if err != nil {
		return fail("create netns %s: %w", name, err)
	}
	g.ns = ns
	g.undo(func() error {
		_ = ns.Close()
		// Deleting the namespace deletes the TAP in it (QEMU has let go).
		if err := netns.DeleteNamed(name); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("delete netns %s: %w", name, err)
		}
		return nil
	})

	// Short: QEMU's control sockets live here and sun_path is 108 bytes.
	dir, err := os.MkdirTemp("", "wrenn-gt-")
	if err != nil {
		return fail("make guest dir: %w", err)
	}
	g.dir = dir
	g.undo(func() error { return os.RemoveAll(dir) })

	overlay := filepath.Join(dir, "overlay.qcow2")
	out, err := exec.CommandContext(tb.Context(), "qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", images.Rootfs, overlay, "2G").CombinedOutput()
	if err != nil {
		return fail("qemu-img create overlay: %w: %s", err, out)
	}

	spec := vmm.Spec{
		ID:         name,
		Dir:        dir,
		Kernel:     images.Kernel.Path,
		KernelArgs: kernelArgs,
		RootDisk:   vmm.Disk{Path: overlay, Format: "qcow2"},
		VCPUs:      1,
		MemoryMB:   512,
		Net:        &vmm.NetDevice{TAP: tapName, MAC: guestMAC},
		NetNS:      "/run/netns/" + name,
	}
	g.spec = spec
	g.client = envdclient.New(envdURL, envdclient.WithDialContext(dialIn(ns)))
	// The readiness probe gets its own client with a short dial timeout: a
	// SYN sent before the guest's network is up is dropped, not refused, and
	// TCP would resend it only after a second.
	g.probe = envdclient.New(envdURL, envdclient.WithDialContext(dialIn(ns)), envdclient.WithDialTimeout(100*time.Millisecond))
	g.undo(func() error {
		g.client.CloseIdleConnections()
		g.probe.CloseIdleConnections()
		return nil
	})
	return g
}

// boot starts QEMU and returns once it runs (not once envd is ready).
func (g *guest) boot(tb testing.TB) {
	tb.Helper()
	accel := testenv.Accel(g.spec.Kernel)
	drv := qemu.New(qemu.Config{Accel: accel.Accel})
	g.bootStart = time.Now()
	m, err := drv.Boot(tb.Context(), g.spec)
	if err != nil {
		err = fmt.Errorf("boot guest (accel %s: %s): %w", accel.Accel, accel.Reason, err)
		tb.Fatal(errors.Join(err, g.close()))
	}
	g.m = m
	g.undo(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := m.Stop(ctx); err != nil {
			return fmt.Errorf("stop guest: %w", err)
		}
		return nil
	})
}

// bootGuest prepares and boots a guest.
func bootGuest(tb testing.TB, images testenv.Images) *guest {
	tb.Helper()
	g := prepareGuest(tb, images)
	g.boot(tb)
	return g
}

// undo records how to release something just acquired.
func (g *guest) undo(f func() error) { g.undos = append(g.undos, f) }

// close releases everything in reverse order, once, carrying on past errors.
func (g *guest) close() error {
	var errs []error
	for i := len(g.undos) - 1; i >= 0; i-- {
		errs = append(errs, g.undos[i]())
	}
	g.undos = nil
	return errors.Join(errs...)
}

// waitReady polls envd until it answers, dumping the guest console when it
// never does so the failure says why.
func (g *guest) waitReady(tb testing.TB) time.Duration {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), readyTimeout)
	defer cancel()
	if err := g.probe.WaitReady(ctx); err != nil {
		tb.Fatalf("envd not ready after %s: %v\nconsole:\n%s", readyTimeout, err, g.consoleTail())
	}
	return time.Since(g.bootStart)
}

func (g *guest) consoleTail() string {
	b, err := os.ReadFile(filepath.Join(g.dir, qemu.ConsoleLogName))
	if err != nil {
		return "(no console log: " + err.Error() + ")"
	}
	const keep = 8 << 10
	if len(b) > keep {
		b = b[len(b)-keep:]
	}
	return string(b)
}

package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	"github.com/wrenn/wrenn/internal/envdclient"
)

// guestUser is the account commands and files use in the guest (the
// agent's default user, images/rootfs).
const guestUser = "user"

// execs times the exec `true` round trip on the running source sandbox by
// the paths that exist in-process: straight to envd with a client of our
// own, and through the agent (Manager.Envd: look-up, lock, idle-timer
// touch, then the same envd call). The REST path is in the stack figures;
// the agent's RPC guest proxy has no client here yet.
func (b *bench) execs(ctx context.Context) {
	direct := &Figure{Key: "exec-envd", Name: "exec `true` round trip, envd direct"}
	viaAgent := (&Figure{Key: "exec-agent", Name: "exec `true` round trip, through the in-process agent (Manager.Envd)"}).against("exec-envd", 0)
	rpc := skipped("exec-agent-rpc", "exec `true` round trip, through the agent's RPC guest proxy",
		"the agent's guest proxy (internal/agent/rpc) has no client in the benchmark yet; the REST figure exec-rest goes through it when the stack runs")
	rate := &Figure{Key: "exec-envd-rps", Name: fmt.Sprintf("exec `true` requests per second, envd direct, %d in flight", rpsWorkers), Unit: "req/s"}
	defer func() { b.add(GroupWrenn, direct, viaAgent, rpc, rate) }()
	c, err := b.directClient(ctx)
	if err != nil {
		direct.failed(err)
		viaAgent.failed(err)
		rate.failed(err)
		return
	}
	defer c.CloseIdleConnections()
	// One untimed exec each way first: the connection is made and the
	// guest's first-exec costs (TCG translation, page faults) are paid.
	if err := runTrue(ctx, c); err != nil {
		direct.failed(err)
		viaAgent.failed(err)
		rate.failed(err)
		return
	}
	b.measure(ctx, direct, b.cfg.ExecSamples, func(ctx context.Context) (time.Duration, error) {
		t := time.Now()
		err := runTrue(ctx, c)
		return time.Since(t), err
	})
	b.measure(ctx, viaAgent, b.cfg.ExecSamples, func(ctx context.Context) (time.Duration, error) {
		t := time.Now()
		err := execTrue(ctx, b.m, b.src)
		return time.Since(t), err
	})
	direct.note("one untimed exec first on each path; a warm HTTP/2 connection")
	// What one guest (1 vCPU) can take: the floor under the control
	// plane's exec rate.
	b.rate(ctx, rate, func(ctx context.Context) error { return runTrue(ctx, c) })
}

// directClient is an envd client of the benchmark's own for the source
// sandbox, from the address and token the agent reports.
func (b *bench) directClient(ctx context.Context) (*envdclient.Client, error) {
	src, err := b.source(ctx)
	if err != nil {
		return nil, err
	}
	info, err := b.m.Get(ctx, src)
	if err != nil {
		return nil, err
	}
	url := "http://" + net.JoinHostPort(info.Address, strconv.Itoa(envdclient.Port))
	return envdclient.New(url, envdclient.WithAccessToken(info.AccessToken), envdclient.WithUser(guestUser)), nil
}

// runTrue runs /bin/true through c.
func runTrue(ctx context.Context, c *envdclient.Client) error {
	res, err := c.Run(ctx, envdclient.RunRequest{Cmd: "/bin/true"})
	if err != nil {
		return fmt.Errorf("exec true: %w", err)
	}
	if res.ExitCode != 0 {
		return fmt.Errorf("exec true: %s", res.Status)
	}
	return nil
}

// files times uploads and downloads through envd's /files, straight from
// the benchmark: 1 MiB and a large file, into the user's home directory
// on the guest's disk. The file is removed afterwards.
func (b *bench) files(ctx context.Context) {
	large := int64(b.cfg.LargeFileMB) << 20
	figs := []*Figure{
		{Key: "upload-1m", Name: "upload 1 MiB, envd direct", Bytes: 1 << 20},
		{Key: "download-1m", Name: "download 1 MiB, envd direct", Bytes: 1 << 20},
		{Key: fmt.Sprintf("upload-%dm", b.cfg.LargeFileMB), Name: fmt.Sprintf("upload %d MiB, envd direct", b.cfg.LargeFileMB), Bytes: large},
		{Key: fmt.Sprintf("download-%dm", b.cfg.LargeFileMB), Name: fmt.Sprintf("download %d MiB, envd direct", b.cfg.LargeFileMB), Bytes: large},
	}
	defer func() { b.add(GroupWrenn, figs...) }()
	c, err := b.directClient(ctx)
	if err != nil {
		for _, f := range figs {
			f.failed(err)
		}
		return
	}
	defer c.CloseIdleConnections()
	const path = "wrennbench-transfer"
	for i, size := range []int64{1 << 20, large} {
		n := b.cfg.FileSamples
		if i == 1 {
			n = b.cfg.LargeSamples
		}
		up, down := figs[2*i], figs[2*i+1]
		b.measure(ctx, up, n, func(ctx context.Context) (time.Duration, error) {
			t := time.Now()
			err := c.Upload(ctx, path, &pattern{left: size})
			return time.Since(t), err
		})
		b.measure(ctx, down, n, func(ctx context.Context) (time.Duration, error) {
			t := time.Now()
			got, err := download(ctx, c, path)
			d := time.Since(t)
			if err == nil && got != size {
				err = fmt.Errorf("download %s: got %d bytes, want %d", path, got, size)
			}
			return d, err
		})
	}
	if _, err := c.Run(ctx, envdclient.RunRequest{Cmd: "/bin/rm", Args: []string{"-f", path}}); err != nil {
		figs[0].note("could not remove the test file: %v", err)
	}
	figs[0].note("to ~/%s on the guest's root disk (qcow2 overlay), streamed; the bytes come from a generator, not a file", path)
}

// download reads a guest file to the end and returns its length.
func download(ctx context.Context, c *envdclient.Client, path string) (int64, error) {
	rc, err := c.Download(ctx, path)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	n, err := io.Copy(io.Discard, rc)
	if err != nil {
		return n, fmt.Errorf("download %s: %w", path, err)
	}
	return n, nil
}

// pattern yields left bytes of a fixed, non-repeating-within-a-page
// pattern, cheaply: uploads measure the path, not a random generator.
type pattern struct {
	left int64
	off  int64
}

func (p *pattern) Read(b []byte) (int, error) {
	if p.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > p.left {
		b = b[:p.left]
	}
	for i := range b {
		x := uint64(p.off + int64(i))
		b[i] = byte(x ^ x>>8 ^ x>>16)
	}
	p.off += int64(len(b))
	p.left -= int64(len(b))
	return len(b), nil
}

//go:build linux

package agent_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/agent"
	"github.com/wrenn/wrenn/internal/agent/state"
	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/network"
)

// TestLifecycle: create -> exec -> files -> pause/resume -> destroy of a real
// microVM.
func TestLifecycle(t *testing.T) {
	h := newHarness(t)
	ctx := ctxFor(t, 5*time.Minute)
	m := h.agent(ctx)

	info, err := m.Create(ctx, agent.CreateRequest{Env: map[string]string{"GREETING": "hello"}, Metadata: map[string]string{"k": "v"}})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if info.State != state.Running || info.Address == "" || info.KernelVersion == "" {
		t.Fatalf("created sandbox info = %+v", info)
	}

	out, _, code := run(ctx, t, m, info.ID, `echo "$GREETING from $(whoami) in $(pwd)"; exit 3`)
	if code != 3 || strings.TrimSpace(out) != "hello from user in /home/user" {
		t.Fatalf("exec: code %d output %q", code, out)
	}

	c, err := m.Envd(ctx, info.ID)
	if err != nil {
		t.Fatal(err)
	}
	payload := bytes.Repeat([]byte("wrenn"), 200000)
	if err := c.Upload(ctx, "data/blob.bin", bytes.NewReader(payload)); err != nil {
		t.Fatalf("upload: %v", err)
	}
	rc, err := c.Download(ctx, "data/blob.bin")
	if err != nil {
		t.Fatalf("download: %v", err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("download: %d bytes, err %v; want the %d bytes uploaded", len(got), err, len(payload))
	}

	if err := m.Pause(ctx, info.ID); err != nil {
		t.Fatalf("pause: %v", err)
	}
	if _, err := m.Envd(ctx, info.ID); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("envd of a paused sandbox: %v, want FailedPrecondition", err)
	}
	if err := m.Pause(ctx, info.ID); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("second pause: %v, want FailedPrecondition", err)
	}
	if err := m.Resume(ctx, info.ID); err != nil {
		t.Fatalf("resume: %v", err)
	}
	if out, _, _ := run(ctx, t, m, info.ID, "cat data/blob.bin | wc -c"); strings.TrimSpace(out) != "1000000" {
		t.Fatalf("file after resume: %q", out)
	}

	met, err := m.Metrics(ctx, info.ID)
	if err != nil || met.VMMMemoryBytes <= 0 || met.Guest.MemTotal <= 0 || met.DiskAllocated <= 0 {
		t.Fatalf("metrics = %+v, %v", met, err)
	}

	start := time.Now()
	if err := m.Destroy(ctx, info.ID); err != nil {
		t.Fatalf("destroy: %v", err)
	}
	t.Logf("destroy took %v", time.Since(start))
	if _, err := m.Get(ctx, info.ID); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("get after destroy: %v, want NotFound", err)
	}
	if err := m.Destroy(ctx, info.ID); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("second destroy: %v, want NotFound", err)
	}
}

// TestCreateRejectsBadInput: bad requests fail fast with InvalidArgument or
// NotFound and leave nothing behind.
func TestCreateRejectsBadInput(t *testing.T) {
	h := newHarness(t)
	ctx := ctxFor(t, time.Minute)
	m := h.agent(ctx)
	tests := []struct {
		name string
		req  agent.CreateRequest
		want error
	}{
		{name: "too many vcpus", req: agent.CreateRequest{VCPUs: 99}, want: errdefs.ErrInvalidArgument},
		{name: "tiny memory", req: agent.CreateRequest{MemoryMB: 8}, want: errdefs.ErrInvalidArgument},
		{name: "tiny disk", req: agent.CreateRequest{DiskMB: 1}, want: errdefs.ErrInvalidArgument},
		{name: "bad on_timeout", req: agent.CreateRequest{OnTimeout: "explode"}, want: errdefs.ErrInvalidArgument},
		{name: "bad id", req: agent.CreateRequest{ID: "../etc"}, want: errdefs.ErrInvalidArgument},
		{name: "unknown template", req: agent.CreateRequest{Template: "nope"}, want: errdefs.ErrNotFound},
		// The harness's pool has the default egress ceiling (issue 11 hole 7).
		{name: "allow_out past the egress ceiling", req: agent.CreateRequest{
			Network: network.Policy{Internet: true, AllowOut: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}}, want: errdefs.ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := m.Create(ctx, tt.req); !errors.Is(err, tt.want) {
				t.Fatalf("create: %v, want %v", err, tt.want)
			}
		})
	}
	if list, _ := m.List(context.Background()); len(list) != 0 {
		t.Fatalf("rejected creates left sandboxes: %+v", list)
	}
}

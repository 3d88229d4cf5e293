package soak

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/testenv"
)

// testStack keeps the short soak apart from make soak's (DefaultStack)
// and from the other test stacks on the machine.
var testStack = Stack{AgentName: "wsoakt", HostCIDR: "10.108.0.0/16", VethCIDR: "10.109.0.0/16", VMMUIDBase: 450000, PGPort: 5447}

// TestSoakShort soaks a stack of its own for 60 s with 2 workers and
// requires what make soak requires: no unexpected error, the control
// plane and the agent agreeing, nothing leaked. It needs root, QEMU and
// the images (make images).
func TestSoakShort(t *testing.T) {
	if testing.Short() {
		t.Skip("boots VMs for over a minute; not with -short")
	}
	images := testenv.RequireVM(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	rep, err := Run(ctx, Config{Duration: 60 * time.Second, Workers: 2, Seed: uint64(time.Now().UnixNano()),
		Images: images, Stack: testStack, Command: "go test -run TestSoakShort ./internal/soak", Out: os.Stderr})
	if err != nil {
		t.Fatalf("soak did not run: %v", err)
	}
	t.Logf("soak took %s\n%s", time.Since(start).Round(time.Second), rep.Markdown())
	if !rep.OK() {
		t.Fatalf("soak failed (seed %d): see the summary above", rep.Seed)
	}
	if rep.Ops["create"].Count == 0 || rep.Ops["exec"].Count == 0 || rep.Ops["file-read"].Count == 0 {
		t.Errorf("the soak ran too little to mean anything: %+v", rep.Ops)
	}
}

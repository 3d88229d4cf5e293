package faultpoint_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/faultpoint"
)

func TestNilNeverStops(t *testing.T) {
	var p *faultpoint.Points
	p.Hit(context.Background(), "x") // must return at once
	if faultpoint.New("", nil) != nil {
		t.Fatal("New with no directory must return nil")
	}
}

func TestUnarmedDoesNotStop(t *testing.T) {
	p := faultpoint.New(t.TempDir(), nil)
	done := make(chan struct{})
	go func() { p.Hit(context.Background(), "x"); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("an unarmed point stopped the caller")
	}
}

func TestArmHitRelease(t *testing.T) {
	dir := t.TempDir()
	p := faultpoint.New(dir, nil)
	if err := faultpoint.Arm(dir, "x"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() { p.Hit(ctx, "x"); close(done) }()
	pid, err := faultpoint.WaitHit(ctx, dir, "x")
	if err != nil {
		t.Fatal(err)
	}
	if pid != os.Getpid() {
		t.Fatalf("hit pid %d, want %d", pid, os.Getpid())
	}
	select {
	case <-done:
		t.Fatal("Hit returned before the release")
	default:
	}
	// One-shot: a second caller passes straight through.
	p.Hit(ctx, "x")
	if err := faultpoint.Release(dir, "x"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("Hit did not return after the release")
	}
	left, _ := filepath.Glob(filepath.Join(dir, "*"))
	if len(left) != 0 {
		t.Fatalf("files left after release: %v", left)
	}
}

func TestHitEndsWithContext(t *testing.T) {
	dir := t.TempDir()
	p := faultpoint.New(dir, nil)
	if err := faultpoint.Arm(dir, "x"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Hit(ctx, "x"); close(done) }()
	wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer wcancel()
	if _, err := faultpoint.WaitHit(wctx, dir, "x"); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case <-done:
	case <-wctx.Done():
		t.Fatal("Hit ignored its context")
	}
}

func TestDisarm(t *testing.T) {
	dir := t.TempDir()
	if err := faultpoint.Arm(dir, "x"); err != nil {
		t.Fatal(err)
	}
	if err := faultpoint.Disarm(dir, "x"); err != nil {
		t.Fatal(err)
	}
	if err := faultpoint.Disarm(dir, "x"); err != nil {
		t.Fatalf("disarming twice: %v", err)
	}
	p := faultpoint.New(dir, nil)
	p.Hit(context.Background(), "x") // disarmed: returns at once
}

package auth

import (
	"context"
	"errors"
	"testing"
	"time"
)

// Issue 11 hole 8: argon2id hashes ran without bound. The gate runs at
// most its size at once, queues a few, and refuses the rest at once.
func TestHashGate(t *testing.T) {
	g := NewHashGate(1, 1, 5*time.Second)
	ctx := context.Background()
	release := make(chan struct{})
	running := make(chan struct{})
	first := make(chan error, 1)
	go func() {
		first <- g.Do(ctx, func() { close(running); <-release })
	}()
	<-running
	// The queue has room for one waiter.
	second := make(chan error, 1)
	ran := false
	go func() { second <- g.Do(ctx, func() { ran = true }) }()
	deadline := time.Now().Add(5 * time.Second)
	for g.waiting.Load() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("second caller never queued")
		}
		time.Sleep(time.Millisecond)
	}
	// A third is refused at once, without running.
	start := time.Now()
	if err := g.Do(ctx, func() { t.Error("third ran") }); !errors.Is(err, ErrHashBusy) {
		t.Fatalf("third: %v, want ErrHashBusy", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("refusal took %v", d)
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if err := <-second; err != nil || !ran {
		t.Fatalf("queued caller: err=%v ran=%v", err, ran)
	}

	// A waiter gives up after maxWait, and when its context ends.
	g = NewHashGate(1, 4, 50*time.Millisecond)
	hold := make(chan struct{})
	held := make(chan struct{})
	go func() { _ = g.Do(ctx, func() { close(held); <-hold }) }()
	<-held
	if err := g.Do(ctx, func() {}); !errors.Is(err, ErrHashBusy) {
		t.Fatalf("after maxWait: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	g.maxWait = time.Minute
	if err := g.Do(cctx, func() {}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
	close(hold)
	if g.waiting.Load() != 0 {
		t.Fatalf("%d still counted waiting", g.waiting.Load())
	}
}

func TestHashGateVerify(t *testing.T) {
	g := NewHashGate(0, -1, 0)
	p := Params{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}
	h, err := g.HashPassword(context.Background(), "pw", p)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.VerifyPassword(context.Background(), "pw", h); err != nil {
		t.Fatal(err)
	}
	if err := g.VerifyPassword(context.Background(), "nope", h); !errors.Is(err, ErrMismatch) {
		t.Fatalf("wrong password: %v", err)
	}
}

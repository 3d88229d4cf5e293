package network

import (
	"context"
	"errors"
	"testing"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// TestPoolAccounting covers slot bookkeeping, which touches nothing on the host.
func TestPoolAccounting(t *testing.T) {
	ctx := context.Background()
	p, err := NewPool(PoolConfig{Prefix: "wtacct-", Slots: 3}, nil)
	if err != nil {
		t.Fatal(err)
	}
	adopted, err := p.Adopt(2)
	if err != nil || len(adopted) != 1 || adopted[0].Index != 2 {
		t.Fatalf("Adopt(2) = %v, %v", adopted, err)
	}
	for _, tt := range []struct {
		name    string
		indexes []int
		kind    error
	}{
		{"in use", []int{2}, errdefs.ErrAlreadyExists},
		{"twice in one call", []int{3, 3}, errdefs.ErrAlreadyExists},
		{"zero", []int{0}, errdefs.ErrInvalidArgument},
		{"past the end", []int{4}, errdefs.ErrInvalidArgument},
	} {
		t.Run("adopt "+tt.name, func(t *testing.T) {
			if _, err := p.Adopt(tt.indexes...); !errors.Is(err, tt.kind) {
				t.Fatalf("Adopt(%v) = %v, want %v", tt.indexes, err, tt.kind)
			}
		})
	}
	var got []int
	for range 2 {
		s, err := p.Acquire(ctx)
		if err != nil {
			t.Fatalf("Acquire: %v", err)
		}
		got = append(got, s.Index)
	}
	if got[0] != 1 || got[1] != 3 {
		t.Errorf("acquired %v, want [1 3] (2 is adopted)", got)
	}
	if _, err := p.Acquire(ctx); !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Errorf("Acquire on a full pool = %v, want ResourceExhausted", err)
	}
	other, _ := NewPool(PoolConfig{Prefix: "wtacct-", Slots: 3}, nil)
	if err := other.Release(ctx, adopted[0]); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("Release of another pool's slot = %v, want InvalidArgument", err)
	}
}

//go:build !linux

package network

import (
	"context"
	"log/slog"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// errUnsupported is what every operation returns off Linux: sandbox
// networking is built from Linux namespaces, netlink and nftables.
var errUnsupported = errdefs.New(errdefs.ErrFailedPrecondition, "network: sandbox networking needs Linux")

// Pool is unavailable off Linux; see the Linux build for its documentation.
type Pool struct{}

// NewPool returns an error off Linux.
func NewPool(PoolConfig, *slog.Logger) (*Pool, error) { return nil, errUnsupported }

// Acquire returns an error off Linux.
func (*Pool) Acquire(context.Context) (*Slot, error) { return nil, errUnsupported }

// Adopt returns an error off Linux.
func (*Pool) Adopt(...int) ([]*Slot, error) { return nil, errUnsupported }

// Setup returns an error off Linux.
func (*Pool) Setup(context.Context, *Slot, Policy) error { return errUnsupported }

// Release returns an error off Linux.
func (*Pool) Release(context.Context, *Slot) error { return errUnsupported }

// Reclaim returns an error off Linux.
func (*Pool) Reclaim(context.Context) error { return errUnsupported }

// SetTAPOwner returns an error off Linux.
func (*Pool) SetTAPOwner(context.Context, *Slot, uint32, uint32) error { return errUnsupported }

// SetPolicy returns an error off Linux.
func (*Slot) SetPolicy(context.Context, Policy) error { return errUnsupported }

// CheckPolicy returns an error off Linux.
func (*Pool) CheckPolicy(Policy) error { return errUnsupported }

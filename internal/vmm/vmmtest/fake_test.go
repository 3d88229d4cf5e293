package vmmtest

import (
	"context"
	"errors"
	"testing"

	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/vmm"
)

func TestFakePassesSuite(t *testing.T) {
	host := NewFake().Host
	Run(t, Harness{
		NewDriver: func(t *testing.T) vmm.Driver { return &Fake{Host: host} },
		NewSpec: func(t *testing.T) vmm.Spec {
			dir := t.TempDir()
			return vmm.Spec{ID: "fake", Dir: dir, Kernel: "/k", VCPUs: 1, MemoryMB: 64}
		},
		Release: func(m vmm.Machine) error { return nil },
	})
	if n := host.Running(); n != 0 {
		t.Fatalf("%d fake machines left running", n)
	}
}

func TestFakeFailNext(t *testing.T) {
	f := NewFake()
	f.FailNext("boot", errdefs.New(errdefs.ErrResourceExhausted, "no memory"))
	spec := vmm.Spec{ID: "x", Dir: t.TempDir()}
	if _, err := f.Boot(context.Background(), spec); !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Fatalf("err = %v", err)
	}
	m, err := f.Boot(context.Background(), spec)
	if err != nil {
		t.Fatalf("failure injected once hit twice: %v", err)
	}
	if _, err := f.Boot(context.Background(), spec); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("second boot in one dir: err = %v", err)
	}
	if err := m.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
}

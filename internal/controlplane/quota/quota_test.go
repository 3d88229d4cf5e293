package quota

import (
	"errors"
	"strings"
	"testing"

	"github.com/wrenn/wrenn/internal/errdefs"
)

func TestCheck(t *testing.T) {
	l := Limits{MaxSandboxes: 3, MaxVCPUs: 4, MaxMemoryMB: 1024, MaxDiskMB: 0, MaxTemplates: 1}
	used := Amount{Sandboxes: 2, VCPUs: 3, MemoryMB: 512, DiskMB: 1 << 30, Templates: 1}
	tests := []struct {
		name string
		want Amount
		err  string // "" = admitted
	}{
		{"fits exactly", Sandboxes(1, 1, 512, 2048), ""},
		{"one sandbox too many", Sandboxes(2, 0, 0, 0), "team limit max_sandboxes (3) reached: 2 in use, 2 more requested"},
		{"vcpus", Sandboxes(1, 2, 128, 256), "max_vcpus (4)"},
		{"memory", Sandboxes(1, 1, 513, 256), "max_memory_mb (1024)"},
		{"disk 0 is unlimited", Amount{DiskMB: 1 << 40}, ""},
		{"templates", Amount{Templates: 1}, "max_templates (1)"},
		// A team already over a lowered limit may still do what does not
		// add to it.
		{"nothing asked of a full dimension", Amount{VCPUs: 1}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Check(l, used, tt.want)
			if tt.err == "" {
				if err != nil {
					t.Fatalf("Check = %v, want admitted", err)
				}
				return
			}
			if !errors.Is(err, errdefs.ErrQuotaExceeded) || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("Check = %v, want ErrQuotaExceeded naming %q", err, tt.err)
			}
			if errdefs.HTTPStatus(err) != 429 || errdefs.Code(err) != "quota_exceeded" {
				t.Fatalf("maps to %d %s, want 429 quota_exceeded", errdefs.HTTPStatus(err), errdefs.Code(err))
			}
		})
	}
	over := Limits{MaxVCPUs: 2}
	if err := Check(over, Amount{VCPUs: 3}, Amount{Sandboxes: 1, DiskMB: 10}); err != nil {
		t.Errorf("a team over max_vcpus asking for no vCPUs: %v", err)
	}
}

func TestOverrides(t *testing.T) {
	seven, zero := int64(7), int64(0)
	def := Limits{MaxSandboxes: 20, MaxVCPUs: 40, MaxMemoryMB: 65536, MaxDiskMB: 204800, MaxTemplates: 50}
	got := Overrides{MaxSandboxes: &seven, MaxDiskMB: &zero}.Apply(def)
	want := Limits{MaxSandboxes: 7, MaxVCPUs: 40, MaxMemoryMB: 65536, MaxDiskMB: 0, MaxTemplates: 50}
	if got != want {
		t.Errorf("Apply = %+v, want %+v", got, want)
	}
	neg, huge := int64(-1), int64(MaxLimit+1)
	for _, o := range []Overrides{{MaxVCPUs: &neg}, {MaxTemplates: &huge}} {
		if err := o.Validate(); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("Validate(%+v) = %v, want invalid argument", o, err)
		}
	}
	if err := (Overrides{MaxSandboxes: &seven, MaxDiskMB: &zero}).Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

package config

import (
	"bytes"
	"strings"
	"testing"
)

func TestTeamLimits(t *testing.T) {
	inEmptyDir(t)
	c, err := Parse(nil, required(), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	want := TeamLimits{MaxSandboxes: DefaultTeamMaxSandboxes, MaxVCPUs: DefaultTeamMaxVCPUs,
		MaxMemoryMB: DefaultTeamMaxMemoryMB, MaxDiskMB: DefaultTeamMaxDiskMB, MaxTemplates: DefaultTeamMaxTemplates}
	if c.TeamLimits != want {
		t.Errorf("defaults %+v, want %+v", c.TeamLimits, want)
	}
	c, err = Parse([]string{"--team-max-templates", "3"}, append(required(),
		"WRENN_TEAM_MAX_SANDBOXES=0", "WRENN_TEAM_MAX_VCPUS=8", "WRENN_TEAM_MAX_MEMORY_MB=16384", "WRENN_TEAM_MAX_DISK_MB=1"), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if want := (TeamLimits{MaxSandboxes: 0, MaxVCPUs: 8, MaxMemoryMB: 16384, MaxDiskMB: 1, MaxTemplates: 3}); c.TeamLimits != want {
		t.Errorf("set %+v, want %+v", c.TeamLimits, want)
	}
	for _, bad := range []string{"WRENN_TEAM_MAX_VCPUS=-1", "WRENN_TEAM_MAX_DISK_MB=lots", "WRENN_TEAM_MAX_SANDBOXES=2199023255552"} {
		_, err := Parse(nil, append(required(), bad), &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), strings.SplitN(bad, "=", 2)[0]) {
			t.Errorf("%s: err %v, want one naming it", bad, err)
		}
	}
}

package config

import (
	"errors"
	"strconv"
)

// TeamLimits are the per-team quotas every team gets unless a platform
// admin set its own (PUT /v1/teams/{id}/limits). 0 is unlimited.
type TeamLimits struct {
	// MaxSandboxes is WRENN_TEAM_MAX_SANDBOXES: sandboxes that exist
	// (starting, running, paused, hibernated).
	MaxSandboxes int64
	// MaxVCPUs is WRENN_TEAM_MAX_VCPUS: vCPUs of sandboxes that hold a VMM
	// (all but hibernated ones).
	MaxVCPUs int64
	// MaxMemoryMB is WRENN_TEAM_MAX_MEMORY_MB: guest memory of sandboxes
	// that hold a VMM.
	MaxMemoryMB int64
	// MaxDiskMB is WRENN_TEAM_MAX_DISK_MB: disk of every sandbox that
	// exists.
	MaxDiskMB int64
	// MaxTemplates is WRENN_TEAM_MAX_TEMPLATES: snapshot templates.
	MaxTemplates int64
}

// Default team limits: a shared service's fair share of a few hosts.
const (
	DefaultTeamMaxSandboxes = 20
	DefaultTeamMaxVCPUs     = 40
	DefaultTeamMaxMemoryMB  = 64 << 10  // 64 GiB
	DefaultTeamMaxDiskMB    = 200 << 10 // 200 GiB
	DefaultTeamMaxTemplates = 50
	// maxTeamLimit matches quota.MaxLimit (config does not import the
	// control plane's packages).
	maxTeamLimit = 1 << 40
)

func teamLimitSettings() []setting {
	limit := func(env, flag string, def int64, help string, dst func(*Config) *int64) setting {
		return setting{env: env, flag: flag, def: strconv.FormatInt(def, 10), help: help + " per team (0: unlimited)",
			set: func(c *Config, v string) error {
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil || n < 0 || n > maxTeamLimit {
					return errors.New("want a whole number from 0 (unlimited) to 1099511627776")
				}
				*dst(c) = n
				return nil
			}}
	}
	return []setting{
		limit("WRENN_TEAM_MAX_SANDBOXES", "team-max-sandboxes", DefaultTeamMaxSandboxes, "sandboxes that exist",
			func(c *Config) *int64 { return &c.TeamLimits.MaxSandboxes }),
		limit("WRENN_TEAM_MAX_VCPUS", "team-max-vcpus", DefaultTeamMaxVCPUs, "vCPUs of sandboxes not hibernated",
			func(c *Config) *int64 { return &c.TeamLimits.MaxVCPUs }),
		limit("WRENN_TEAM_MAX_MEMORY_MB", "team-max-memory-mb", DefaultTeamMaxMemoryMB, "MiB of guest memory of sandboxes not hibernated",
			func(c *Config) *int64 { return &c.TeamLimits.MaxMemoryMB }),
		limit("WRENN_TEAM_MAX_DISK_MB", "team-max-disk-mb", DefaultTeamMaxDiskMB, "MiB of sandbox disk",
			func(c *Config) *int64 { return &c.TeamLimits.MaxDiskMB }),
		limit("WRENN_TEAM_MAX_TEMPLATES", "team-max-templates", DefaultTeamMaxTemplates, "snapshot templates",
			func(c *Config) *int64 { return &c.TeamLimits.MaxTemplates }),
	}
}

// teamLimitValues are the team limits for LogValue.
func (c Config) teamLimitValues() map[string]string {
	f := func(n int64) string { return strconv.FormatInt(n, 10) }
	return map[string]string{
		"WRENN_TEAM_MAX_SANDBOXES": f(c.TeamLimits.MaxSandboxes),
		"WRENN_TEAM_MAX_VCPUS":     f(c.TeamLimits.MaxVCPUs),
		"WRENN_TEAM_MAX_MEMORY_MB": f(c.TeamLimits.MaxMemoryMB),
		"WRENN_TEAM_MAX_DISK_MB":   f(c.TeamLimits.MaxDiskMB),
		"WRENN_TEAM_MAX_TEMPLATES": f(c.TeamLimits.MaxTemplates),
	}
}

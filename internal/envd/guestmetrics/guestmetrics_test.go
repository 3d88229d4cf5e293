package guestmetrics

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

const meminfo = `MemTotal:        1000 kB
MemFree:          100 kB
MemAvailable:     250 kB
Buffers:           10 kB
`

func TestParseStat(t *testing.T) {
	tests := []struct {
		name        string
		in          string
		busy, total uint64
		cpus        int
		wantErr     bool
	}{
		{
			name: "two cpus with guest columns",
			in:   "cpu  10 0 10 70 10 0 0 0 5 5\ncpu0 5 0 5 35 5 0 0 0 0 0\ncpu1 5 0 5 35 5 0 0 0 0 0\nintr 1 2\n",
			busy: 20, total: 100, cpus: 2,
		},
		{
			name: "no iowait column",
			in:   "cpu 1 2 3 4\ncpu0 1 2 3 4\n",
			busy: 6, total: 10, cpus: 1,
		},
		{
			name: "five fields",
			in:   "cpu 1 2 3 4 0\ncpu0 1 2 3 4 0\n",
			busy: 6, total: 10, cpus: 1,
		},
		{name: "three fields", in: "cpu 1 2 3\ncpu0 1 2 3\n", wantErr: true},
		{name: "no aggregate line", in: "cpu0 1 2 3 4 5\n", wantErr: true},
		{name: "no per-cpu lines", in: "cpu 1 2 3 4 5\n", wantErr: true},
		{name: "garbage number", in: "cpu 1 x 3 4 5\ncpu0 1 2 3 4 5\n", wantErr: true},
		{name: "empty", in: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			busy, total, cpus, err := parseStat([]byte(tt.in))
			if tt.wantErr {
				if err == nil {
					t.Fatalf("parseStat = %d, %d, %d, want error", busy, total, cpus)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseStat: %v", err)
			}
			if busy != tt.busy || total != tt.total || cpus != tt.cpus {
				t.Errorf("parseStat = busy %d total %d cpus %d, want %d %d %d", busy, total, cpus, tt.busy, tt.total, tt.cpus)
			}
		})
	}
}

func TestParseMemInfo(t *testing.T) {
	tests := []struct {
		name        string
		in          string
		total, used uint64
		wantErr     bool
	}{
		{name: "normal", in: meminfo, total: 1000 * 1024, used: 750 * 1024},
		{name: "available above total is clamped", in: "MemTotal: 10 kB\nMemAvailable: 20 kB\n", total: 10240, used: 0},
		{name: "missing available", in: "MemTotal: 10 kB\n", wantErr: true},
		{name: "bad number", in: "MemTotal: ten kB\nMemAvailable: 1 kB\n", wantErr: true},
		{name: "empty value", in: "MemTotal:\nMemAvailable: 1 kB\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			total, used, err := parseMemInfo([]byte(tt.in))
			if tt.wantErr {
				if err == nil {
					t.Fatalf("parseMemInfo = %d, %d, want error", total, used)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseMemInfo: %v", err)
			}
			if total != tt.total || used != tt.used {
				t.Errorf("parseMemInfo = %d, %d, want %d, %d", total, used, tt.total, tt.used)
			}
		})
	}
}

// TestSamplerCPUDelta checks that CPU usage is measured between samples,
// not since boot, once there is a previous sample.
func TestSamplerCPUDelta(t *testing.T) {
	dir := t.TempDir()
	stat := filepath.Join(dir, "stat")
	mem := filepath.Join(dir, "meminfo")
	write := func(p, s string) {
		t.Helper()
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(mem, meminfo)
	now := time.Unix(1700000000, 0)
	s := New(Config{ProcStat: stat, MemInfo: mem, DiskPath: dir, Now: func() time.Time { return now }})

	steps := []struct {
		name string
		stat string
		want float64
	}{
		// busy 25 of 100 since boot.
		{name: "first sample is the boot average", stat: "cpu 20 0 5 75 0 0 0 0\ncpu0 20 0 5 75 0 0 0 0\n", want: 25},
		// +90 busy, +10 idle.
		{name: "second sample is the delta", stat: "cpu 100 0 15 85 0 0 0 0\ncpu0 100 0 15 85 0 0 0 0\n", want: 90},
		{name: "no ticks elapsed", stat: "cpu 100 0 15 85 0 0 0 0\ncpu0 100 0 15 85 0 0 0 0\n", want: 0},
		// Counters went backwards, as after restoring another boot's snapshot.
		{name: "counters reset", stat: "cpu 1 0 1 2 0 0 0 0\ncpu0 1 0 1 2 0 0 0 0\n", want: 50},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			write(stat, st.stat)
			m, err := s.Sample()
			if err != nil {
				t.Fatalf("Sample: %v", err)
			}
			if m.CPUUsedPct != st.want {
				t.Errorf("cpu_used_pct = %v, want %v", m.CPUUsedPct, st.want)
			}
			if m.TS != now.Unix() || m.CPUCount != 1 || m.MemTotal != 1000*1024 || m.MemUsed != 750*1024 {
				t.Errorf("Sample = %+v", m)
			}
		})
	}
}

func TestSamplerErrors(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "meminfo")
	if err := os.WriteFile(good, []byte(meminfo), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  Config
	}{
		{name: "missing stat", cfg: Config{ProcStat: filepath.Join(dir, "nope"), MemInfo: good}},
		{name: "missing meminfo", cfg: Config{MemInfo: filepath.Join(dir, "nope")}},
		{name: "missing disk", cfg: Config{MemInfo: good, DiskPath: filepath.Join(dir, "nope")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if m, err := New(tt.cfg).Sample(); err == nil {
				t.Errorf("Sample = %+v, want error", m)
			}
		})
	}
}

// TestSampleRealSystem reads this machine's /proc and root filesystem.
func TestSampleRealSystem(t *testing.T) {
	s := New(Config{})
	for i := range 2 {
		m, err := s.Sample()
		if err != nil {
			t.Fatalf("Sample %d: %v", i, err)
		}
		if m.CPUCount <= 0 || m.CPUUsedPct < 0 || m.CPUUsedPct > 100 {
			t.Errorf("cpu: %+v", m)
		}
		if m.MemTotal == 0 || m.MemUsed == 0 || m.MemUsed > m.MemTotal {
			t.Errorf("memory: %+v", m)
		}
		if m.DiskTotal == 0 || m.DiskUsed == 0 || m.DiskUsed > m.DiskTotal {
			t.Errorf("disk: %+v", m)
		}
		if d := time.Since(time.Unix(m.TS, 0)); d < -time.Second || d > time.Minute {
			t.Errorf("ts %d is %v from now", m.TS, d)
		}
	}
}

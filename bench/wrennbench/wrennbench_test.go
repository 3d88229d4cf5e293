package main

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestSummarize(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		var d []time.Duration
		for _, x := range v {
			d = append(d, time.Duration(x)*time.Millisecond)
		}
		return d
	}
	tests := []struct {
		name          string
		in            []time.Duration
		p50, p95, max time.Duration
	}{
		{"empty", nil, 0, 0, 0},
		{"one", ms(7), 7 * time.Millisecond, 7 * time.Millisecond, 7 * time.Millisecond},
		{"ten unsorted: p95 is the largest", ms(10, 1, 9, 2, 8, 3, 7, 4, 6, 5), 5 * time.Millisecond, 10 * time.Millisecond, 10 * time.Millisecond},
		{"twenty: p95 is the 19th", ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20), 10 * time.Millisecond, 19 * time.Millisecond, 20 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := summarize(tt.in)
			if s.P50 != tt.p50 || s.P95 != tt.p95 || s.Max != tt.max || s.N != len(tt.in) {
				t.Fatalf("summarize = %+v, want p50 %v p95 %v max %v n %d", s, tt.p50, tt.p95, tt.max, len(tt.in))
			}
		})
	}
}

func TestJudge(t *testing.T) {
	base := durations("bare", "bare", []time.Duration{100 * time.Millisecond, 100 * time.Millisecond})
	broken := (&Figure{Key: "broken"}).failed(io.EOF)
	by := map[string]*Figure{"bare": base, "broken": broken}
	tests := []struct {
		name      string
		fig       *Figure
		want      string
		wantRatio float64
	}{
		{"absolute pass", durations("a", "a", []time.Duration{10 * time.Millisecond}).atMost(20), Pass, 0},
		{"absolute miss", durations("a", "a", []time.Duration{30 * time.Millisecond}).atMost(20), Miss, 0},
		{"relative pass at the limit", durations("r", "r", []time.Duration{120 * time.Millisecond}).against("bare", 1.2), Pass, 1.2},
		{"relative miss", durations("r", "r", []time.Duration{121 * time.Millisecond}).against("bare", 1.2), Miss, 1.21},
		{"ratio without goal", durations("i", "i", []time.Duration{50 * time.Millisecond}).against("bare", 0), NoGoal, 0.5},
		{"no samples with a goal", durations("e", "e", nil).atMost(20), Failed, 0},
		{"baseline not measured", durations("r", "r", []time.Duration{time.Millisecond}).against("broken", 1.2), Failed, 0},
		{"baseline absent from the run", durations("r", "r", []time.Duration{time.Millisecond}).against("nowhere", 1.2), Failed, 0},
		{"percent", values("m", "m", "%", []float64{35}).atMost(40), Pass, 0},
		{"skipped stays skipped", skipped("s", "s", "no runsc").atMost(20), Skip, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fig.judge(by)
			if tt.fig.Result != tt.want {
				t.Fatalf("result = %s, want %s (%+v)", tt.fig.Result, tt.want, tt.fig)
			}
			if d := tt.fig.Ratio - tt.wantRatio; d > 1e-9 || d < -1e-9 {
				t.Fatalf("ratio = %v, want %v", tt.fig.Ratio, tt.wantRatio)
			}
		})
	}
}

func TestWriteText(t *testing.T) {
	r := fixedReport()
	var b bytes.Buffer
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"accelerator tcg (no kvm)",
		"≤ 1.2× bare-restore = 240 ms", "200 ms (bare-restore)", "1.50×", "MISS",
		"≤ 20 ms", "PASS", "SKIP", "runsc is not installed",
		"step restore", "250 ms", "1.25× runsc-true",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestParseSmapsRollup(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Pss
		wantErr bool
	}{
		{"kernel 6", "00400000-7ffd [rollup]\nRss:              204800 kB\nPss:              102400 kB\nPss_Anon:          51200 kB\nPss_File:          10240 kB\nPss_Shmem:         40960 kB\n",
			Pss{Total: 100 << 20, Shmem: 40 << 20}, false},
		{"no shmem line", "Pss: 1024 kB\n", Pss{Total: 1 << 20}, false},
		{"no pss", "Rss: 1 kB\n", Pss{}, true},
		{"garbage number", "Pss: x kB\n", Pss{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseSmapsRollup([]byte(tt.in))
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("parse = %+v, %v; want %+v, error %t", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestParseCPUTime(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want time.Duration
	}{
		{"plain", "123 (qemu-system-x86) S 1 2 3 4 5 6 7 8 9 10 150 50 0 0 20 0", 2 * time.Second},
		{"name with spaces and parens", "9 (a (b) c) R 1 2 3 4 5 6 7 8 9 10 1 2 0 0", 30 * time.Millisecond},
		{"truncated", "9 (x) R 1 2", 0},
		{"not stat", "nonsense", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseCPUTime([]byte(tt.in)); got != tt.want {
				t.Fatalf("parseCPUTime = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseTBCount(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want int
	}{
		{"qemu 7.2", "Translation buffer state:\ngen code size       1234/5678\nTB count            17912\nTB avg target size  13 max=1234 bytes\n", 17912},
		{"absent", "Translation buffer state:\n", -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseTBCount(tt.in); got != tt.want {
				t.Fatalf("parseTBCount = %d, want %d", got, tt.want)
			}
		})
	}
}

// TestPhaseHandler: plan's Debug "step done" lines and other records'
// duration attributes become phases, also through With; records still
// reach the next handler at its own level.
func TestPhaseHandler(t *testing.T) {
	p := &phases{}
	var out bytes.Buffer
	log := slog.New(&phaseHandler{next: slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelInfo}), p: p})
	log.With("sandbox_id", "x").Debug("step done", "step", "restore", "skipped", false, "duration", 3*time.Millisecond)
	log.With("step", "envd").Debug("step done", "duration", 5*time.Millisecond)
	log.Info("vm restored", "state_loaded", 7*time.Millisecond, "duration", 9*time.Millisecond)
	log.Info("no durations", "n", 1)

	got := map[string]time.Duration{}
	for _, ph := range p.since(0) {
		got[ph.key] = ph.d
	}
	want := map[string]time.Duration{
		"step restore":             3 * time.Millisecond,
		"step envd":                5 * time.Millisecond,
		"vm restored.state_loaded": 7 * time.Millisecond,
		"vm restored":              9 * time.Millisecond,
	}
	if len(got) != len(want) {
		t.Fatalf("phases = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("phase %q = %v, want %v", k, got[k], v)
		}
	}
	if strings.Contains(out.String(), "step done") || !strings.Contains(out.String(), "vm restored") {
		t.Errorf("next handler got the wrong records:\n%s", out.String())
	}
	stats := stepStats(p.between(0, 2))
	if len(stats) != 2 || stats[0].Name != "step restore" || stats[0].P50 != 3 {
		t.Errorf("stepStats = %+v", stats)
	}
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		check   func(Config) bool
		wantErr bool
	}{
		{"full defaults", nil, func(c Config) bool {
			return c.Samples == 10 && c.Forks == 10 && slices.Equal(c.Concurrency, []int{1, 5, 20}) && c.MemoryMB == 512 && c.Net == -1 &&
				c.DensityBudgetMB == 8192 && c.DensityMax == 64 && c.Stack && c.Only == nil
		}, false},
		{"quick", []string{"--quick"}, func(c Config) bool {
			return c.Samples == 3 && c.Forks == 3 && slices.Equal(c.Concurrency, []int{1, 4}) && c.DensityMax == 2 && c.RPSDuration == 2*time.Second
		}, false},
		{"quick with override", []string{"--quick", "--forks", "10", "--concurrent", "20"}, func(c Config) bool {
			return c.Forks == 10 && c.Samples == 3 && slices.Equal(c.Concurrency, []int{20})
		}, false},
		{"only", []string{"--only", "^(bare-qemu|create)$"}, func(c Config) bool { return c.Only.MatchString("create") && !c.Only.MatchString("fork") }, false},
		{"bad only", []string{"--only", "("}, nil, true},
		{"bad concurrency", []string{"--concurrent", "1,x"}, nil, true},
		{"zero density budget", []string{"--density-budget-mb", "0"}, nil, true},
		{"too many forks", []string{"--forks", "33"}, nil, true},
		{"negative samples", []string{"--samples", "-1"}, nil, true},
		{"bad accel", []string{"--accel", "hvf"}, nil, true},
		{"bad net", []string{"--net", "25"}, nil, true},
		{"stray argument", []string{"now"}, nil, true},
		{"unknown flag", []string{"--fast"}, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseFlags(tt.args, io.Discard)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseFlags(%q) error = %v, want error %t", tt.args, err, tt.wantErr)
			}
			if err == nil && !tt.check(c) {
				t.Fatalf("parseFlags(%q) = %+v", tt.args, c)
			}
		})
	}
}

// TestCopySparse: data extents are copied, holes stay holes, the size is
// kept, and an existing destination is refused.
func TestCopySparse(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	const size = 8 << 20
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("wrenn"), 1000)
	for _, off := range []int64{0, 4 << 20} {
		if _, err := f.WriteAt(data, off); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	if err := copySparse(src, dst); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(src)
	b, _ := os.ReadFile(dst)
	if !bytes.Equal(a, b) || len(b) != size {
		t.Fatalf("copy differs from source (len %d)", len(b))
	}
	if n, err := allocated(dst); err != nil || n >= size/2 {
		t.Fatalf("copy holds %d bytes (%v): holes were filled", n, err)
	}
	if err := copySparse(src, dst); err == nil {
		t.Fatal("copy over an existing file succeeded")
	}
}

func TestOutsideSteps(t *testing.T) {
	ms := time.Millisecond
	ps := []phase{{"step network", 10 * ms}, {"vm restored", 99 * ms}, {"step restore", 100 * ms}, {"sandbox resumed", 150 * ms}}
	got := outsideSteps(ps, "sandbox resumed", 170*ms)
	if len(got) != 2 || got[0].d != 20*ms || got[1].d != 40*ms {
		t.Fatalf("outsideSteps = %+v, want before 20ms, after 40ms", got)
	}
	if got := outsideSteps(ps[:3], "sandbox resumed", 170*ms); got != nil {
		t.Fatalf("without the logged total: %+v, want nothing", got)
	}
}

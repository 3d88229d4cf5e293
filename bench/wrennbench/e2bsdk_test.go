package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wrenn/wrenn/internal/devstack"
)

func e2bRun(v1, e2b []float64) []e2bSample {
	s := []e2bSample{
		{Variant: "e2b", Warmup: true, TotalMS: 5000, CreateMS: 4000, RunMS: 1000},
		{Variant: "v1", Warmup: true, TotalMS: 5000, CreateMS: 4000, RunMS: 1000},
	}
	for i := range v1 {
		s = append(s, e2bSample{Variant: "v1", I: i + 1, TotalMS: v1[i], CreateMS: v1[i] - 10, RunMS: 10})
		s = append(s, e2bSample{Variant: "e2b", I: i + 1, TotalMS: e2b[i], CreateMS: e2b[i] - 20, RunMS: 20})
	}
	return s
}

func TestE2BFiguresGoal(t *testing.T) {
	tests := []struct {
		name      string
		v1, e2b   []float64
		wantLimit float64
		want      string
	}{
		// Under 200 ms the 10 ms allowance is the larger one.
		{"small: +10 ms allowed, +9 passes", []float64{100, 100, 100}, []float64{109, 109, 109}, 110, Pass},
		{"small: +11 misses", []float64{100, 100, 100}, []float64{111, 111, 111}, 110, Miss},
		// Above it, 5%.
		{"large: +5% allowed", []float64{1000, 1000, 1000}, []float64{1050, 1040, 1049}, 1050, Pass},
		{"large: +6% misses", []float64{1000, 1000, 1000}, []float64{1060, 1060, 1060}, 1050, Miss},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sdk, v1 := e2bFigures()
			fillE2BFigures(sdk, v1, e2bRun(tt.v1, tt.e2b), []string{"v1 transport: x"}, "", nil)
			if sdk.N != len(tt.e2b) || v1.N != len(tt.v1) {
				t.Fatalf("N %d and %d: the warm-ups must not count", sdk.N, v1.N)
			}
			if sdk.GoalMax != tt.wantLimit {
				t.Fatalf("limit %v, want %v (goal %q)", sdk.GoalMax, tt.wantLimit, sdk.Goal)
			}
			rep := &Report{Figures: []*Figure{v1, sdk}}
			rep.judge()
			if sdk.Result != tt.want || sdk.BaselineP50 != tt.v1[0] {
				t.Fatalf("result %s against %v, want %s against %v", sdk.Result, sdk.BaselineP50, tt.want, tt.v1[0])
			}
			if len(sdk.Breakdown) != 2 || sdk.Breakdown[1].P50 != 20 || v1.Breakdown[1].P50 != 10 {
				t.Fatalf("breakdowns %+v %+v: want create and first run per variant", sdk.Breakdown, v1.Breakdown)
			}
			var diffNote bool
			for _, n := range sdk.Notes {
				diffNote = diffNote || strings.HasPrefix(n, "compat layer at p50:")
			}
			if !diffNote {
				t.Fatalf("no note with the difference at p50: %q", sdk.Notes)
			}
			if d := pairedDiffs(e2bRun(tt.v1, tt.e2b)); len(d) != len(tt.v1) || ms(d[0]) != tt.e2b[0]-tt.v1[0] {
				t.Fatalf("paired differences %v: want one per timed round, e2b − v1", d)
			}
		})
	}
}

func TestE2BFiguresFailure(t *testing.T) {
	sdk, v1 := e2bFigures()
	// The SDK's first timed sample failed: /v1 got one sample, the SDK none.
	samples := e2bRun(nil, nil)
	samples = append(samples, e2bSample{Variant: "v1", I: 1, TotalMS: 900})
	fillE2BFigures(sdk, v1, samples, nil, "e2b", errors.New("E2B SDK driver, e2b sample 1: SandboxException: 502"))
	rep := &Report{Figures: []*Figure{v1, sdk}}
	rep.judge()
	if sdk.Result != Failed || !strings.Contains(sdk.Error, "502") {
		t.Errorf("SDK figure %s %q, want the driver's error", sdk.Result, sdk.Error)
	}
	if v1.Result != Failed || !strings.HasPrefix(v1.Error, "stopped with the other variant") || v1.N != 1 {
		t.Errorf("/v1 figure %s %q N %d, want stopped with the other variant, its sample kept", v1.Result, v1.Error, v1.N)
	}
}

// TestRunE2BDriver runs the driver protocol with a shell script standing in
// for Python: what the driver is given, and what is made of its output.
func TestRunE2BDriver(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh to stand in for python")
	}
	dir := t.TempDir()
	script := filepath.Join(dir, "driver.sh")
	body := `echo "{\"info\": \"args\", \"value\": \"$*\"}"
echo "{\"info\": \"env\", \"value\": \"$E2B_API_URL $E2B_SANDBOX_URL $E2B_API_KEY $WRENN_API_URL $WRENN_API_KEY $E2B_DOMAIN\"}"
echo '{"variant": "e2b", "i": 0, "warmup": true, "total_ms": 9, "create_ms": 5, "run_ms": 4}'
echo '{"variant": "v1", "i": 1, "total_ms": 7.5, "create_ms": 5, "run_ms": 2.5}'
echo '{"error": "RuntimeError: boom", "variant": "e2b", "i": 1}'
echo 'traceback text' >&2
exit 1
`
	if err := os.WriteFile(script, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("E2B_DOMAIN", "e2b.app") // the caller's own setting must not reach the driver
	st := &devstack.Stack{URL: "http://127.0.0.1:1", Admin: devstack.Admin{APIKey: "wrn_x", E2BKey: "e2b_y"}}
	samples, info, failed, err := runE2BDriver(context.Background(), sh, script, 3, st)
	if len(samples) != 2 || samples[1].Variant != "v1" || samples[1].TotalMS != 7.5 || !samples[0].Warmup {
		t.Errorf("samples %+v", samples)
	}
	want := []string{"args: --n 3 --template " + stackTemplate, "env: http://127.0.0.1:1 http://127.0.0.1:1 e2b_y http://127.0.0.1:1 wrn_x "}
	if strings.Join(info, "\n") != strings.Join(want, "\n") {
		t.Errorf("info %q, want %q", info, want)
	}
	if failed != "e2b" || err == nil || !strings.Contains(err.Error(), "boom") || !strings.Contains(err.Error(), "traceback text") {
		t.Errorf("failed %q, err %v: want the e2b sample's error with the driver's stderr", failed, err)
	}
}

func TestPinned(t *testing.T) {
	if v := pinned(e2bRequirements, "e2b"); v != "2.63.0" {
		t.Fatalf("the embedded requirements pin e2b %q, want 2.63.0 (issue 12)", v)
	}
}

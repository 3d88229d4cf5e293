package main

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// fixedReport is a judged report from a fixed sample set that covers every
// kind of figure: a baseline, relative and absolute goals (pass and miss),
// a percentage, a rate, a transfer, a skip, an error, notes, breakdowns,
// and text that needs escaping in Markdown and XML.
func fixedReport() *Report {
	msd := func(v ...float64) []time.Duration {
		var d []time.Duration
		for _, x := range v {
			d = append(d, time.Duration(x*float64(time.Millisecond)))
		}
		return d
	}
	base := durations("bare-restore", "bare QEMU restore → first /health 204", msd(200, 210, 190)).in(GroupBaseline)
	runsc := durations("runsc-true", "gVisor `runsc do /bin/true`", msd(240, 250)).in(GroupBaseline)
	create := durations("create", "Wrenn create <from> template & \"exec\" | pipe", msd(300, 310, 290, 350)).in(GroupWrenn).against("bare-restore", 1.2).also("runsc-true")
	create.Breakdown = []StepStat{{Name: "step restore", N: 1, P50: 250, P95: 250, Max: 250}}
	create.note("a note with | a pipe\nand a newline")
	pause := durations("pause", "Wrenn pause", msd(5, 6, 4)).in(GroupWrenn).atMost(20)
	mem := values("mem-c4", "memory of 4 idle sandboxes", "%", []float64{14}).in(GroupWrenn).atMost(40)
	upload := durations("upload-1m", "upload 1 MiB", msd(20, 25)).in(GroupWrenn)
	upload.Bytes = 1 << 20
	rps := values("cp-list-rps", "GET /v1/sandboxes", "req/s", []float64{120, 130}).in(GroupCP)
	skip := skipped("exec-rest", "exec via REST", "runsc is not installed").in(GroupCP)
	broken := durations("fork10", "fork ×10", nil).in(GroupWrenn).atMost(2000).failed(errors.New("fork: no space left"))
	r := &Report{
		Command: "sudo go run ./bench/wrennbench --quick", Mode: "quick",
		Started: time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC), Seconds: 170,
		Machine: Machine{CPU: "AMD EPYC", Cores: 2, MemoryBytes: 24 << 30, Accel: "tcg", AccelReason: "no kvm", GoVersion: "go1.26", GitCommit: "abc123"},
		Figures: []*Figure{base, runsc, create, pause, mem, upload, rps, skip, broken},
	}
	r.judge()
	return r
}

// TestWriteJSON: the JSON is valid, round-trips, and keeps every figure
// with its percentiles and result.
func TestWriteJSON(t *testing.T) {
	r := fixedReport()
	path := filepath.Join(t.TempDir(), "results", "run.json")
	if err := r.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !json.Valid(b) {
		t.Fatalf("invalid JSON:\n%s", b)
	}
	back, err := ReadJSON(path)
	if err != nil {
		t.Fatal(err)
	}
	// A saved report judges the same way again (--render).
	back.judge()
	if len(back.Figures) != len(r.Figures) {
		t.Fatalf("figures = %d, want %d", len(back.Figures), len(r.Figures))
	}
	got := back.byKey()
	if c := got["create"]; c.Result != Miss || c.P99 != 350 || c.N != 4 || c.BaselineP50 != 200 || len(c.Comparisons) != 1 {
		t.Errorf("create = %+v", c)
	}
	if s := got["exec-rest"]; s.Result != Skip || s.Error == "" {
		t.Errorf("exec-rest = %+v", s)
	}
}

// TestWriteMarkdown: every table row has its header's column count, every
// plot the report links exists and is well-formed SVG, and the sections
// and results are there.
func TestWriteMarkdown(t *testing.T) {
	r := fixedReport()
	dir := t.TempDir()
	plotDir := filepath.Join(dir, "benchmarks")
	plots, err := r.WritePlots(plotDir)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := r.WriteMarkdown(&b, "benchmarks", plots, "The profile showed **X**."); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, want := range []string{
		"# Wrenn benchmarks", "## Machine", "## Goals (snapshot issue)", "## Figures", "## Plots", "## Details",
		"## What the profiles show", "The profile showed **X**.", "## Not measured in this run",
		"sudo go run ./bench/wrennbench --quick", "**MISS**", "**PASS**", "SKIP", "ERROR", "50.0 MiB/s at p50",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q", want)
		}
	}
	checkTables(t, md)
	links := regexp.MustCompile(`!\[[^\]]*\]\(([^)]+)\)`).FindAllStringSubmatch(md, -1)
	if len(links) == 0 || len(links) != len(plots) {
		t.Fatalf("plot links = %d, plots = %d", len(links), len(plots))
	}
	for _, l := range links {
		checkSVG(t, filepath.Join(dir, l[1]))
	}
}

// checkTables checks each Markdown table: a header, a separator with as
// many columns, and rows with as many cells (escaped pipes are not
// separators).
func checkTables(t *testing.T, md string) {
	t.Helper()
	cells := func(line string) int {
		line = strings.ReplaceAll(line, `\|`, "")
		return strings.Count(line, "|") - 1
	}
	lines := strings.Split(md, "\n")
	tables := 0
	for i := 0; i < len(lines); i++ {
		if !strings.HasPrefix(lines[i], "|") {
			continue
		}
		tables++
		want := cells(lines[i])
		if i+1 >= len(lines) || !strings.HasPrefix(lines[i+1], "|---") || cells(lines[i+1]) != want {
			t.Fatalf("table at line %d has no separator of %d columns:\n%s\n%s", i+1, want, lines[i], lines[min(i+1, len(lines)-1)])
		}
		for i += 2; i < len(lines) && strings.HasPrefix(lines[i], "|"); i++ {
			if got := cells(lines[i]); got != want {
				t.Fatalf("line %d has %d cells, want %d: %s", i+1, got, want, lines[i])
			}
		}
	}
	if tables < 5 {
		t.Fatalf("found %d tables, want at least 5", tables)
	}
}

// checkSVG parses an SVG file as XML to the end and checks its root.
func checkSVG(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	d := xml.NewDecoder(bytes.NewReader(b))
	root := ""
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s is not well-formed XML: %v", path, err)
		}
		if se, ok := tok.(xml.StartElement); ok && root == "" {
			root = se.Name.Local
		}
	}
	if root != "svg" {
		t.Fatalf("%s: root element %q, want svg", path, root)
	}
}

// TestWriteCDF: odd inputs still give well-formed SVG.
func TestWriteCDF(t *testing.T) {
	tests := []struct {
		name string
		ss   []series
	}{
		{"one sample", []series{{"a", []float64{3}}}},
		{"all zero", []series{{"a", []float64{0, 0}}}},
		{"no series", nil},
		{"empty series dropped", []series{{"a", nil}, {"b <&>", []float64{1, 2, 3}}}},
		{"non-finite ignored for the axis", []series{{"a", []float64{1, math.Inf(1), 2}}}},
		{"more series than colours", []series{{"a", []float64{1}}, {"b", []float64{2}}, {"c", []float64{3}}, {"d", []float64{4}}, {"e", []float64{5}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "p.svg")
			var b bytes.Buffer
			if err := writeCDF(&b, "title \"quoted\" & <tagged>", "ms", tt.ss); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			checkSVG(t, path)
		})
	}
}

func TestNiceStep(t *testing.T) {
	tests := []struct {
		max  float64
		want float64
	}{{600, 100}, {1, 0.2}, {13000, 5000}, {0, 1}, {7, 2}}
	for _, tt := range tests {
		if got := niceStep(tt.max, 6); math.Abs(got-tt.want) > 1e-9 {
			t.Errorf("niceStep(%v) = %v, want %v", tt.max, got, tt.want)
		}
	}
}

func TestCommandLine(t *testing.T) {
	tests := []struct {
		argv []string
		want string
	}{
		{[]string{"/tmp/go-build123/b001/exe/wrennbench", "--quick"}, "sudo go run ./bench/wrennbench --quick"},
		{[]string{"./wrennbench"}, "sudo ./wrennbench"},
		{nil, ""},
	}
	for _, tt := range tests {
		if got := commandLine(tt.argv); got != tt.want {
			t.Errorf("commandLine(%q) = %q, want %q", tt.argv, got, tt.want)
		}
	}
}

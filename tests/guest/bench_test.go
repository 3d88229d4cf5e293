//go:build linux

package guest_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/envdclient"
	"github.com/wrenn/wrenn/internal/testenv"
)

// BenchmarkBootToEnvdReady measures a cold boot: from asking the driver to
// start QEMU to envd's first 204 on /health over the sandbox's TAP. Network
// namespace and overlay creation, and teardown, are outside the timing. Run
// with -benchtime=5x (or more): each op is a whole VM.
func BenchmarkBootToEnvdReady(b *testing.B) {
	images := testenv.RequireVM(b)
	accel := testenv.Accel(images.Kernel.Path)
	b.Logf("accelerator %s (%s)", accel.Accel, accel.Reason)
	samples := make([]time.Duration, 0, b.N)
	b.StopTimer()
	for range b.N {
		g := prepareGuest(b, images)
		b.StartTimer()
		g.boot(b)
		ctx, cancel := context.WithTimeout(b.Context(), readyTimeout)
		err := g.probe.WaitReady(ctx)
		elapsed := time.Since(g.bootStart)
		cancel()
		b.StopTimer()
		if err != nil {
			b.Fatalf("envd not ready: %v\nconsole:\n%s", err, g.consoleTail())
		}
		samples = append(samples, elapsed)
		if err := g.close(); err != nil {
			b.Fatalf("tear down guest: %v", err)
		}
	}
	reportMedian(b, samples, "ms-median/boot")
}

// BenchmarkExecRoundTrip measures one `true` on a running guest: process
// Start until its End event arrives.
func BenchmarkExecRoundTrip(b *testing.B) {
	g := bootGuest(b, testenv.RequireVM(b))
	g.waitReady(b)
	ctx := b.Context()
	// Warm the connection so the first op does not pay for the TCP dial.
	if _, err := g.client.Run(ctx, envdclient.RunRequest{Cmd: "true"}); err != nil {
		b.Fatalf("warm-up run: %v", err)
	}
	samples := make([]time.Duration, 0, b.N)
	for b.Loop() {
		start := time.Now()
		res, err := g.client.Run(ctx, envdclient.RunRequest{Cmd: "true"})
		samples = append(samples, time.Since(start))
		if err != nil || res.ExitCode != 0 {
			b.Fatalf("run true: %+v %v", res, err)
		}
	}
	reportMedian(b, samples, "ms-median/exec")
}

func reportMedian(b *testing.B, samples []time.Duration, unit string) {
	if len(samples) == 0 {
		return
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	b.ReportMetric(float64(med)/float64(time.Millisecond), unit)
	b.Logf("%d samples, median %s, min %s, max %s", len(s), med.Round(time.Millisecond), s[0].Round(time.Millisecond), s[len(s)-1].Round(time.Millisecond))
}

package main

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"slices"
)

// A plot is an empirical CDF per series, drawn as plain SVG: the x axis is
// the figure's unit from 0, the y axis the fraction of samples at or below
// x. One step per sample, so every sample is visible, even with N = 3.

// series is one line of a plot.
type series struct {
	name   string
	values []float64
}

// palette: the figure first, its baseline second, then others.
var palette = [...]string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd"}

const (
	plotW, plotH                       = 560, 260
	marginL, marginR, marginT, marginB = 64, 20, 28, 44
	innerW, innerH                     = plotW - marginL - marginR, plotH - marginT - marginB
	legendRow                          = 16
	fontAttrs                          = `font-family="sans-serif" font-size="11"`
	axisColour, gridColour             = "#444", "#ddd"
	yTicks, xTicksWanted, tickLen      = 4, 6, 4
)

// writeCDF draws the series as one SVG document.
func writeCDF(w io.Writer, title, unit string, ss []series) error {
	ss = slices.DeleteFunc(slices.Clone(ss), func(s series) bool { return len(s.values) == 0 })
	if len(ss) > len(palette) {
		ss = ss[:len(palette)]
	}
	xmax := 0.0
	for _, s := range ss {
		for _, v := range s.values {
			if !math.IsNaN(v) && !math.IsInf(v, 0) {
				xmax = max(xmax, v)
			}
		}
	}
	step := niceStep(xmax, xTicksWanted)
	xmax = math.Ceil(xmax/step) * step
	if xmax <= 0 {
		xmax, step = 1, 0.25
	}
	height := plotH + legendRow*len(ss)
	x := func(v float64) float64 { return marginL + innerW*math.Max(0, math.Min(v, xmax))/xmax }
	y := func(q float64) float64 { return marginT + innerH*(1-q) }

	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d">`+"\n", plotW, height, plotW, height)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", plotW, height)
	fmt.Fprintf(&b, `<text x="%d" y="%d" %s font-weight="bold">%s</text>`+"\n", marginL, 18, fontAttrs, esc(title))
	// Grid and axes.
	for i := 0; i <= yTicks; i++ {
		q := float64(i) / yTicks
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="%s"/>`+"\n", marginL, y(q), marginL+innerW, y(q), gridColour)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" %s text-anchor="end">%s</text>`+"\n", marginL-tickLen-2, y(q)+4, fontAttrs, esc(fmt.Sprintf("%.0f%%", 100*q)))
	}
	for v := 0.0; v <= xmax+step/2; v += step {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s"/>`+"\n", x(v), marginT, x(v), marginT+innerH, gridColour)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" %s text-anchor="middle">%s</text>`+"\n", x(v), marginT+innerH+tickLen+12, fontAttrs, esc(num(v)))
	}
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s"/>`+"\n", marginL, marginT+innerH, marginL+innerW, marginT+innerH, axisColour)
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s"/>`+"\n", marginL, marginT, marginL, marginT+innerH, axisColour)
	fmt.Fprintf(&b, `<text x="%d" y="%d" %s text-anchor="middle">%s</text>`+"\n", marginL+innerW/2, plotH-marginB+30, fontAttrs, esc(unit))
	// One step line per series, then its legend entry.
	for i, s := range ss {
		v := slices.Clone(s.values)
		slices.Sort(v)
		n := float64(len(v))
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="%.1f" points="`, palette[i], 1.6)
		fmt.Fprintf(&b, "%.1f,%.1f", x(v[0]), y(0))
		for k, val := range v {
			fmt.Fprintf(&b, " %.1f,%.1f %.1f,%.1f", x(val), y(float64(k)/n), x(val), y(float64(k+1)/n))
		}
		b.WriteString(`"/>` + "\n")
		ly := plotH + legendRow*i
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="3" fill="%s"/>`+"\n", marginL, ly-5, 14, palette[i])
		fmt.Fprintf(&b, `<text x="%d" y="%d" %s>%s</text>`+"\n", marginL+20, ly, fontAttrs,
			esc(fmt.Sprintf("%s (N=%d, p50 %s %s)", s.name, len(v), num(rank(v, 0.5)), unit)))
	}
	b.WriteString("</svg>\n")
	_, err := w.Write(b.Bytes())
	return err
}

// niceStep is a 1-2-5 step that cuts [0, max] into about n ticks.
func niceStep(max float64, n int) float64 {
	if max <= 0 || math.IsNaN(max) || math.IsInf(max, 0) {
		return 1
	}
	raw := max / float64(n)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if raw <= m*mag {
			return m * mag
		}
	}
	return 10 * mag
}

// esc escapes text for SVG.
func esc(s string) string {
	var b bytes.Buffer
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

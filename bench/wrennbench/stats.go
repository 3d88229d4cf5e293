package main

import (
	"math"
	"slices"
	"time"
)

// Summary is a sample's distribution. Percentiles are nearest-rank: p95 of
// ten samples is the largest, never an interpolation between two.
type Summary struct {
	N   int           `json:"n"`
	P50 time.Duration `json:"p50_ns"`
	P95 time.Duration `json:"p95_ns"`
	Min time.Duration `json:"min_ns"`
	Max time.Duration `json:"max_ns"`
}

// summarize returns the distribution of d (which it does not modify); an
// empty sample is the zero Summary.
func summarize(d []time.Duration) Summary {
	if len(d) == 0 {
		return Summary{}
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return Summary{N: len(s), P50: rank(s, 0.50), P95: rank(s, 0.95), Min: s[0], Max: s[len(s)-1]}
}

// rank is the nearest-rank q-quantile of sorted s: the smallest value with
// at least q of the sample at or below it.
func rank[T any](s []T, q float64) T {
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[max(0, min(len(s)-1, i))]
}

func sortFloats(s []float64) { slices.Sort(s) }

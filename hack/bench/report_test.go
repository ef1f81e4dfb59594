package main

import (
	"math"
	"reflect"
	"testing"
)

func TestSummarize(t *testing.T) {
	nan := math.NaN()
	for _, tc := range []struct {
		name           string
		upstream, ours []float64
		wantUpstream   *float64
		wantOurs       *float64
		wantRatio      *Spread
	}{
		{
			name:     "three runs: medians, and the ratio taken within each run",
			upstream: []float64{10, 20, 40}, ours: []float64{5, 30, 20},
			wantUpstream: ptr(20), wantOurs: ptr(20),
			wantRatio: &Spread{Median: 0.5, Min: 0.5, Max: 1.5},
		},
		{
			name:     "even count: the mean of the middle two",
			upstream: []float64{1, 2, 3, 4}, ours: []float64{2, 4, 6, 8},
			wantUpstream: ptr(2.5), wantOurs: ptr(5),
			wantRatio: &Spread{Median: 2, Min: 2, Max: 2},
		},
		{
			name:     "a figure not taken in one run leaves that run's ratio out",
			upstream: []float64{10, 10, 10}, ours: []float64{20, nan, 30},
			wantUpstream: ptr(10), wantOurs: ptr(25),
			wantRatio: &Spread{Median: 2.5, Min: 2, Max: 3},
		},
		{
			name:     "upstream at zero: no ratio",
			upstream: []float64{0, 0, 0}, ours: []float64{1, 2, 3},
			wantUpstream: ptr(0), wantOurs: ptr(2),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := &Report{runs: len(tc.upstream)}
			for run := range tc.upstream {
				rep.add(run, "s", "m", "u", "upstream", tc.upstream[run])
				rep.add(run, "s", "m", "u", "ours", tc.ours[run])
			}
			rep.summarize()
			r := rep.Rows[0]
			if !reflect.DeepEqual(r.Upstream, tc.wantUpstream) || !reflect.DeepEqual(r.Ours, tc.wantOurs) {
				t.Errorf("medians: upstream %v, ours %v; want %v, %v", deref(r.Upstream), deref(r.Ours), deref(tc.wantUpstream), deref(tc.wantOurs))
			}
			if !reflect.DeepEqual(r.Ratio, tc.wantRatio) {
				t.Errorf("ratio %+v, want %+v", r.Ratio, tc.wantRatio)
			}
		})
	}
}

func ptr(v float64) *float64 { return &v }

func deref(v *float64) any {
	if v == nil {
		return nil
	}
	return *v
}

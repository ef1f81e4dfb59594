package main

import (
	"math"
	"testing"
	"time"
)

func TestServerQuantile(t *testing.T) {
	inf := math.Inf(1)
	before := histogram{0.005: 10, 0.025: 10, 0.05: 10, inf: 10}
	// 100 new requests: 50 under 5ms, 40 in (5ms, 25ms], 10 in (25ms, 50ms].
	after := histogram{0.005: 60, 0.025: 100, 0.05: 110, inf: 110}
	tests := []struct {
		q    float64
		want float64
	}{
		{0.5, 0.005},
		{0.7, 0.005 + 0.020*0.5},
		{0.95, 0.025 + 0.025*0.5},
		{1, 0.05},
	}
	for _, tt := range tests {
		if got := serverQuantile(before, after, tt.q); math.Abs(got-tt.want) > 1e-9 {
			t.Errorf("q=%v: got %v, want %v", tt.q, got, tt.want)
		}
	}
	if got := serverQuantile(before, before, 0.5); !math.IsNaN(got) {
		t.Errorf("no requests: got %v, want NaN", got)
	}
	// Requests beyond the last finite bucket report that bucket's bound.
	if got := serverQuantile(before, histogram{0.005: 10, 0.025: 10, 0.05: 10, inf: 20}, 0.99); got != 0.05 {
		t.Errorf("beyond last bucket: got %v, want 0.05", got)
	}
}

func TestLatencyQuantile(t *testing.T) {
	var l Latencies
	for i := 100; i >= 1; i-- {
		l = append(l, time.Duration(i)*time.Millisecond)
	}
	for q, want := range map[float64]time.Duration{0.5: 50 * time.Millisecond, 0.9: 90 * time.Millisecond, 0.99: 99 * time.Millisecond, 1: 100 * time.Millisecond} {
		if got := l.Quantile(q); got != want {
			t.Errorf("q=%v: got %v, want %v", q, got, want)
		}
	}
	if got := (Latencies{}).Quantile(0.5); got != 0 {
		t.Errorf("empty: got %v", got)
	}
}

func TestHeapAllocMiB(t *testing.T) {
	text := "heap profile: 1: 2 [3: 4] @ heap/1048576\n\n# runtime.MemStats\n# Alloc = 3145728\n# TotalAlloc = 9999999\n# HeapAlloc = 3145728\n# HeapSys = 8388608\n"
	if got, err := heapAllocMiB([]byte(text)); err != nil || got != 3 {
		t.Errorf("heapAllocMiB = %v, %v; want 3", got, err)
	}
	if _, err := heapAllocMiB([]byte("# Alloc = 1\n")); err == nil {
		t.Error("a profile without HeapAlloc: no error")
	}
}

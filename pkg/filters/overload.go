package filters

import (
	"context"
	"math"
	"net/http"
	"runtime/metrics"
	"slices"
	"sync/atomic"
	"time"

	"k8s.io/apiserver/pkg/endpoints/request"
)

// Load levels of OverloadShedder.
const (
	loadNormal = iota
	loadSoft
	loadHard
)

const (
	// schedulerSampleInterval is how often the scheduler-latency signal is
	// recomputed: often enough to react within seconds, rarely enough that
	// reading runtime/metrics costs nothing measurable.
	schedulerSampleInterval = time.Second
	// schedulerSustainedSamples is how many intervals in a row the p99 must
	// stay above a threshold before it counts: a single garbage collection
	// of a large heap, or one burst of LISTs, lifts one interval's p99 past
	// 100 ms on a server that is coping (docs/filters.md has the numbers).
	schedulerSustainedSamples = 3
)

// OverloadConfig are the two thresholds of each load signal; 0 turns a
// threshold off.
type OverloadConfig struct {
	// Inflight counts the non-long-running requests inside the apiserver,
	// from before authentication to the response: those APF runs plus
	// those it queues.
	SoftInflight, HardInflight int64
	// SchedulerLatency is the 99th percentile, per second, of the time
	// runnable goroutines wait for a CPU (runtime/metrics
	// /sched/latencies:seconds), above the threshold for 3 seconds in a
	// row. It stays high only while the process is short of CPU, whatever
	// the cause, and is a few milliseconds otherwise.
	SoftSchedulerLatency, HardSchedulerLatency time.Duration
}

// OverloadShedder tracks the apiserver's load. Above a soft threshold new
// requests get 429; above a hard one the response also closes the
// connection (Connection: close on HTTP/1.1; on HTTP/2 Go's server turns
// that header into a GOAWAY), so that clients reconnect, through the load
// balancer, to a less loaded replica.
type OverloadShedder struct {
	config           OverloadConfig
	inflight         atomic.Int64
	schedulerLatency atomic.Int64 // nanoseconds: the lowest p99 of the last schedulerSustainedSamples intervals
	recent           []float64    // the p99 of the last intervals, newest last; Run's alone
}

// NewOverloadShedder returns a shedder; Run feeds its scheduler signal.
func NewOverloadShedder(c OverloadConfig) *OverloadShedder {
	return &OverloadShedder{config: c}
}

// Run samples the scheduler latency until ctx is done.
func (s *OverloadShedder) Run(ctx context.Context) {
	sample := []metrics.Sample{{Name: "/sched/latencies:seconds"}}
	var prev *metrics.Float64Histogram
	t := time.NewTicker(schedulerSampleInterval)
	defer t.Stop()
	for {
		metrics.Read(sample)
		// Read reuses the histogram's memory: keep a copy for the next delta.
		h := sample[0].Value.Float64Histogram()
		cur := &metrics.Float64Histogram{Counts: append([]uint64(nil), h.Counts...), Buckets: h.Buckets}
		if prev != nil {
			s.observe(quantileOfDelta(prev, cur, 0.99))
		}
		prev = cur
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// observe takes the scheduler latency p99 of one interval.
func (s *OverloadShedder) observe(p99 float64) {
	s.recent = append(s.recent, p99)
	if len(s.recent) > schedulerSustainedSamples {
		s.recent = s.recent[1:]
	}
	if len(s.recent) == schedulerSustainedSamples {
		sustained := slices.Min(s.recent)
		s.schedulerLatency.Store(int64(sustained * float64(time.Second)))
		overloadSchedulerLatency.Set(sustained)
	}
}

// quantileOfDelta is the q-quantile of the observations between two reads
// of a cumulative histogram, at the upper bound of its bucket.
func quantileOfDelta(prev, cur *metrics.Float64Histogram, q float64) float64 {
	var total uint64
	for i := range cur.Counts {
		total += cur.Counts[i] - prev.Counts[i]
	}
	if total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(total)))
	var seen uint64
	for i := range cur.Counts {
		seen += cur.Counts[i] - prev.Counts[i]
		if seen >= rank {
			upper := cur.Buckets[i+1]
			if math.IsInf(upper, 1) {
				upper = cur.Buckets[i]
			}
			return upper
		}
	}
	return cur.Buckets[len(cur.Buckets)-1]
}

// level is the highest level any signal reaches.
func (s *OverloadShedder) level(inflight int64) int {
	c := s.config
	sched := time.Duration(s.schedulerLatency.Load())
	switch {
	case (c.HardInflight > 0 && inflight > c.HardInflight) || (c.HardSchedulerLatency > 0 && sched > c.HardSchedulerLatency):
		return loadHard
	case (c.SoftInflight > 0 && inflight > c.SoftInflight) || (c.SoftSchedulerLatency > 0 && sched > c.SoftSchedulerLatency):
		return loadSoft
	}
	return loadNormal
}

// WithOverloadShedding rejects new requests while the apiserver is
// overloaded. Health checks, metrics, heartbeats and the apiserver's own
// loopback requests are never shed.
func WithOverloadShedding(handler http.Handler, s *OverloadShedder, longRunning request.LongRunningRequestCheck, loopbackToken string) http.Handler {
	isLoopback := loopbackCheck(loopbackToken)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if exempt(r) || isLoopback(r) {
			handler.ServeHTTP(w, r)
			return
		}
		counted := true
		if info, ok := request.RequestInfoFrom(r.Context()); ok && longRunning != nil && longRunning(r, info) {
			counted = false
		}
		inflight := s.inflight.Load()
		if counted {
			inflight = s.inflight.Add(1)
			overloadInflight.Inc()
			defer func() {
				s.inflight.Add(-1)
				overloadInflight.Dec()
			}()
		}
		switch s.level(inflight) {
		case loadNormal:
			handler.ServeHTTP(w, r)
		case loadSoft:
			overloadShed.WithContext(r.Context()).WithLabelValues("soft").Inc()
			tooManyRequests(w, "the apiserver is overloaded", time.Second)
		default:
			overloadShed.WithContext(r.Context()).WithLabelValues("hard").Inc()
			w.Header().Set("Connection", "close")
			tooManyRequests(w, "the apiserver is overloaded; reconnect, possibly to another replica", time.Second)
		}
	})
}

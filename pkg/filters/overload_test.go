package filters

import (
	"net/http"
	"net/http/httptest"
	"runtime/metrics"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/sets"
	genericfilters "k8s.io/apiserver/pkg/server/filters"
)

func TestOverloadLevel(t *testing.T) {
	s := NewOverloadShedder(OverloadConfig{SoftInflight: 10, HardInflight: 20, SoftSchedulerLatency: 50 * time.Millisecond, HardSchedulerLatency: 200 * time.Millisecond})
	tests := []struct {
		inflight int64
		sched    time.Duration
		want     int
	}{
		{0, 0, loadNormal},
		{10, 50 * time.Millisecond, loadNormal},
		{11, 0, loadSoft},
		{0, 51 * time.Millisecond, loadSoft},
		{21, 0, loadHard},
		{5, 201 * time.Millisecond, loadHard},
	}
	for _, tt := range tests {
		s.schedulerLatency.Store(int64(tt.sched))
		if got := s.level(tt.inflight); got != tt.want {
			t.Errorf("inflight %d, scheduler latency %v: level %d, want %d", tt.inflight, tt.sched, got, tt.want)
		}
	}
	off := NewOverloadShedder(OverloadConfig{})
	off.schedulerLatency.Store(int64(time.Hour))
	if got := off.level(1 << 40); got != loadNormal {
		t.Errorf("thresholds off: level %d", got)
	}
}

func TestSchedulerLatencyMustBeSustained(t *testing.T) {
	s := NewOverloadShedder(OverloadConfig{SoftSchedulerLatency: 50 * time.Millisecond})
	for i, tt := range []struct {
		p99  float64
		want int
	}{
		{0.2, loadNormal}, // one interval is not sustained
		{0.2, loadNormal},
		{0.005, loadNormal}, // a garbage collection's spike, then calm
		{0.1, loadNormal},
		{0.06, loadNormal},
		{0.08, loadSoft}, // three intervals in a row above 50 ms
		{0.3, loadSoft},
		{0.01, loadNormal},
	} {
		s.observe(tt.p99)
		if got := s.level(0); got != tt.want {
			t.Errorf("interval %d (p99 %vs): level %d, want %d", i, tt.p99, got, tt.want)
		}
	}
}

func TestQuantileOfDelta(t *testing.T) {
	buckets := []float64{0, 0.001, 0.01, 0.1, 1}
	prev := &metrics.Float64Histogram{Buckets: buckets, Counts: []uint64{5, 5, 5, 5}}
	cur := &metrics.Float64Histogram{Buckets: buckets, Counts: []uint64{95, 13, 7, 5}} // 90, 8, 2, 0 new
	for q, want := range map[float64]float64{0.5: 0.001, 0.95: 0.01, 0.99: 0.1} {
		if got := quantileOfDelta(prev, cur, q); got != want {
			t.Errorf("q=%v: %v, want %v", q, got, want)
		}
	}
	if got := quantileOfDelta(cur, cur, 0.99); got != 0 {
		t.Errorf("no observations: %v", got)
	}
}

func TestWithOverloadShedding(t *testing.T) {
	longRunning := genericfilters.BasicLongRunningRequestCheck(sets.NewString("watch"), sets.NewString())
	s := NewOverloadShedder(OverloadConfig{SoftInflight: 1, HardInflight: 2})
	release := make(chan struct{})
	var entered sync.WaitGroup
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("hold") == "1" {
			entered.Done()
			<-release
		}
	})
	h := withRequestInfo(WithOverloadShedding(inner, s, longRunning, "loopback-secret"))
	do := func(target, auth string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", target, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	if rec := do("/api/v1/pods", ""); rec.Code != http.StatusOK {
		t.Fatalf("idle: %d", rec.Code)
	}

	// A request in the handler is counted in flight; a watch is not.
	entered.Add(1)
	done := make(chan struct{})
	go func() { defer close(done); do("/api/v1/pods?hold=1", "") }()
	entered.Wait()
	if got := s.inflight.Load(); got != 1 {
		t.Fatalf("in flight while one request is held: %d", got)
	}
	close(release)
	<-done
	if got := s.inflight.Load(); got != 0 {
		t.Fatalf("in flight after it finished: %d", got)
	}

	s.inflight.Store(1) // the next request makes 2 > soft 1
	rec := do("/api/v1/pods", "")
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Connection") == "close" {
		t.Errorf("soft: %d, Connection %q; want 429 keeping the connection", rec.Code, rec.Header().Get("Connection"))
	}
	s.inflight.Store(2) // the next makes 3 > hard 2
	rec = do("/api/v1/pods", "")
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Connection") != "close" {
		t.Errorf("hard: %d, Connection %q; want 429 closing the connection", rec.Code, rec.Header().Get("Connection"))
	}
	for _, tt := range []struct{ target, auth string }{
		{"/readyz", ""},
		{"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1", ""},
		{"/api/v1/pods", "Bearer loopback-secret"},
	} {
		if rec := do(tt.target, tt.auth); rec.Code != http.StatusOK {
			t.Errorf("%s (auth %q) shed while overloaded: %d", tt.target, tt.auth, rec.Code)
		}
	}
	// A watch is not counted in flight, but is not exempt either.
	if rec := do("/api/v1/pods?watch=1", ""); rec.Code != http.StatusTooManyRequests {
		t.Errorf("new watch while overloaded: %d, want 429", rec.Code)
	}
	s.inflight.Store(0)
	if rec := do("/api/v1/pods", ""); rec.Code != http.StatusOK {
		t.Errorf("after the load is gone: %d", rec.Code)
	}
}

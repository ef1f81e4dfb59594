package filters

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/component-base/metrics/testutil"
)

func TestProductToken(t *testing.T) {
	tests := map[string]string{
		"kubectl/v1.37.2 (linux/amd64) kubernetes/abcdef": "kubectl",
		"kubelet/v1.37.2 (linux/amd64) kubernetes/abcdef": "kubelet",
		"Mozilla/5.0 (X11; Linux x86_64)":                 "Mozilla",
		"  curl/8.0":                                      "curl",
		"my agent":                                        "my",
		"":                                                "(none)",
		strings.Repeat("x", 100):                          strings.Repeat("x", maxProductLength),
		"bad\xffutf8/1":                                   "bad\uFFFDutf8",
	}
	for in, want := range tests {
		if got := productToken(in); got != want {
			t.Errorf("productToken(%q) = %q, want %q", in, got, want)
		}
	}
}

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func TestTopTalkersFindsTheFlooderAmongManyClients(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	tt := NewTopTalkers()
	tt.now = clock.now
	// Far more distinct clients than counters, and one flooder among them.
	var flooded int64
	for i := range 10 * topTalkersShards * topTalkersCapacity {
		tt.record(fmt.Sprintf("client-%d/1.0", i))
		if i%3 == 0 {
			tt.record("flooder/1.0 (linux)")
			flooded++
		}
	}
	top := tt.Snapshot(3).Current
	if len(top) != 3 || top[0].UserAgent != "flooder" {
		t.Fatalf("current top = %+v, want flooder first", top)
	}
	if top[0].Requests-top[0].Error > flooded || top[0].Requests < flooded {
		t.Errorf("flooder count %d (error %d) does not bound its true count %d", top[0].Requests, top[0].Error, flooded)
	}
	for i := range tt.shards {
		if n := len(tt.shards[i].current); n > topTalkersCapacity {
			t.Errorf("shard %d: %d counters, want at most %d", i, n, topTalkersCapacity)
		}
	}

	// The next window exports the completed one.
	clock.t = clock.t.Add(topTalkersWindow)
	tt.record("kubectl/v1")
	s := tt.Snapshot(1)
	if len(s.Previous) != 1 || s.Previous[0].UserAgent != "flooder" || len(s.Current) != 1 || s.Current[0].UserAgent != "kubectl" {
		t.Errorf("after rotation: %+v", s)
	}
	// A quiet window empties both.
	clock.t = clock.t.Add(3 * topTalkersWindow)
	if s := tt.Snapshot(1); len(s.Previous)+len(s.Current) != 0 {
		t.Errorf("after a quiet window: %+v", s)
	}
}

func TestTopTalkersMetric(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	tt := NewTopTalkers()
	tt.now = clock.now
	h := WithTopTalkers(okHandler, tt)
	for range 5 {
		serve(h, http.MethodGet, "/api/v1/pods", "flooder/1")
	}
	serve(h, http.MethodGet, "/api/v1/pods", "kubectl/v1.37.2")
	clock.t = clock.t.Add(topTalkersWindow)
	want := `
# HELP bulwark_user_agent_top_requests [ALPHA] Requests in the last complete minute of the busiest User-Agents (product token), top 20, estimated by a bounded Space-Saving summary.
# TYPE bulwark_user_agent_top_requests gauge
bulwark_user_agent_top_requests{user_agent="flooder"} 5
bulwark_user_agent_top_requests{user_agent="kubectl"} 1
`
	if err := testutil.CustomCollectAndCompare(&topTalkersCollector{talkers: tt}, strings.NewReader(want), "bulwark_user_agent_top_requests"); err != nil {
		t.Error(err)
	}
}

// TestTopTalkersCountsConcurrentRequests: requests counted from many
// goroutines at once are all counted, for one client and for many.
func TestTopTalkersCountsConcurrentRequests(t *testing.T) {
	tt := NewTopTalkers()
	const goroutines, perGoroutine = 8, 2000
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perGoroutine {
				tt.record("flooder/1.0")
				tt.record(fmt.Sprintf("client-%d/1.0", (g*perGoroutine+i)%50))
			}
		}()
	}
	wg.Wait()
	var flooder, clients int64
	for _, c := range tt.Snapshot(100).Current {
		if c.Error != 0 {
			t.Errorf("%+v: an error without evictions", c)
		}
		if c.UserAgent == "flooder" {
			flooder += c.Requests
		} else {
			clients += c.Requests
		}
	}
	if flooder != goroutines*perGoroutine || clients != goroutines*perGoroutine {
		t.Errorf("counted flooder %d, clients %d; want %d each", flooder, clients, goroutines*perGoroutine)
	}
}

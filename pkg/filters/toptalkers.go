package filters

import (
	"hash/maphash"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"k8s.io/component-base/metrics"
)

const (
	// topTalkersCapacity is how many User-Agents each shard of the
	// Space-Saving summary tracks: memory is bounded by it, whatever
	// clients send, and any User-Agent with more than 1/capacity of the
	// requests is always in it (it has more than 1/capacity of its shard's).
	topTalkersCapacity = 200
	// topTalkersShards spreads User-Agents over summaries of their own, by
	// a hash of the product token, so that requests of different clients
	// take different locks.
	topTalkersShards = 16
	// topTalkersExported is how many appear in the metric, bounding its
	// label cardinality.
	topTalkersExported = 20
	// topTalkersWindow is the period over which requests are counted: the
	// metric shows the last complete window, the debug endpoint also the
	// current one, so a new flood is visible within a minute.
	topTalkersWindow = time.Minute
	maxProductLength = 64
)

// TopTalkers counts requests by User-Agent product token ("kubectl" for
// "kubectl/v1.37.2 (linux/amd64) kubernetes/abc") with the Space-Saving
// algorithm (Metwally et al., 2005): at most topTalkersCapacity counters per
// shard; an untracked User-Agent takes over the smallest counter of its
// shard, inheriting its count as its possible error. Counts are exact for a
// User-Agent that was never evicted and overestimate by at most Error
// otherwise. Counting a tracked User-Agent takes a shared lock and an atomic
// add, so that the requests of one flooding client do not queue on a lock.
type TopTalkers struct {
	now    func() time.Time
	seed   maphash.Seed
	shards [topTalkersShards]talkersShard
}

// talkersShard is the Space-Saving summary of the User-Agents that hash to it.
type talkersShard struct {
	mu          sync.RWMutex
	windowStart time.Time
	current     map[string]*talkerCounter
	previous    []TalkerCount
}

type talkerCounter struct {
	requests atomic.Int64
	err      int64 // set when the counter is taken over, under the write lock
}

// TalkerCount is one User-Agent's requests in a window.
type TalkerCount struct {
	UserAgent string `json:"userAgent"`
	Requests  int64  `json:"requests"`
	// Error bounds the overestimate of Requests.
	Error int64 `json:"error"`
}

// NewTopTalkers returns an empty summary.
func NewTopTalkers() *TopTalkers {
	t := &TopTalkers{now: time.Now, seed: maphash.MakeSeed()}
	for i := range t.shards {
		t.shards[i].current = map[string]*talkerCounter{}
	}
	return t
}

// productToken normalises a User-Agent to its product name, so that every
// version and build of a client counts as one.
func productToken(userAgent string) string {
	token, _, _ := strings.Cut(strings.TrimSpace(userAgent), "/")
	token, _, _ = strings.Cut(token, " ")
	if token == "" {
		return "(none)"
	}
	if len(token) > maxProductLength {
		token = token[:maxProductLength]
	}
	return strings.ToValidUTF8(token, string(utf8.RuneError))
}

// record counts one request.
func (t *TopTalkers) record(userAgent string) {
	key := productToken(userAgent)
	s := &t.shards[maphash.String(t.seed, key)%topTalkersShards]
	now := t.now()
	s.mu.RLock()
	if c, ok := s.current[key]; ok && now.Sub(s.windowStart) < topTalkersWindow {
		c.requests.Add(1)
		s.mu.RUnlock()
		return
	}
	s.mu.RUnlock()

	s.mu.Lock()
	defer s.mu.Unlock()
	s.rotate(now)
	if c, ok := s.current[key]; ok {
		c.requests.Add(1)
		return
	}
	if len(s.current) < topTalkersCapacity {
		c := &talkerCounter{}
		c.requests.Store(1)
		s.current[key] = c
		return
	}
	var smallestKey string
	var smallest int64
	for k, c := range s.current {
		if n := c.requests.Load(); smallestKey == "" || n < smallest {
			smallestKey, smallest = k, n
		}
	}
	delete(s.current, smallestKey)
	c := &talkerCounter{err: smallest}
	c.requests.Store(smallest + 1)
	s.current[key] = c
}

// rotate starts a new window when the current one is over; s.mu is held
// for writing.
func (s *talkersShard) rotate(now time.Time) {
	if now.Sub(s.windowStart) < topTalkersWindow {
		return
	}
	s.previous = nil // after a whole window without requests
	if now.Sub(s.windowStart) < 2*topTalkersWindow {
		s.previous = counts(s.current)
	}
	s.current = map[string]*talkerCounter{}
	s.windowStart = now.Truncate(topTalkersWindow)
}

func counts(m map[string]*talkerCounter) []TalkerCount {
	out := make([]TalkerCount, 0, len(m))
	for k, c := range m {
		out = append(out, TalkerCount{UserAgent: k, Requests: c.requests.Load(), Error: c.err})
	}
	return out
}

// sortTalkers orders counts by requests, most first.
func sortTalkers(counts []TalkerCount) {
	sort.Slice(counts, func(i, j int) bool {
		if counts[i].Requests != counts[j].Requests {
			return counts[i].Requests > counts[j].Requests
		}
		return counts[i].UserAgent < counts[j].UserAgent
	})
}

// TopTalkersSnapshot is what the debug endpoint shows.
type TopTalkersSnapshot struct {
	WindowSeconds  int           `json:"windowSeconds"`
	CurrentStarted time.Time     `json:"currentWindowStarted"`
	Current        []TalkerCount `json:"currentWindow"`
	Previous       []TalkerCount `json:"previousWindow"`
}

// Snapshot returns the top User-Agents of the current and the previous
// window. The shards' windows agree: each starts on a multiple of the window.
func (t *TopTalkers) Snapshot(n int) TopTalkersSnapshot {
	now := t.now()
	var current, previous []TalkerCount
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		s.rotate(now)
		current = append(current, counts(s.current)...)
		previous = append(previous, s.previous...)
		s.mu.Unlock()
	}
	sortTalkers(current)
	sortTalkers(previous)
	return TopTalkersSnapshot{
		WindowSeconds:  int(topTalkersWindow.Seconds()),
		CurrentStarted: now.Truncate(topTalkersWindow),
		Current:        current[:min(n, len(current))],
		Previous:       previous[:min(n, len(previous))],
	}
}

// WithTopTalkers counts every request by User-Agent, before any filter may
// reject it, so an operator can find a flooding client.
func WithTopTalkers(handler http.Handler, t *TopTalkers) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.record(r.UserAgent())
		handler.ServeHTTP(w, r)
	})
}

var topTalkersDesc = metrics.NewDesc(
	namespace+"_user_agent_top_requests",
	"Requests in the last complete minute of the busiest User-Agents (product token), top 20, estimated by a bounded Space-Saving summary.",
	[]string{"user_agent"}, nil, metrics.ALPHA, "")

// topTalkersCollector exports the last complete window's top User-Agents.
type topTalkersCollector struct {
	metrics.BaseStableCollector
	talkers *TopTalkers
}

func (c *topTalkersCollector) DescribeWithStability(ch chan<- *metrics.Desc) { ch <- topTalkersDesc }

func (c *topTalkersCollector) CollectWithStability(ch chan<- metrics.Metric) {
	for _, tc := range c.talkers.Snapshot(topTalkersExported).Previous {
		ch <- metrics.NewLazyConstMetric(topTalkersDesc, metrics.GaugeValue, float64(tc.Requests), tc.UserAgent)
	}
}

package filters

import (
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"k8s.io/component-base/metrics"
)

const (
	// topTalkersCapacity is how many User-Agents the Space-Saving summary
	// tracks: memory is bounded by it, whatever clients send, and any
	// User-Agent with more than 1/capacity of the requests is always in it.
	topTalkersCapacity = 200
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
// algorithm (Metwally et al., 2005): at most topTalkersCapacity counters;
// an untracked User-Agent takes over the smallest counter, inheriting its
// count as its possible error. Counts are exact for a User-Agent that was
// never evicted and overestimates by at most Error otherwise.
type TopTalkers struct {
	mu          sync.Mutex
	now         func() time.Time
	windowStart time.Time
	current     map[string]*TalkerCount
	previous    []TalkerCount
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
	return &TopTalkers{now: time.Now, current: map[string]*TalkerCount{}}
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
	t.mu.Lock()
	defer t.mu.Unlock()
	t.rotate()
	if c, ok := t.current[key]; ok {
		c.Requests++
		return
	}
	if len(t.current) < topTalkersCapacity {
		t.current[key] = &TalkerCount{UserAgent: key, Requests: 1}
		return
	}
	var smallest *TalkerCount
	for _, c := range t.current {
		if smallest == nil || c.Requests < smallest.Requests {
			smallest = c
		}
	}
	delete(t.current, smallest.UserAgent)
	t.current[key] = &TalkerCount{UserAgent: key, Requests: smallest.Requests + 1, Error: smallest.Requests}
}

// rotate starts a new window when the current one is over; t.mu is held.
func (t *TopTalkers) rotate() {
	now := t.now()
	if now.Sub(t.windowStart) < topTalkersWindow {
		return
	}
	if now.Sub(t.windowStart) < 2*topTalkersWindow {
		t.previous = sorted(t.current)
	} else {
		t.previous = nil // a whole window without requests
	}
	t.current = map[string]*TalkerCount{}
	t.windowStart = now.Truncate(topTalkersWindow)
}

func sorted(m map[string]*TalkerCount) []TalkerCount {
	out := make([]TalkerCount, 0, len(m))
	for _, c := range m {
		out = append(out, *c)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Requests != out[j].Requests {
			return out[i].Requests > out[j].Requests
		}
		return out[i].UserAgent < out[j].UserAgent
	})
	return out
}

// TopTalkersSnapshot is what the debug endpoint shows.
type TopTalkersSnapshot struct {
	WindowSeconds  int           `json:"windowSeconds"`
	CurrentStarted time.Time     `json:"currentWindowStarted"`
	Current        []TalkerCount `json:"currentWindow"`
	Previous       []TalkerCount `json:"previousWindow"`
}

// Snapshot returns the top User-Agents of the current and the previous window.
func (t *TopTalkers) Snapshot(n int) TopTalkersSnapshot {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.rotate()
	cur := sorted(t.current)
	return TopTalkersSnapshot{
		WindowSeconds:  int(topTalkersWindow.Seconds()),
		CurrentStarted: t.windowStart,
		Current:        cur[:min(n, len(cur))],
		Previous:       append([]TalkerCount(nil), t.previous[:min(n, len(t.previous))]...),
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

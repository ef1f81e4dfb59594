package filters

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
	"k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/klog/v2"
	"k8s.io/utils/lru"
)

const (
	// userAgentConfigPollInterval bounds how long a changed config file
	// waits to take effect. Polling, unlike inotify, follows the symlink
	// swaps of a mounted ConfigMap and costs one small read a second.
	userAgentConfigPollInterval = time.Second
	// maxBucketsPerRule bounds the memory of a per-User-Agent rule; the
	// least recently seen User-Agents lose their bucket first.
	maxBucketsPerRule = 10000
	// blockedRetryAfter is what a client blocked by a qps 0 rule is told.
	blockedRetryAfter = 30 * time.Second
)

// UserAgentLimiter applies the rules of a --user-agent-limits-config file
// and reloads them when the file changes. An invalid file is rejected with
// its line and reason, and the rules in force stay.
//
// User-Agent is chosen by the client: this is a damage limiter for buggy
// clients, not a security boundary, and it never grants anything.
type UserAgentLimiter struct {
	path  string
	state atomic.Pointer[limiterState]
	// lastError is the error of the last load, "" after a good one.
	lastError atomic.Pointer[string]
}

type limiterState struct {
	raw      []byte
	config   *UserAgentLimitsConfig
	rules    []*ruleBuckets
	loadedAt time.Time
}

// ruleBuckets is a rule with its token buckets.
type ruleBuckets struct {
	*compiledRule
	shared *rate.Limiter // per rule
	perUA  *lru.Cache    // per User-Agent: string -> *rate.Limiter
}

// NewUserAgentLimiter loads path; an invalid file is an error.
func NewUserAgentLimiter(path string) (*UserAgentLimiter, error) {
	l := &UserAgentLimiter{path: path}
	if err := l.load(); err != nil {
		return nil, fmt.Errorf("--user-agent-limits-config %s: %w", path, err)
	}
	return l, nil
}

// Run reloads the file whenever its content changes, until ctx is done.
func (l *UserAgentLimiter) Run(ctx context.Context) {
	t := time.NewTicker(userAgentConfigPollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := l.load(); err != nil {
				klog.ErrorS(err, "Rejected invalid User-Agent limits config; previous rules stay in force", "path", l.path)
			}
		}
	}
}

// load reads the file and, if it changed and is valid, puts its rules in
// force. A broken file is reported once, not at every poll.
func (l *UserAgentLimiter) load() error {
	raw, err := os.ReadFile(l.path)
	if err == nil {
		if cur := l.state.Load(); cur != nil && bytes.Equal(cur.raw, raw) {
			// Unchanged, or a broken edit reverted to the rules in force.
			if l.lastError.Swap(nil) != nil {
				userAgentConfigValid.Set(1)
			}
			return nil
		}
		var cfg *UserAgentLimitsConfig
		var rules []*compiledRule
		if cfg, rules, err = ParseUserAgentLimits(raw); err == nil {
			l.apply(raw, cfg, rules)
			return nil
		}
	}
	if prev := l.lastError.Load(); prev != nil && *prev == err.Error() {
		return nil
	}
	msg := err.Error()
	l.lastError.Store(&msg)
	userAgentConfigReloads.WithLabelValues("failure").Inc()
	userAgentConfigValid.Set(0)
	return err
}

func (l *UserAgentLimiter) apply(raw []byte, cfg *UserAgentLimitsConfig, rules []*compiledRule) {
	next := &limiterState{raw: raw, config: cfg, loadedAt: time.Now()}
	for _, r := range rules {
		userAgentRejected.WithLabelValues(r.Name) // at 0 until the rule rejects
		b := &ruleBuckets{compiledRule: r}
		if r.Per == PerUserAgent {
			b.perUA = lru.New(maxBucketsPerRule)
		} else {
			b.shared = rate.NewLimiter(rate.Limit(r.QPS), r.Burst)
		}
		next.rules = append(next.rules, b)
	}
	l.state.Store(next)
	l.lastError.Store(nil)
	userAgentConfigReloads.WithLabelValues("success").Inc()
	userAgentConfigValid.Set(1)
	userAgentRules.Set(float64(len(rules)))
	klog.InfoS("Loaded User-Agent limits config", "path", l.path, "rules", len(rules))
}

// decide applies the first matching rule. It returns the rule's name and,
// for a rejected request, how long the client should wait.
func (l *UserAgentLimiter) decide(userAgent, verb, resource, namespace string) (rule string, allowed bool, retryAfter time.Duration) {
	for _, r := range l.state.Load().rules {
		if !r.matches(userAgent, verb, resource, namespace) {
			continue
		}
		if r.QPS == 0 {
			return r.Name, false, blockedRetryAfter
		}
		bucket := r.shared
		if r.perUA != nil {
			if b, ok := r.perUA.Get(userAgent); ok {
				bucket = b.(*rate.Limiter)
			} else {
				bucket = rate.NewLimiter(rate.Limit(r.QPS), r.Burst)
				r.perUA.Add(userAgent, bucket)
			}
		}
		if bucket.Allow() {
			return r.Name, true, 0
		}
		return r.Name, false, time.Duration(float64(time.Second) / r.QPS)
	}
	return "", true, 0
}

// UserAgentLimitsStatus is what the debug endpoint shows.
type UserAgentLimitsStatus struct {
	Path      string                 `json:"path"`
	LoadedAt  time.Time              `json:"loadedAt"`
	Config    *UserAgentLimitsConfig `json:"config"`
	LastError string                 `json:"lastError,omitempty"`
}

// Status is the config in force and the error of the last load, if any.
func (l *UserAgentLimiter) Status() UserAgentLimitsStatus {
	s := l.state.Load()
	status := UserAgentLimitsStatus{Path: l.path, LoadedAt: s.loadedAt, Config: s.config}
	if e := l.lastError.Load(); e != nil {
		status.LastError = *e
	}
	return status
}

// WithUserAgentLimits rejects, with 429 and Retry-After, the requests that
// a rule of limiter throttles or blocks. It runs before authentication;
// the verb, resource and namespace come from the request's RequestInfo,
// parsed from the URL alone.
func WithUserAgentLimits(handler http.Handler, limiter *UserAgentLimiter) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if exempt(r) {
			handler.ServeHTTP(w, r)
			return
		}
		info, ok := request.RequestInfoFrom(r.Context())
		if !ok {
			handler.ServeHTTP(w, r)
			return
		}
		verb, resource := info.Verb, info.Resource
		if !info.IsResourceRequest {
			verb = strings.ToLower(r.Method)
		}
		if info.Subresource != "" {
			resource += "/" + info.Subresource
		}
		rule, allowed, retryAfter := limiter.decide(r.UserAgent(), verb, resource, info.Namespace)
		if allowed {
			handler.ServeHTTP(w, r)
			return
		}
		userAgentRejected.WithContext(r.Context()).WithLabelValues(rule).Inc()
		tooManyRequests(w, fmt.Sprintf("too many requests from this User-Agent (limit %q)", rule), retryAfter)
	})
}

package app

import (
	"fmt"
	"os"
	"runtime"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/bulwark-k8s/bulwark/pkg/bookmark"
	"github.com/bulwark-k8s/bulwark/pkg/cacher"
	"github.com/bulwark-k8s/bulwark/pkg/embeddedetcd"
	"github.com/bulwark-k8s/bulwark/pkg/filters"
)

// flagSectionName names the --help section that lists Bulwark's own flags,
// apart from upstream's.
const flagSectionName = "bulwark"

// Overload-shedding defaults; docs/filters.md gives the measurements behind them.
const (
	defaultSoftInflight = 2000
	defaultHardInflight = 4000
	// defaultLargeListMinBytes: 20,000 pods of a typical size.
	defaultLargeListMinBytes = 32 << 20
)

// Options are Bulwark's own flags.
type Options struct {
	EmbeddedEtcd embeddedetcd.Config
	// UserAgentLimitsConfig is the path of the User-Agent limiter's rules.
	UserAgentLimitsConfig string
	// CacheNotReadyGate answers LIST/WATCH with 429 while a watch cache fills.
	CacheNotReadyGate bool
	// Overload are the thresholds of overload shedding.
	Overload filters.OverloadConfig
	// MaxConcurrentLargeLists bounds the large LISTs in flight; 0 does not
	// bound them.
	MaxConcurrentLargeLists int
	// LargeListMinBytes is the size from which a LIST of a whole resource is large.
	LargeListMinBytes resource.QuantityValue
	// WatchCacheLabelIndexes are resource:label-key pairs the watch caches index.
	WatchCacheLabelIndexes []string
	// WatchCacheFieldIndexes are resource:field pairs the watch caches index.
	WatchCacheFieldIndexes []string
	// WatchCacheShareValues makes the objects of a watch cache share the
	// values they have in common.
	WatchCacheShareValues bool
	// WatchBookmarkInterval is how often a watcher receives a bookmark.
	WatchBookmarkInterval time.Duration
	// WatchCacheStartHistoryBudget bounds the start history of each watch cache.
	WatchCacheStartHistoryBudget resource.QuantityValue

	// indexes are WatchCacheLabelIndexes and WatchCacheFieldIndexes as
	// Validate parsed them.
	indexes cacher.Indexes
}

// NewOptions returns the defaults.
func NewOptions() *Options {
	return &Options{
		EmbeddedEtcd:      embeddedetcd.Config{DataDir: "bulwark.etcd"}.WithDefaults(),
		CacheNotReadyGate: true,
		Overload: filters.OverloadConfig{
			SoftInflight: defaultSoftInflight,
			HardInflight: defaultHardInflight,
			// The scheduler-latency signal is off: it shed good clients'
			// requests during reconnect storms and write bursts, where the
			// CPU went to TLS handshakes or the watch cache, not to the
			// requests it turned away (docs/filters.md).
		},
		// One per CPU: a LIST of a whole large resource keeps a core busy
		// encoding tens of megabytes.
		MaxConcurrentLargeLists: max(2, runtime.GOMAXPROCS(0)),
		LargeListMinBytes: resource.QuantityValue{
			Quantity: *resource.NewQuantity(defaultLargeListMinBytes, resource.BinarySI),
		},
		WatchCacheLabelIndexes: cacher.DefaultLabelIndexes,
		WatchCacheShareValues:  true,
		WatchBookmarkInterval:  bookmark.DefaultInterval,
		WatchCacheStartHistoryBudget: resource.QuantityValue{
			Quantity: *resource.NewQuantity(bookmark.DefaultHistoryBudget, resource.BinarySI),
		},
	}
}

// BookmarkConfig is the configuration of bookmarks and start histories.
func (o *Options) BookmarkConfig() bookmark.Config {
	return bookmark.Config{
		Interval:      o.WatchBookmarkInterval,
		HistoryBudget: o.WatchCacheStartHistoryBudget.Value(),
	}
}

// Validate reports every Bulwark flag whose value cannot work, by the
// flag's name, before anything starts; it parses the index flags for the
// server. A negative bound would otherwise silently turn its feature off.
func (o *Options) Validate() []error {
	var errs []error
	notNegative := func(flag string, v int64) {
		if v < 0 {
			errs = append(errs, fmt.Errorf("--%s: must not be negative, got %d", flag, v))
		}
	}
	notAbove := func(soft, hard string, softValue, hardValue int64) {
		if softValue > 0 && hardValue > 0 && softValue > hardValue {
			errs = append(errs, fmt.Errorf("--%s (%d) must not be above --%s (%d)", soft, softValue, hard, hardValue))
		}
	}

	e := o.EmbeddedEtcd
	if err := e.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("--embedded-etcd-*: %w", err))
	}
	notNegative("embedded-etcd-start-timeout", int64(e.StartTimeout))

	if o.UserAgentLimitsConfig != "" {
		raw, err := os.ReadFile(o.UserAgentLimitsConfig)
		if err == nil {
			_, _, err = filters.ParseUserAgentLimits(raw)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("--user-agent-limits-config %s: %w", o.UserAgentLimitsConfig, err))
		}
	}

	c := o.Overload
	notNegative("overload-soft-inflight", c.SoftInflight)
	notNegative("overload-hard-inflight", c.HardInflight)
	notNegative("overload-soft-scheduler-latency", int64(c.SoftSchedulerLatency))
	notNegative("overload-hard-scheduler-latency", int64(c.HardSchedulerLatency))
	notAbove("overload-soft-inflight", "overload-hard-inflight", c.SoftInflight, c.HardInflight)
	notAbove("overload-soft-scheduler-latency", "overload-hard-scheduler-latency", int64(c.SoftSchedulerLatency), int64(c.HardSchedulerLatency))

	notNegative("max-concurrent-large-lists", int64(o.MaxConcurrentLargeLists))
	if v := o.LargeListMinBytes.Value(); v <= 0 {
		errs = append(errs, fmt.Errorf("--large-list-min-bytes: must be positive (0 would make every LIST large), got %s", o.LargeListMinBytes.String()))
	}

	var err error
	if o.indexes, err = cacher.ParseIndexes(o.WatchCacheLabelIndexes, o.WatchCacheFieldIndexes); err != nil {
		errs = append(errs, fmt.Errorf("--watch-cache-label-indexes, --watch-cache-field-indexes: %w", err))
	}
	b := o.BookmarkConfig()
	if b.Interval != 0 && b.Interval < bookmark.MinInterval {
		errs = append(errs, fmt.Errorf("--watch-bookmark-interval: want 0 (upstream's) or at least %v, got %v", bookmark.MinInterval, b.Interval))
	}
	notNegative("watch-cache-start-history-budget", b.HistoryBudget)
	return errs
}

// AddFlags registers the flags on fs.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	e := &o.EmbeddedEtcd
	fs.StringVar(&e.DataDir, "embedded-etcd-data-dir", e.DataDir,
		"Data directory of the etcd started in-process when --etcd-servers is not set. Data survives restarts.")
	fs.StringVar(&e.ListenClientURL, "embedded-etcd-listen-client-url", e.ListenClientURL,
		"Loopback URL on which the embedded etcd serves the apiserver (and etcdctl).")
	fs.StringVar(&e.ListenPeerURL, "embedded-etcd-listen-peer-url", e.ListenPeerURL,
		"Loopback peer URL of the embedded etcd; etcd needs one even as a single member.")
	fs.Int64Var(&e.QuotaBackendBytes, "embedded-etcd-quota-backend-bytes", e.QuotaBackendBytes,
		"Database size at which the embedded etcd raises its NOSPACE alarm. The default suits about a million objects.")
	fs.StringVar(&o.UserAgentLimitsConfig, "user-agent-limits-config", o.UserAgentLimitsConfig,
		"File with User-Agent rate-limit rules (kind UserAgentLimits), applied before authentication. "+
			"Changes take effect within 2s without restart; an invalid file is rejected and the rules in force stay. Empty: no limits.")
	fs.BoolVar(&o.CacheNotReadyGate, "cache-not-ready-gate", o.CacheNotReadyGate,
		"Answer LIST and WATCH requests with 429 and Retry-After while the watch cache of their resource is filling, "+
			"instead of serving them from etcd, so that a restart does not become an etcd stampede.")
	fs.Int64Var(&o.Overload.SoftInflight, "overload-soft-inflight", o.Overload.SoftInflight,
		"Non-long-running requests in flight (counted before authentication) above which new requests get 429. 0 disables.")
	fs.Int64Var(&o.Overload.HardInflight, "overload-hard-inflight", o.Overload.HardInflight,
		"Requests in flight above which new requests get 429 and their connection is closed (GOAWAY on HTTP/2), so clients move to another replica. 0 disables.")
	fs.DurationVar(&o.Overload.SoftSchedulerLatency, "overload-soft-scheduler-latency", o.Overload.SoftSchedulerLatency,
		"99th percentile Go scheduler latency, sustained for 3s, above which new requests get 429 (e.g. 250ms). 0 disables.")
	fs.DurationVar(&o.Overload.HardSchedulerLatency, "overload-hard-scheduler-latency", o.Overload.HardSchedulerLatency,
		"Scheduler latency above which new requests get 429 and their connection is closed (e.g. 1s). 0 disables.")
	fs.IntVar(&o.MaxConcurrentLargeLists, "max-concurrent-large-lists", o.MaxConcurrentLargeLists,
		"LISTs of a whole large resource (cluster-wide, no selector, no limit of 500 or less; see --large-list-min-bytes) served at once "+
			"(default: one per CPU, at least 2), whoever sends them; one more waits up to 1s for its turn, then gets 429. 0 does not bound them.")
	fs.Var(&o.LargeListMinBytes, "large-list-min-bytes",
		"Size of a resource (its objects times their average size, as its storage estimates them) from which a LIST of all of it is large.")
	fs.StringSliceVar(&o.WatchCacheLabelIndexes, "watch-cache-label-indexes", o.WatchCacheLabelIndexes,
		"Labels the watch cache indexes, as resource[.group]:label-key (e.g. pods:app, deployments.apps:app.kubernetes.io/name). "+
			"A LIST whose label selector requires one value of an indexed label reads only the objects with that value. Empty: no label indexes.")
	fs.StringSliceVar(&o.WatchCacheFieldIndexes, "watch-cache-field-indexes", o.WatchCacheFieldIndexes,
		"Fields the watch cache indexes beyond upstream's (spec.nodeName of pods), as resource[.group]:field, a field the resource's "+
			"field selectors support (e.g. pods:status.phase, pods:spec.schedulerName). A LIST whose field selector requires one value of it reads only the objects with that value.")
	fs.BoolVar(&o.WatchCacheShareValues, "watch-cache-share-values", o.WatchCacheShareValues,
		"Objects in the watch caches share the values they have in common (the labels, owner references and managed fields of one "+
			"ReplicaSet's pods, their containers' resources, volumes' sources, repeated strings) instead of each holding a copy: less memory, the same responses.")
	fs.DurationVar(&o.WatchBookmarkInterval, "watch-bookmark-interval", o.WatchBookmarkInterval,
		"How often every watcher that allows bookmarks receives one, with the revision etcd has reached, so that after a restart it resumes "+
			"instead of relisting; it also gets a last one on graceful termination. At least 1s; 0 leaves upstream's (about a minute).")
	fs.Var(&o.WatchCacheStartHistoryBudget, "watch-cache-start-history-budget",
		"Size (as stored in etcd) of the events each watch cache reads from etcd's retained history when it starts, so that a watch resuming "+
			"from before the restart gets the events since then instead of 410 Gone. 0 reads none.")
	fs.DurationVar(&e.StartTimeout, "embedded-etcd-start-timeout", e.StartTimeout,
		"How long to wait for the embedded etcd to serve before giving up.")
}

package bookmark

import (
	"sync"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"
)

var (
	bookmarksSent = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace:      "bulwark",
		Subsystem:      "watch",
		Name:           "bookmarks_sent_total",
		Help:           "Bookmarks sent to watchers, by reason: periodic (every --watch-bookmark-interval, and upstream's) or final (on graceful termination).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"group", "resource", "reason"})
	segments = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace:      "bulwark",
		Subsystem:      "watch",
		Name:           "segments_total",
		Help:           "Watch-cache watches started to resume a client's watch: after a bookmark (one per watcher and interval), or after the cache closed a watcher too slow.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"group", "resource"})
	historyResumptions = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace:      "bulwark",
		Subsystem:      "watch",
		Name:           "history_resumptions_total",
		Help:           "Watches resumed from a resourceVersion older than the watch cache, served from the start history instead of 410 Gone.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"group", "resource"})
	historyNotRead = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace:      "bulwark",
		Subsystem:      "watch",
		Name:           "start_history_not_read_total",
		Help:           "Watches resuming from before the watch cache answered 429 (retry) because the start history of their resource was still being read, instead of 410 Gone.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"group", "resource"})
	watchGone = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace:      "bulwark",
		Subsystem:      "watch",
		Name:           "gone_total",
		Help:           "Watches answered 410 Gone (resourceVersion too old): each is a client that relists.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"group", "resource"})
	slowWatchers = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace:      "bulwark",
		Subsystem:      "watch",
		Name:           "slow_watchers_total",
		Help:           "Watches that fell behind, by outcome: resumed (the watch cache closed the watcher for being too slow; a new one went on from the last event the client took, unseen by the client), gone (the cache no longer held that resourceVersion: 410, the client relists), ended (the client took no event for the cache's events history window, or the cache closed the resumed watcher before it sent anything: the watch ends, as upstream's).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"group", "resource", "outcome"})
	historyEvents = metrics.NewGaugeVec(&metrics.GaugeOpts{
		Namespace:      "bulwark",
		Subsystem:      "watch",
		Name:           "start_history_events",
		Help:           "Events in the start history of a resource's watch cache (0 once released).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"group", "resource"})
	historyBytes = metrics.NewGaugeVec(&metrics.GaugeOpts{
		Namespace:      "bulwark",
		Subsystem:      "watch",
		Name:           "start_history_bytes",
		Help:           "Size, as stored in etcd, of the start history of a resource's watch cache; bounded by --watch-cache-start-history-budget.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"group", "resource"})

	registerOnce sync.Once
)

// RegisterMetrics registers the package's metrics with the legacy registry,
// which /metrics serves.
func RegisterMetrics() {
	registerOnce.Do(func() {
		legacyregistry.MustRegister(bookmarksSent, segments, historyResumptions, historyNotRead, watchGone, slowWatchers, historyEvents, historyBytes)
	})
}

// registerResource makes a resource's series exist from the start, at 0.
func registerResource(gr schema.GroupResource) {
	for _, reason := range []string{"periodic", "final"} {
		bookmarksSent.WithLabelValues(gr.Group, gr.Resource, reason)
	}
	historyResumptions.WithLabelValues(gr.Group, gr.Resource)
	historyNotRead.WithLabelValues(gr.Group, gr.Resource)
	watchGone.WithLabelValues(gr.Group, gr.Resource)
	for _, outcome := range []string{"resumed", "gone", "ended"} {
		slowWatchers.WithLabelValues(gr.Group, gr.Resource, outcome)
	}
}

func setHistorySize(gr schema.GroupResource, events int, bytes int64) {
	historyEvents.WithLabelValues(gr.Group, gr.Resource).Set(float64(events))
	historyBytes.WithLabelValues(gr.Group, gr.Resource).Set(float64(bytes))
}

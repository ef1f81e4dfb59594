package cacher

import (
	"sync"

	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"
)

var (
	setSelectorLists = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace:      "bulwark",
		Subsystem:      "watch_cache",
		Name:           "set_selector_lists_total",
		Help:           "LISTs whose label selector requires one of several values of an indexed label (key in (a,b,...)), by how they were served: index (one index lookup per value) or scan (the resource changed between the lookups; served by upstream's scan).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"group", "resource", "served"})

	listedStreamingLists = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace:      "bulwark",
		Subsystem:      "watch_cache",
		Name:           "listed_streaming_lists_total",
		Help:           "Watches with initial events (streaming lists) answered by LISTs of what they select and a watch from their resourceVersion instead of a filter of every object of the resource, by what selected it: index (a selector an index serves) or namespace.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"group", "resource", "selection"})

	indexEntries = metrics.NewGaugeVec(&metrics.GaugeOpts{
		Namespace:      "bulwark",
		Subsystem:      "watch_cache",
		Name:           "index_entries",
		Help:           "Objects in each label or field index Bulwark adds to a resource's watch cache, counted once a minute.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"group", "resource", "index"})

	indexMemory = metrics.NewGaugeVec(&metrics.GaugeOpts{
		Namespace:      "bulwark",
		Subsystem:      "watch_cache",
		Name:           "index_memory_bytes",
		Help:           "Estimated memory of each label or field index Bulwark adds to a resource's watch cache, from its objects and distinct values, counted once a minute.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"group", "resource", "index"})

	sharedValues = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace:      "bulwark",
		Subsystem:      "watch_cache",
		Name:           "shared_values_total",
		Help:           "Values (labels, owner references, managed fields, a container's resources, a volume's source...) of the objects a watch cache (or, for pods, the server's pod informer) took in, by whether an equal value other objects hold replaced them (shared) or they stayed the object's own (own).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"group", "resource", "result"})

	registerOnce sync.Once
)

// RegisterMetrics registers the package's metrics with the legacy registry,
// which /metrics serves.
func RegisterMetrics() {
	registerOnce.Do(func() {
		legacyregistry.MustRegister(setSelectorLists, listedStreamingLists, indexEntries, indexMemory, sharedValues)
	})
}

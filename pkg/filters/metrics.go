package filters

import (
	"sync"

	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"

	"github.com/bulwark-k8s/bulwark/pkg/heartbeat"
)

const namespace = "bulwark"

var (
	heartbeatRequestDuration = metrics.NewHistogramVec(&metrics.HistogramOpts{
		Namespace:      namespace,
		Name:           "heartbeat_request_duration_seconds",
		Help:           "Latency of heartbeat requests (node Lease renewals, node status, leader-election Leases), by kind, measured from Bulwark's outermost filter.",
		Buckets:        []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10},
		StabilityLevel: metrics.ALPHA,
	}, []string{"kind"})

	largeListsInflight = metrics.NewGauge(&metrics.GaugeOpts{
		Namespace:      namespace,
		Name:           "large_lists_inflight_requests",
		Help:           "Large LISTs (a whole large resource, cluster-wide, no selector, no page limit) being served now; at most --max-concurrent-large-lists.",
		StabilityLevel: metrics.ALPHA,
	})

	largeListsRejected = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace:      namespace,
		Name:           "large_list_rejected_requests_total",
		Help:           "Large LISTs rejected with 429 because --max-concurrent-large-lists were in flight for a second, by resource.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"group", "resource"})

	userAgentRejected = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace:      namespace,
		Name:           "user_agent_limit_rejected_requests_total",
		Help:           "Requests rejected with 429 by the User-Agent limiter, by rule.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"rule"})

	userAgentConfigReloads = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace:      namespace,
		Name:           "user_agent_limit_config_reloads_total",
		Help:           "Loads of the --user-agent-limits-config file, by result (success, failure). A failed load keeps the previous rules.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"result"})

	userAgentConfigValid = metrics.NewGauge(&metrics.GaugeOpts{
		Namespace:      namespace,
		Name:           "user_agent_limit_config_last_load_successful",
		Help:           "1 if the last load of the --user-agent-limits-config file succeeded, 0 if the file is invalid and the previous rules are in force.",
		StabilityLevel: metrics.ALPHA,
	})

	userAgentRules = metrics.NewGauge(&metrics.GaugeOpts{
		Namespace:      namespace,
		Name:           "user_agent_limit_rules",
		Help:           "Number of User-Agent limit rules in force.",
		StabilityLevel: metrics.ALPHA,
	})

	cacheNotReadyRejected = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace:      namespace,
		Name:           "cache_not_ready_rejected_requests_total",
		Help:           "LIST and WATCH requests answered 429 because the watch cache of their resource was not ready, by group and resource.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"group", "resource"})

	abandonedRequests = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace:      namespace,
		Name:           "abandoned_requests_total",
		Help:           "Requests (not watches or other long-running ones) whose client went away before the response was complete, by verb and resource.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"verb", "resource"})

	overloadShed = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace:      namespace,
		Name:           "overload_shed_requests_total",
		Help:           "Requests answered 429 by overload shedding, by level (soft; hard: the connection was also closed).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"level"})

	overloadInflight = metrics.NewGauge(&metrics.GaugeOpts{
		Namespace:      namespace,
		Name:           "overload_inflight_requests",
		Help:           "Non-long-running requests inside the apiserver, counted before authentication: the inflight signal of overload shedding.",
		StabilityLevel: metrics.ALPHA,
	})

	overloadSchedulerLatency = metrics.NewGauge(&metrics.GaugeOpts{
		Namespace:      namespace,
		Name:           "overload_scheduler_latency_p99_seconds",
		Help:           "The CPU-saturation signal of overload shedding: the 99th percentile of the time runnable goroutines waited for a CPU, per second, at its lowest over the last 3 seconds.",
		StabilityLevel: metrics.ALPHA,
	})

	registerOnce sync.Once
)

// RegisterMetrics registers the filters' metrics, and the top talkers of
// talkers, with the legacy registry, which serves them on /metrics beside
// upstream's. Call it before anything records a metric: until then,
// component-base metrics drop what they are given.
func RegisterMetrics(talkers *TopTalkers) {
	registerOnce.Do(func() {
		legacyregistry.MustRegister(heartbeatRequestDuration, userAgentRejected, userAgentConfigReloads, userAgentConfigValid, userAgentRules, cacheNotReadyRejected, abandonedRequests,
			overloadShed, overloadInflight, overloadSchedulerLatency, largeListsInflight, largeListsRejected)
		legacyregistry.CustomMustRegister(&topTalkersCollector{talkers: talkers})
		// The series that dashboards and alerts rate() over exist from the
		// start, at 0, rather than appearing with the first event.
		for _, level := range []string{"soft", "hard"} {
			overloadShed.WithLabelValues(level)
		}
		for _, kind := range []heartbeat.Kind{heartbeat.NodeLease, heartbeat.NodeStatus, heartbeat.LeaderElection} {
			heartbeatRequestDuration.WithLabelValues(kind.String())
		}
		for _, result := range []string{"success", "failure"} {
			userAgentConfigReloads.WithLabelValues(result)
		}
	})
}

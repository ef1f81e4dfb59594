package filters

import (
	"net/http"

	genericapifilters "k8s.io/apiserver/pkg/endpoints/filters"
	"k8s.io/apiserver/pkg/endpoints/request"
)

// Chain is Bulwark's filters and what they need; Wrap puts them around
// upstream's handler chain in the order docs/filters.md gives.
type Chain struct {
	RequestInfoResolver request.RequestInfoResolver
	LongRunning         request.LongRunningRequestCheck
	// LoopbackToken is the bearer token of the apiserver's own client.
	LoopbackToken string
	TopTalkers    *TopTalkers
	Shedder       *OverloadShedder
	// Limiter nil: no User-Agent limits.
	Limiter *UserAgentLimiter
	// Caches nil: no cache-not-ready gate.
	Caches CacheReadiness
	// Resources are those a metric label may name; nil: none, every
	// resource label is "other".
	Resources ServedResources
	// LargeLists nil: large LISTs are not limited.
	LargeLists *LargeListLimiter
}

// Wrap returns handler behind Bulwark's filters.
func (c Chain) Wrap(handler http.Handler) http.Handler {
	// Innermost first: what is added last runs first.
	if c.Caches != nil {
		handler = WithCacheNotReadyGate(handler, c.Caches, c.LoopbackToken)
	}
	if c.LargeLists != nil {
		handler = WithLargeListLimit(handler, c.LargeLists, c.LoopbackToken)
	}
	if c.Limiter != nil {
		handler = WithUserAgentLimits(handler, c.Limiter)
	}
	handler = WithOverloadShedding(handler, c.Shedder, c.LongRunning, c.LoopbackToken)
	handler = WithTopTalkers(handler, c.TopTalkers)
	handler = WithAbandonedRequests(handler, c.LongRunning, c.Resources)
	handler = WithHeartbeats(handler)
	// Parsed once for all of Bulwark's filters; upstream's chain parses it
	// again, as it always does.
	return genericapifilters.WithRequestInfo(handler, c.RequestInfoResolver)
}

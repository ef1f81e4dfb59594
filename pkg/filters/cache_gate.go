package filters

import (
	"fmt"
	"net/http"
	"time"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/endpoints/request"
)

// cacheNotReadyRetryAfter is what a gated client is told: a watch cache
// fills in seconds, even at hundreds of thousands of objects.
const cacheNotReadyRetryAfter = 3 * time.Second

// CacheReadiness tells whether the watch cache of a resource is ready;
// known is false for a resource without storage (yet).
type CacheReadiness interface {
	Ready(gr schema.GroupResource) (known, ready bool)
}

// WithCacheNotReadyGate answers LIST and WATCH requests with 429 while the
// watch cache of their resource is not ready (starting, or re-initialising
// after an error). Upstream serves such LISTs from etcd, which turns an
// apiserver restart into a stampede on etcd as every client relists at once;
// 429 with Retry-After spreads them out instead. Single-object GETs pass, as
// do the apiserver's own requests (its loopback client, recognised by its
// token, which no other client has), health checks, metrics and heartbeats.
func WithCacheNotReadyGate(handler http.Handler, caches CacheReadiness, loopbackToken string) http.Handler {
	isLoopback := loopbackCheck(loopbackToken)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if exempt(r) || isLoopback(r) {
			handler.ServeHTTP(w, r)
			return
		}
		info, ok := request.RequestInfoFrom(r.Context())
		if !ok || !info.IsResourceRequest || (info.Verb != "list" && info.Verb != "watch") {
			handler.ServeHTTP(w, r)
			return
		}
		gr := schema.GroupResource{Group: info.APIGroup, Resource: info.Resource}
		if known, ready := caches.Ready(gr); !known || ready {
			handler.ServeHTTP(w, r)
			return
		}
		cacheNotReadyRejected.WithContext(r.Context()).WithLabelValues(gr.Group, gr.Resource).Inc()
		tooManyRequests(w, fmt.Sprintf("the watch cache of %s is initializing", gr), cacheNotReadyRetryAfter)
	})
}

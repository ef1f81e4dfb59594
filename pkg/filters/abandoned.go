package filters

import (
	"context"
	"errors"
	"net/http"

	"k8s.io/apiserver/pkg/endpoints/request"
)

// WithAbandonedRequests counts requests whose client went away (closed the
// connection or reset the stream) before the response was complete. The
// server cancels such a request's context, and everything the request
// started with that context — the etcd call, an admission webhook call, a
// loopback call — stops with it (test/integration/context_test.go proves it
// for etcd and webhooks). The count shows how much work clients abandon: a
// rise means clients give up before the apiserver answers.
//
// Watches and other long-running requests are not counted: their clients
// end them as a matter of course.
//
// The labels come from a request that may not be authenticated: the verb is
// one the apiserver knows and the resource one it serves, or "other", so
// that no client can add series at will.
func WithAbandonedRequests(handler http.Handler, longRunning request.LongRunningRequestCheck, resources ServedResources) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Deferred: upstream ends a response whose client is gone by
		// panicking with http.ErrAbortHandler, which net/http recovers.
		defer func() {
			if !errors.Is(r.Context().Err(), context.Canceled) {
				return
			}
			info, ok := request.RequestInfoFrom(r.Context())
			if !ok || (longRunning != nil && longRunning(r, info)) {
				return
			}
			verb, resource := boundedLabels(r, info, resources)
			abandonedRequests.WithContext(context.WithoutCancel(r.Context())).WithLabelValues(verb, resource).Inc()
		}()
		handler.ServeHTTP(w, r)
	})
}

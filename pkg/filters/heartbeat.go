package filters

import (
	"net/http"
	"time"

	"github.com/bulwark-k8s/bulwark/pkg/heartbeat"
)

// WithHeartbeats classifies each request as a heartbeat or not, once for
// all of Bulwark's filters (they read the answer from the request's
// context: a heartbeat is never rejected), and records the latency of
// heartbeats apart from all others, so an alert on heartbeat latency is not
// diluted by LISTs. It wraps the whole chain, so the latency includes
// Bulwark's and upstream's filters. Only heartbeats get a new context: the
// other requests pass as they are.
func WithHeartbeats(handler http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		kind := heartbeat.Classify(r.Method, r.URL.Path, r.URL.RawQuery)
		if kind == heartbeat.None {
			handler.ServeHTTP(w, r)
			return
		}
		r = r.WithContext(heartbeat.WithKind(r.Context(), kind))
		start := time.Now()
		handler.ServeHTTP(w, r)
		heartbeatRequestDuration.WithContext(r.Context()).WithLabelValues(kind.String()).Observe(time.Since(start).Seconds())
	})
}

package filters

import (
	"net/http"
	"time"

	"github.com/bulwark-k8s/bulwark/pkg/heartbeat"
)

// WithHeartbeatLatency records the latency of heartbeat requests apart from
// all others, so an alert on heartbeat latency is not diluted by LISTs. It
// wraps the whole chain, so the latency includes Bulwark's and upstream's
// filters.
func WithHeartbeatLatency(handler http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		kind := heartbeat.Classify(r.Method, r.URL.Path, r.URL.RawQuery)
		if kind == heartbeat.None {
			handler.ServeHTTP(w, r)
			return
		}
		start := time.Now()
		handler.ServeHTTP(w, r)
		heartbeatRequestDuration.WithContext(r.Context()).WithLabelValues(kind.String()).Observe(time.Since(start).Seconds())
	})
}

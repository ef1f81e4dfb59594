package app

import (
	"encoding/json"
	"net/http"

	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/apiserver/pkg/server/mux"
	upstream "k8s.io/kubernetes/cmd/kube-apiserver/app"

	"github.com/bulwark-k8s/bulwark/pkg/filters"
)

// userAgentLimitsDebugPath serves the User-Agent limits in force. It is
// behind upstream's authentication and authorization like every
// non-resource path: `kubectl get --raw /debug/bulwark/user-agent-limits`.
const userAgentLimitsDebugPath = "/debug/bulwark/user-agent-limits"

// customizeConfig puts Bulwark's filters around upstream's handler chain.
// Only the aggregator's chain sees requests: it is the outermost server, and
// the servers it delegates to are called without their own filters.
func customizeConfig(config *upstream.Config, limiter *filters.UserAgentLimiter) {
	filters.RegisterMetrics()
	gc := config.Aggregator.GenericConfig
	buildUpstream := gc.BuildHandlerChainFunc
	gc.BuildHandlerChainFunc = func(apiHandler http.Handler, c *genericapiserver.Config) http.Handler {
		// Innermost first: what is added last runs first.
		handler := buildUpstream(apiHandler, c)
		if limiter != nil {
			handler = filters.WithUserAgentLimits(handler, limiter, c.RequestInfoResolver)
		}
		return filters.WithHeartbeatLatency(handler)
	}
}

// installDebugHandlers adds Bulwark's debug endpoints to the server's mux.
func installDebugHandlers(m *mux.PathRecorderMux, limiter *filters.UserAgentLimiter) {
	if limiter == nil {
		return
	}
	m.HandleFunc(userAgentLimitsDebugPath, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(limiter.Status())
	})
}

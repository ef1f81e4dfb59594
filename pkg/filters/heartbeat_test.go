package filters

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"k8s.io/component-base/metrics/testutil"

	"github.com/bulwark-k8s/bulwark/pkg/heartbeat"
)

// TestWithHeartbeats: the filters behind see each request's kind in its
// context, classified once; only heartbeats' latency is recorded.
func TestWithHeartbeats(t *testing.T) {
	RegisterMetrics(NewTopTalkers())
	for _, tt := range []struct {
		method, target string
		want           heartbeat.Kind
	}{
		{"PUT", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1", heartbeat.NodeLease},
		{"PATCH", "/api/v1/nodes/n1/status", heartbeat.NodeStatus},
		{"PUT", "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-scheduler", heartbeat.LeaderElection},
		{"GET", "/api/v1/pods", heartbeat.None},
		{"GET", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1?watch=true", heartbeat.None},
	} {
		t.Run(tt.method+" "+tt.target, func(t *testing.T) {
			heartbeatRequestDuration.Reset()
			var seen heartbeat.Kind
			h := WithHeartbeats(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				seen = heartbeat.KindFrom(r.Context())
			}))
			h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(tt.method, tt.target, nil))
			if seen != tt.want {
				t.Errorf("kind in the context %v, want %v", seen, tt.want)
			}
			if tt.want == heartbeat.None {
				return
			}
			count, err := testutil.GetHistogramMetricCount(heartbeatRequestDuration.WithLabelValues(tt.want.String()))
			if err != nil {
				t.Fatal(err)
			}
			if count != 1 {
				t.Errorf("%d latencies recorded, want 1", count)
			}
		})
	}
}

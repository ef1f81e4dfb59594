package filters

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"k8s.io/apimachinery/pkg/runtime/schema"
)

type fakeCaches map[schema.GroupResource]bool

func (f fakeCaches) Ready(gr schema.GroupResource) (bool, bool) {
	ready, known := f[gr]
	return known, ready
}

func TestWithCacheNotReadyGate(t *testing.T) {
	caches := fakeCaches{
		{Resource: "pods"}:                                 false,
		{Resource: "nodes"}:                                true,
		{Group: "apps", Resource: "deployments"}:           false,
		{Group: "coordination.k8s.io", Resource: "leases"}: false,
	}
	h := withRequestInfo(WithCacheNotReadyGate(okHandler, caches, "loopback-secret"))
	tests := []struct {
		name, method, target, auth string
		want                       int
	}{
		{"list of a filling cache", "GET", "/api/v1/pods", "", http.StatusTooManyRequests},
		{"namespaced list", "GET", "/api/v1/namespaces/a/pods?labelSelector=app%3Dx", "", http.StatusTooManyRequests},
		{"watch", "GET", "/api/v1/pods?watch=true", "", http.StatusTooManyRequests},
		{"grouped resource", "GET", "/apis/apps/v1/deployments", "", http.StatusTooManyRequests},
		{"single object", "GET", "/api/v1/namespaces/a/pods/p", "", http.StatusOK},
		{"write", "POST", "/api/v1/namespaces/a/pods", "", http.StatusOK},
		{"ready cache", "GET", "/api/v1/nodes", "", http.StatusOK},
		{"unknown resource", "GET", "/apis/example.com/v1/widgets", "", http.StatusOK},
		{"loopback client", "GET", "/api/v1/pods", "Bearer loopback-secret", http.StatusOK},
		{"other token", "GET", "/api/v1/pods", "Bearer loopback-secreT", http.StatusTooManyRequests},
		{"heartbeat", "PUT", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1", "", http.StatusOK},
		{"readyz", "GET", "/readyz", "", http.StatusOK},
		{"discovery", "GET", "/api/v1", "", http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(tt.method, tt.target, nil)
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.want {
				t.Errorf("got %d, want %d", rec.Code, tt.want)
			}
			if rec.Code == http.StatusTooManyRequests && rec.Header().Get("Retry-After") != "3" {
				t.Errorf("Retry-After = %q, want 3", rec.Header().Get("Retry-After"))
			}
		})
	}
}

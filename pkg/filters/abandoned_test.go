package filters

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"k8s.io/apimachinery/pkg/util/sets"
	genericfilters "k8s.io/apiserver/pkg/server/filters"
	"k8s.io/component-base/metrics/testutil"
)

func TestWithAbandonedRequests(t *testing.T) {
	longRunning := genericfilters.BasicLongRunningRequestCheck(sets.NewString("watch"), sets.NewString("exec"))
	tests := []struct {
		name, target string
		abandon      bool
		panics       bool
		want         float64
		labels       []string
	}{
		{"abandoned list", "/api/v1/pods", true, false, 1, []string{"list", "pods"}},
		{"abandoned list, aborted by panic", "/api/v1/nodes", true, true, 1, []string{"list", "nodes"}},
		{"completed list", "/api/v1/namespaces/a/configmaps", false, false, 0, []string{"list", "configmaps"}},
		{"abandoned watch", "/api/v1/secrets?watch=true", true, false, 0, []string{"watch", "secrets"}},
		{"abandoned non-resource", "/openapi/v3", true, false, 1, []string{"GET", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			abandonedRequests.Reset()
			RegisterMetrics(NewTopTalkers())
			ctx, cancel := context.WithCancel(context.Background())
			inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tt.abandon {
					cancel() // what net/http does when the client goes away
				}
				if tt.panics {
					panic(http.ErrAbortHandler)
				}
			})
			req := httptest.NewRequest("GET", tt.target, nil).WithContext(ctx)
			func() {
				defer func() {
					if r := recover(); r != nil && r != http.ErrAbortHandler {
						t.Fatalf("unexpected panic %v", r)
					}
				}()
				withRequestInfo(WithAbandonedRequests(inner, longRunning)).ServeHTTP(httptest.NewRecorder(), req)
			}()
			cancel()
			got, err := testutil.GetCounterMetricValue(abandonedRequests.WithLabelValues(tt.labels...))
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("abandoned %v = %v, want %v", tt.labels, got, tt.want)
			}
		})
	}
}

package filters

import (
	"context"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/sets"
	genericfilters "k8s.io/apiserver/pkg/server/filters"
	"k8s.io/component-base/metrics/legacyregistry"
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
		{"abandoned list of a resource not served", "/apis/example.com/v1/widgets", true, false, 1, []string{"list", "other"}},
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
				withRequestInfo(WithAbandonedRequests(inner, longRunning, servedResources)).ServeHTTP(httptest.NewRecorder(), req)
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

// servedResources is a fake ServedResources.
var servedResources = fakeServed{{Resource: "pods"}: true, {Resource: "nodes"}: true, {Resource: "configmaps"}: true, {Resource: "secrets"}: true}

type fakeServed map[schema.GroupResource]bool

func (f fakeServed) Serves(gr schema.GroupResource) bool { return f[gr] }

// TestAbandonedRequestLabelsAreBounded aborts 10,000 requests with random
// methods and paths, as an unauthenticated client may send them: the
// series of the metric stay within the verbs and resources the server
// knows.
func TestAbandonedRequestLabelsAreBounded(t *testing.T) {
	abandonedRequests.Reset()
	RegisterMetrics(NewTopTalkers())
	rng := rand.New(rand.NewPCG(1, 2))
	word := func() string {
		b := make([]byte, 1+rng.IntN(12))
		for i := range b {
			b[i] = "abcdefghijklmnopqrstuvwxyz-."[rng.IntN(28)]
		}
		return string(b)
	}
	methods := []string{"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}
	h := withRequestInfo(WithAbandonedRequests(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), nil, servedResources))
	for i := range 10000 {
		method := methods[rng.IntN(len(methods))]
		if i%3 == 0 {
			method = strings.ToUpper(word())
		}
		var path string
		switch i % 4 {
		case 0:
			path = "/api/v1/" + word()
		case 1:
			path = "/api/v1/namespaces/" + word() + "/" + word() + "/" + word()
		case 2:
			path = "/apis/" + word() + "/v1/" + word()
		default:
			path = "/" + word() + "/" + word()
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // the client is gone
		req := httptest.NewRequest("GET", path, nil).WithContext(ctx)
		req.Method = method
		h.ServeHTTP(httptest.NewRecorder(), req)
	}
	families, err := legacyregistry.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := 0
	for _, f := range families {
		if f.GetName() == "bulwark_abandoned_requests_total" {
			series = len(f.GetMetric())
			for _, m := range f.GetMetric() {
				t.Logf("%v %v", m.GetLabel(), m.GetCounter().GetValue())
			}
		}
	}
	// Verbs (9 + other) of served resources (4 + other), and methods (7 + other).
	if max := 10*5 + 8; series == 0 || series > max {
		t.Errorf("%d series after 10,000 random requests, want 1 to %d", series, max)
	}
}

package filters

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/sets"
	genericfilters "k8s.io/apiserver/pkg/server/filters"
)

// FuzzChain sends arbitrary request lines and User-Agents through the whole
// of Bulwark's chain, every filter on: a LIST-throttling and a blocking
// User-Agent rule, a filling cache, overload shedding. Whatever comes in,
// nothing panics, and the answer is the inner handler's 200, a filter's 429,
// or upstream's own answer to a URL it cannot make sense of.
func FuzzChain(f *testing.F) {
	limiter, _ := newLimiter(f, `apiVersion: bulwark.k8s.io/v1alpha1
kind: UserAgentLimits
rules:
- {name: blocked, userAgent: '^blocked/', qps: 0}
- {name: lists, userAgent: '^lister/', verbs: [list], resources: [pods], qps: 1, burst: 1, per: userAgent}
`)
	chain := Chain{
		RequestInfoResolver: requestInfoResolver,
		LongRunning:         genericfilters.BasicLongRunningRequestCheck(sets.NewString("watch"), sets.NewString("log", "exec")),
		LoopbackToken:       "loopback-secret",
		TopTalkers:          NewTopTalkers(),
		Shedder:             NewOverloadShedder(OverloadConfig{SoftInflight: 1000, HardInflight: 2000}),
		Limiter:             limiter,
		Caches:              fakeCaches{{Resource: "pods"}: false, {Resource: "nodes"}: true},
	}
	h := chain.Wrap(okHandler)

	f.Add("GET", "/api/v1/pods", "labelSelector=app%3Dweb", "lister/1.0")
	f.Add("PUT", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/node-1", "", "blocked/2.0")
	f.Add("PATCH", "/api/v1/nodes/node-1/status", "", "kubelet/v1.37.2")
	f.Add("GET", "/api/v1/namespaces/default/pods/p/log", "follow=true", "kubectl/v1.37.2 (linux/amd64)")
	f.Add("GET", "/api/v1/watch/namespaces/x/pods", "watch=true&resourceVersion=-1&timeoutSeconds=x", "")
	f.Add("GET", "/readyz/../metrics", "", "blocked/1")
	f.Add("DELETE", "/apis/apps/v1/namespaces//deployments/", "limit=-5&continue=%zz", "\x00\xff")
	f.Fuzz(func(t *testing.T, method, path, query, userAgent string) {
		req, err := http.NewRequest(method, "https://apiserver.local", nil)
		if err != nil {
			return // net/http refuses the method before any handler runs
		}
		req.URL.Path, req.URL.RawQuery = path, query
		req.Header.Set("User-Agent", userAgent)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusOK, http.StatusTooManyRequests, http.StatusInternalServerError:
		default:
			t.Fatalf("%s %s?%s (User-Agent %q): %d", method, path, query, userAgent, rec.Code)
		}
		if rec.Code == http.StatusTooManyRequests && rec.Header().Get("Retry-After") == "" {
			t.Fatalf("%s %s?%s: 429 without Retry-After", method, path, query)
		}
	})
}

// TestChainOrder: the limits apply in the documented order, and the
// cache-not-ready gate is off when Caches is nil.
func TestChainOrder(t *testing.T) {
	limiter, _ := newLimiter(t, `apiVersion: bulwark.k8s.io/v1alpha1
kind: UserAgentLimits
rules:
- {name: blocked, userAgent: '^blocked/', qps: 0}
`)
	shedder := NewOverloadShedder(OverloadConfig{SoftInflight: 1})
	chain := Chain{RequestInfoResolver: requestInfoResolver, TopTalkers: NewTopTalkers(), Shedder: shedder, Limiter: limiter}
	h := chain.Wrap(okHandler)
	if rec := serve(h, "GET", "/api/v1/pods", "good/1"); rec.Code != http.StatusOK {
		t.Fatalf("no gate without Caches: %d", rec.Code)
	}
	if rec := serve(h, "GET", "/api/v1/pods", "blocked/1"); rec.Code != http.StatusTooManyRequests {
		t.Fatalf("blocked User-Agent: %d", rec.Code)
	}
	// Shedding runs outside the User-Agent limits: while overloaded, even a
	// blocked client is told so by the shedder.
	shedder.inflight.Store(1)
	rec := serve(h, "GET", "/api/v1/pods", "blocked/1")
	if rec.Code != http.StatusTooManyRequests || !strings.Contains(rec.Body.String(), "overloaded") {
		t.Fatalf("blocked User-Agent while overloaded: %d %s", rec.Code, rec.Body.String())
	}
	if got := chain.TopTalkers.Snapshot(10); len(got.Current) == 0 {
		t.Errorf("top talkers saw nothing: %+v", got)
	}
}

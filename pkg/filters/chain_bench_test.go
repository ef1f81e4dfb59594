package filters

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"

	"k8s.io/apimachinery/pkg/util/sets"
	genericfilters "k8s.io/apiserver/pkg/server/filters"
)

// BenchmarkChain measures what Bulwark's whole chain adds to every request,
// before authentication, with every filter on: a mix of node Lease renewals,
// node status updates, single-object GETs and LISTs from many User-Agents,
// served in parallel (-cpu sets how many cores). docs/filters.md has the figures.
func BenchmarkChain(b *testing.B) {
	limiter, _ := newLimiter(b, `apiVersion: bulwark.k8s.io/v1alpha1
kind: UserAgentLimits
rules:
- {name: blocked, userAgent: '^blocked/', qps: 0}
- {name: lists, userAgent: '^lister/', verbs: [list], resources: [pods], qps: 1000000, burst: 1000000, per: userAgent}
`)
	chain := Chain{
		RequestInfoResolver: requestInfoResolver,
		LongRunning:         genericfilters.BasicLongRunningRequestCheck(sets.NewString("watch"), sets.NewString("log", "exec")),
		LoopbackToken:       "loopback-secret",
		TopTalkers:          NewTopTalkers(),
		Shedder:             NewOverloadShedder(OverloadConfig{SoftInflight: 1 << 30, HardInflight: 1 << 31}),
		Limiter:             limiter,
		Caches:              fakeCaches{{Resource: "pods"}: true, {Resource: "nodes"}: true},
		LargeLists:          NewLargeListLimiter(largeCluster, 32<<20, 1<<20),
	}
	h := chain.Wrap(okHandler)
	// Built once and only read by the chain: what is measured is the chain.
	var requests []*http.Request
	add := func(method, target, userAgent string) {
		req := httptest.NewRequest(method, target, nil)
		req.Header.Set("User-Agent", userAgent)
		requests = append(requests, req)
	}
	for i := range 64 {
		node, ns := "node-"+strconv.Itoa(i), "ns-"+strconv.Itoa(i%8)
		add("PUT", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/"+node, "kubelet/v1.37.2 (linux/amd64) kubernetes/abc")
		add("PATCH", "/api/v1/nodes/"+node+"/status", "kubelet/v1.37.2 (linux/amd64) kubernetes/abc")
		add("GET", "/api/v1/namespaces/"+ns+"/pods/p-"+strconv.Itoa(i), "controller-"+strconv.Itoa(i%16)+"/v1.0")
		add("GET", "/api/v1/namespaces/"+ns+"/pods?labelSelector=app%3Dweb&limit=500", "lister/"+strconv.Itoa(i))
	}
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(next.Add(1)) * 7919
		for pb.Next() {
			h.ServeHTTP(discard{}, requests[i%len(requests)])
			i++
		}
	})
}

// discard is a ResponseWriter that keeps nothing, so that the benchmark
// measures the chain, not a recorder.
type discard struct{}

func (discard) Header() http.Header         { return http.Header{} }
func (discard) Write(p []byte) (int, error) { return len(p), nil }
func (discard) WriteHeader(int)             {}

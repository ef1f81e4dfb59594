package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"

	"github.com/bulwark-k8s/bulwark/internal/nodeagent"
	"github.com/bulwark-k8s/bulwark/internal/pki"
	"github.com/bulwark-k8s/bulwark/internal/seed"
	"github.com/bulwark-k8s/bulwark/test/integration/framework"
)

// floodSLO is the Kubernetes API call latency SLO for single objects.
const floodSLO = time.Second

// TestFlood floods LIST pods (every pod, back to back, from many
// connections) against upstream and then Bulwark on the same etcd. The
// flooder is what floods real clusters: a buggy DaemonSet, a service
// account allowed to list pods, that does not honour Retry-After. First it
// sends one User-Agent, and Bulwark runs as the runbook says an operator
// runs it then (docs/filters.md): with a rule throttling that User-Agent's
// LISTs. Then it sends a different User-Agent per connection, which no rule
// names: what stands in the way is upstream's API Priority and Fairness
// (both servers have it) and Bulwark's large-LIST limit (at the quick size
// with the threshold lowered so that the 5,000 pods count as large). The
// flood starts as soon as each server is ready: the large-LIST limit must
// know the pods' size from their watch cache's filling, not from upstream's
// object count tracker, which has no count for a minute or two after a
// start.
// Meanwhile well-behaved clients read single objects and every node renews
// its Lease. In each phase Bulwark's p99 of both, retries of 429 included
// (as client-go retries), must be under the 1 s SLO and at most half of
// upstream's in the same run, and the mechanism must have acted (the rule's
// or the large-LIST limit's 429s): a Bulwark without the feature serves the
// flood as upstream does and fails. Memory stays under a bound.
func TestFlood(t *testing.T) {
	pods, nodes := sized(20000, 50000), sized(100, 1000)
	etcd := framework.StartEtcd(t, framework.EtcdOptions{})
	seedPodsAndNodes(t, etcd.ClientURL, pods, nodes)
	bundle, err := pki.Ensure(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	limits := filepath.Join(t.TempDir(), "limits.yaml")
	writeFile(t, limits, limitsHeader+"- {name: throttle-flooder, userAgent: '^flooder/', verbs: [list], resources: [pods], qps: 1, burst: 2}\n")
	phases := []struct {
		name      string
		userAgent func(worker int) string
		// mechanism is Bulwark's metric that counts its 429s to the flooder.
		mechanism string
	}{
		{"one User-Agent", func(int) string { return "flooder/1.0" }, `bulwark_user_agent_limit_rejected_requests_total{rule="throttle-flooder"}`},
		{"many User-Agents", func(w int) string { return fmt.Sprintf("client-%d/1.0", w) }, `bulwark_large_list_rejected_requests_total{group="",resource="pods"}`},
	}
	results := map[string]*floodResult{} // by server and phase
	var flooderToken string
	for _, server := range []struct {
		name, binary string
		args         []string
	}{
		{"upstream", framework.Bins(t).Upstream, nil},
		{"bulwark", framework.Bins(t).APIServer, []string{"--user-agent-limits-config=" + limits, "--large-list-min-bytes=" + sized("8Mi", "32Mi")}},
	} {
		s := framework.StartAPIServer(t, framework.APIServerOptions{Etcd: etcd, PKI: bundle, Name: server.name, Binary: server.binary, Args: server.args})
		if flooderToken == "" {
			flooderToken = daemonSetToken(t, s)
		}
		for _, phase := range phases {
			var before float64
			if server.name == "bulwark" {
				before = metricSum(t, metrics(t, s), phase.mechanism)
			}
			r := flood(t, s, flooderToken, pods, nodes, sized(15*time.Second, 3*time.Minute), sized(24, 64), phase.userAgent)
			results[server.name+", "+phase.name] = r
			prefix := fmt.Sprintf("%s, flood from %s: ", server.name, phase.name)
			figure(t, prefix+"good clients p99", r.good.quantile(0.99).Seconds()*1000, "ms")
			figure(t, prefix+"heartbeats p99", r.heartbeats.quantile(0.99).Seconds()*1000, "ms")
			figure(t, prefix+"good requests and heartbeats failed", float64(r.failed), "requests")
			figure(t, prefix+"flooder LISTs served", float64(r.floodServed), "requests")
			figure(t, prefix+"flooder LISTs rejected (429)", float64(r.floodRejected), "requests")
			figure(t, prefix+"peak RSS", r.peakRSS, "MiB")
			if server.name != "bulwark" {
				continue
			}
			if n := metricSum(t, metrics(t, s), phase.mechanism) - before; n == 0 {
				t.Errorf("%s%s did not move: the mechanism did not act", prefix, phase.mechanism)
			}
			theirs := results["upstream, "+phase.name]
			for _, c := range []struct {
				what        string
				ours, their time.Duration
			}{
				{"good clients' p99", r.good.quantile(0.99), theirs.good.quantile(0.99)},
				{"heartbeats' p99", r.heartbeats.quantile(0.99), theirs.heartbeats.quantile(0.99)},
			} {
				if c.ours > floodSLO || c.ours > c.their/2 {
					t.Errorf("%s%s %v; want under %v and at most half of upstream's (%v)", prefix, c.what, c.ours, floodSLO, c.their)
				}
			}
			if r.failed > 0 {
				t.Errorf("%s%d good requests or heartbeats failed", prefix, r.failed)
			}
			if bound := sized(1536.0, 4096.0); r.peakRSS > bound {
				t.Errorf("%speak RSS %.0f MiB, want under %.0f", prefix, r.peakRSS, bound)
			}
		}
		if err := s.Stop(); err != nil {
			t.Errorf("%s did not stop cleanly after the flood: %v", server.name, err)
		}
	}
}

// daemonSetToken returns a token of a node agent's service account, which
// may list pods and is not exempt from upstream's API Priority and Fairness.
func daemonSetToken(t *testing.T, s *framework.APIServer) string {
	t.Helper()
	token, err := nodeagent.Token(context.Background(), s.Client)
	if err != nil {
		t.Fatal(err)
	}
	return token
}

type floodResult struct {
	good, heartbeats           latencies
	failed                     int64
	floodServed, floodRejected int64
	peakRSS                    float64
}

// flood runs flooders (with token), good clients and heartbeats against s
// for d.
func flood(t *testing.T, s *framework.APIServer, token string, pods, nodes int, d time.Duration, workers int, userAgent func(int) string) *floodResult {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	r := &floodResult{}
	var served, rejected, failed atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		cfg := anonymous(s.Config)
		cfg.BearerToken = token
		cfg.UserAgent = userAgent(w)
		client, err := rest.HTTPClientFor(cfg)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, "GET", s.URL+"/api/v1/pods", nil)
				req.Header.Set("Accept", "application/vnd.kubernetes.protobuf")
				resp, err := client.Do(req)
				if err != nil {
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				// A buggy client: it does not honour Retry-After.
				if resp.StatusCode == http.StatusTooManyRequests {
					rejected.Add(1)
				} else {
					served.Add(1)
				}
			}
		}()
	}

	// Good clients: client-go, retrying 429 as it does by default.
	goodConfig := rest.CopyConfig(s.Config)
	goodConfig.UserAgent = "good-client/1.0"
	for c := range 4 {
		client := ownConnectionClient(t, goodConfig)
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for n := c; ; n++ {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				start := time.Now()
				var err error
				switch i := n * 7919 % pods; n % 3 {
				case 0:
					_, err = client.CoreV1().Pods(seed.NamespaceName(floodShape.PodNamespace(i))).Get(ctx, floodShape.PodName(i), metav1.GetOptions{})
				case 1:
					_, err = client.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + seed.NodeName(i%nodes)})
				default:
					_, err = client.CoreV1().Nodes().Get(ctx, seed.NodeName(i%nodes), metav1.GetOptions{})
				}
				switch {
				case err == nil:
					r.good.add(time.Since(start))
				case ctx.Err() == nil:
					failed.Add(1)
				}
			}
		}()
	}

	// Heartbeats: every node renews its Lease every 10 s, as a kubelet does.
	kubeletConfig := rest.CopyConfig(s.Config)
	kubeletConfig.UserAgent = "kubelet/v1.37.2 (linux/amd64)"
	kubelet := ownConnectionClient(t, kubeletConfig)
	for i := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			timer := time.NewTimer(time.Duration(i) * 10 * time.Second / time.Duration(nodes))
			defer timer.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-timer.C:
				}
				timer.Reset(10 * time.Second)
				start := time.Now()
				patch := fmt.Sprintf(`{"spec":{"renewTime":%q}}`, time.Now().UTC().Format("2006-01-02T15:04:05.000000Z"))
				_, err := kubelet.CoordinationV1().Leases("kube-node-lease").Patch(ctx, seed.NodeName(i), types.MergePatchType, []byte(patch), metav1.PatchOptions{})
				switch {
				case err == nil:
					r.heartbeats.add(time.Since(start))
				case ctx.Err() == nil:
					failed.Add(1)
				}
			}
		}()
	}

	for ctx.Err() == nil {
		r.peakRSS = max(r.peakRSS, rssMiB(t, s.Pid()))
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	wg.Wait()
	r.failed, r.floodServed, r.floodRejected = failed.Load(), served.Load(), rejected.Load()
	return r
}

// floodShape spreads the flood's pods over 10 namespaces and 500 apps,
// each about 1.8 KiB in storage.
var floodShape = seed.Data{Namespaces: 10, Apps: 500, PodAnnotationBytes: 1000}

// seedPodsAndNodes writes pods of floodShape, nodes and their
// Leases straight into etcd.
func seedPodsAndNodes(t *testing.T, etcdURL string, pods, nodes int) {
	t.Helper()
	d := floodShape
	d.Pods, d.Nodes = pods, nodes
	putObjects(t, etcdURL, d.Objects(seed.Now()))
}

package integration

import (
	"context"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bulwark-k8s/bulwark/internal/kwokcluster"
	"github.com/bulwark-k8s/bulwark/test/integration/framework"
)

// The small kwok cluster of the integration test.
const (
	kwokNodes       = 20
	kwokDeployments = 4
	kwokPods        = 300
)

// TestKwokClusterRequestsLikeUpstream runs a whole simulated control plane
// (kube-scheduler, kube-controller-manager, kwok's nodes) on upstream's
// kube-apiserver and on Bulwark, each on its own etcd, with the same
// workload: Deployments created, scaled up, rolled and deleted. Every pod
// must start on both, and Bulwark must serve no more LISTs and WATCHes of
// each resource than upstream did for the same work: a client that lists
// again on Bulwark (after a 429 of one of its filters, a watch ended
// differently, a bookmark it cannot use) is the load Bulwark exists to
// remove.
func TestKwokClusterRequestsLikeUpstream(t *testing.T) {
	bins := framework.Bins(t)
	counts := map[string]map[kwokcluster.Request]int{}
	for _, server := range []struct{ name, binary string }{{"upstream", bins.Upstream}, {"bulwark", bins.APIServer}} {
		counts[server.name] = runKwokWorkload(t, server.name, server.binary)
	}

	// LISTs and WATCHes by resource and scope, all the cluster's clients
	// together (the workload's polling lasts as long as the workload).
	type key struct{ verb, resource, scope string }
	byResource := map[string]map[key]int{}
	for server, c := range counts {
		byResource[server] = map[key]int{}
		for r, n := range c {
			if (r.Verb == "list" || r.Verb == "watch") && r.FromCluster() {
				byResource[server][key{r.Verb, r.Resource, r.Scope}] += n
			}
		}
	}
	keys := slices.SortedFunc(maps.Keys(byResource["upstream"]), func(a, b key) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
	for k := range byResource["bulwark"] {
		if _, ok := byResource["upstream"][k]; !ok {
			keys = append(keys, k)
		}
	}
	var report strings.Builder
	for _, k := range keys {
		up, ours := byResource["upstream"][k], byResource["bulwark"][k]
		fmt.Fprintf(&report, "%-6s %-40s %-9s upstream %4d bulwark %4d\n", k.verb, k.resource, k.scope, up, ours)
		// Timing alone moves a count by a request or two (an informer
		// that starts before or after a resource's cache is ready).
		if ours > up+max(2, up/10) {
			t.Errorf("%s %s (%s): bulwark served %d, upstream %d, for the same workload:\n%s", k.verb, k.resource, k.scope, ours, up, clientsOf(counts, k.verb, k.resource, k.scope))
		}
	}
	t.Logf("LISTs and WATCHes:\n%s", report.String())
}

// clientsOf lists, for both servers, who sent requests of one kind.
func clientsOf(counts map[string]map[kwokcluster.Request]int, verb, resource, scope string) string {
	var b strings.Builder
	for _, server := range []string{"upstream", "bulwark"} {
		for r, n := range counts[server] {
			if r.Verb == verb && r.Resource == resource && r.Scope == scope {
				fmt.Fprintf(&b, "  %s: %d by %s\n", server, n, r.Client)
			}
		}
	}
	return b.String()
}

// runKwokWorkload runs the workload on a new cluster around binary and
// returns the requests its apiserver served.
func runKwokWorkload(t *testing.T, name, binary string) map[kwokcluster.Request]int {
	t.Helper()
	dir := t.TempDir()
	audit, err := kwokcluster.AuditArgs(dir)
	if err != nil {
		t.Fatal(err)
	}
	etcd := framework.StartEtcd(t, framework.EtcdOptions{})
	server := framework.StartAPIServer(t, framework.APIServerOptions{Binary: binary, Etcd: etcd, Name: name, Args: audit})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cluster, err := kwokcluster.Start(ctx, kwokcluster.Config{
		Binaries:  framework.ClusterBins(t),
		Dir:       filepath.Join(dir, "cluster"),
		APIServer: server.APIServer,
		Nodes:     kwokNodes,
	})
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	start := time.Now()
	result, err := kwokcluster.Workload{Namespace: "workload", Deployments: kwokDeployments, Pods: kwokPods, PhaseTimeout: 3 * time.Minute}.Run(ctx, server.Client)
	if err != nil {
		t.Fatalf("%s: workload: %v (%v)", name, err, cluster.Healthy())
	}
	if err := cluster.Healthy(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	cluster.Stop()
	// Pods of the first three phases: half, the other half, all again.
	if started := len(result.PodStartup); started < 2*kwokPods {
		t.Errorf("%s: %d pods started, want %d", name, started, 2*kwokPods)
	}
	t.Logf("%s: workload in %v: %v; pod startup p50 %v, p99 %v", name, time.Since(start).Round(time.Second), result.Phases,
		result.PodStartup[len(result.PodStartup)/2], result.PodStartup[len(result.PodStartup)*99/100])
	if err := server.Stop(); err != nil {
		t.Errorf("%s: %v", name, err)
	}
	counts, err := kwokcluster.CountRequests(kwokcluster.AuditLog(dir))
	if err != nil {
		t.Fatal(err)
	}
	return counts
}

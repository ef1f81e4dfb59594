// Command bench measures Bulwark's kube-apiserver side by side with the
// upstream kube-apiserver of the same release, built from the same module
// graph, on the same machine and the same data, in one run.
//
// It seeds one etcd (pods across namespaces, nodes and label values, plus
// nodes and their Leases), then starts each apiserver in turn on that etcd
// and runs every scenario against it, several times (-runs), each run in
// the reverse order of the one before. It prints a table (scenario, metric,
// upstream, ours, ours/upstream: medians over the runs, each ratio taken
// within a run, with its min–max) and writes it as JSON (every run's
// figures) and Markdown, with the machine, the commit and the parameters,
// under the output directory; with -plot it also draws latency
// distributions to PNG.
//
//	make bench        # quick: 50,000 pods, three runs, under 15 minutes
//	make bench-full   # scale: 200,000 pods, 10,000 nodes, one run
//	make bench-million # a million objects of every kind a large cluster holds
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"

	"github.com/bulwark-k8s/bulwark/internal/seed"
)

func main() {
	var (
		p        Params
		binDir   = flag.String("bin-dir", "_output/bin", "directory with kube-apiserver, kube-apiserver-upstream and etcd")
		out      = flag.String("out", "_output/bench", "directory for results")
		first    = flag.String("first", "auto", "server measured first in the first run: upstream, ours, or auto (alternates between invocations)")
		runs     = flag.Int("runs", 3, "runs on the same data, each in the reverse order of the one before; figures are their medians")
		only     = flag.String("scenarios", "", "regular expression: run only the scenarios whose name matches")
		plot     = flag.Bool("plot", true, "draw latency distributions to PNG")
		extraArg = flag.String("ours-args", "", "extra flags for our server, space-separated")
		tuning   = flag.String("upstream-tuning", "hack/bench/apf-confine-node-agent.yaml", "API Priority and Fairness objects an operator applies to upstream against the flooder; its scenarios run a third time, on upstream tuned with them (empty: not)")
		profile  = flag.Duration("cpu-profile", 0, "take a CPU profile of the apiserver over the first this long of each scenario, into the output directory's profiles/ (0: none)")
	)
	flag.IntVar(&p.Pods, "pods", 50000, "pods to seed")
	flag.IntVar(&p.Nodes, "nodes", 1000, "nodes (and node Leases) to seed")
	flag.IntVar(&p.Namespaces, "namespaces", 10, "namespaces the pods spread over")
	flag.IntVar(&p.Apps, "apps", 500, "distinct values of the app label")
	flag.BoolVar(&p.Workloads, "workloads", false, "seed each app's pods in a namespace as a Deployment's: Deployment, ReplicaSets, Service, EndpointSlice")
	flag.IntVar(&p.ConfigMaps, "configmaps", 0, "ConfigMaps to seed (1 KiB each)")
	flag.IntVar(&p.Secrets, "secrets", 0, "Secrets to seed")
	flag.IntVar(&p.Events, "events", 0, "Events to seed (pods' starts)")
	flag.IntVar(&p.Widgets, "widgets", 0, "objects of a custom resource (widgets."+seed.WidgetGroup+") to seed, with its CRD; adds the custom resource's label LIST scenario")
	flag.IntVar(&p.ListSamples, "list-samples", 30, "requests per LIST scenario (paged LISTs: a tenth)")
	flag.IntVar(&p.GetSamples, "get-samples", 1000, "requests of the GET scenario")
	flag.IntVar(&p.Writes, "writes", 1000, "pods created, then updated")
	flag.IntVar(&p.WriteConcurrency, "write-concurrency", 32, "concurrent writers")
	flag.IntVar(&p.Watchers, "watchers", 200, "watchers of the fan-out scenario")
	flag.IntVar(&p.FanoutUpdates, "fanout-updates", 10, "updates sent to the fan-out watchers")
	flag.DurationVar(&p.HeartbeatDuration, "heartbeat-duration", 4*time.Second, "duration of each heartbeat scenario")
	flag.DurationVar(&p.FloodDuration, "flood-duration", 5*time.Second, "duration of the flood scenario")
	flag.IntVar(&p.FloodConcurrency, "flood-concurrency", 8, "concurrent LISTs of the flooding client")
	flag.IntVar(&p.GoodClients, "good-clients", 4, "well-behaved clients during the flood (10 req/s each)")
	flag.IntVar(&p.CostRequests, "cost-requests", 1500, "requests of each cost scenario")
	flag.IntVar(&p.StormClients, "storm-clients", 1500, "clients of the reconnect storm, each on a new TLS connection")
	flag.IntVar(&p.RestartWatchers, "restart-watchers", 200, "kubelet-style watchers of the restart scenario (at most one per node)")
	flag.IntVar(&p.SlowWatchers, "slow-watchers", 300, "watchers of the slow-watchers scenario, a tenth of them slow (at most one per node)")
	flag.IntVar(&p.SlowBurst, "slow-burst", 1200, "pod updates of the slow-watchers scenario's burst, 500 a second")
	flag.IntVar(&p.NamespacedInformers, "namespaced-informers", 1000, "informers of one namespace's ConfigMaps started at once (the scenario runs with -configmaps)")
	flag.IntVar(&p.KwokNodes, "kwok-nodes", 1000, "nodes kwok simulates in the kwok cluster scenario")
	flag.IntVar(&p.KwokPods, "kwok-pods", 0, "pods of the kwok cluster scenario's Deployments at full size (0: the scenario is not run; make bench-kwok runs it)")
	flag.Parse()
	// Thousands of reflectors log every retry; the table is the output.
	klog.SetLogger(logr.Discard())

	if *runs < 1 {
		fail(fmt.Errorf("-runs must be at least 1"))
	}
	filter, err := regexp.Compile(*only)
	if err != nil {
		fail(fmt.Errorf("-scenarios: %w", err))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	run := &Run{
		Params:   p,
		BinDir:   *binDir,
		Out:      *out,
		Filter:   filter,
		Runs:     *runs,
		OursArgs: splitArgs(*extraArg),
		Tuning:   *tuning,
		Profile:  *profile,
	}
	if run.Order, err = order(*first, filepath.Join(*out, "last-first")); err != nil {
		fail(err)
	}
	report, err := run.Execute(ctx)
	if report != nil {
		report.Print(os.Stdout)
		if err := report.Write(*out, *plot); err != nil {
			fail(err)
		}
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}

func splitArgs(s string) []string {
	var args []string
	for _, a := range regexp.MustCompile(`\s+`).Split(s, -1) {
		if a != "" {
			args = append(args, a)
		}
	}
	return args
}

// order returns the two servers in the order to measure them. "auto"
// alternates between runs, remembered in stateFile, so that neither server
// always runs on a fresher etcd or a cooler machine.
func order(first, stateFile string) ([]string, error) {
	switch first {
	case "upstream":
		return []string{"upstream", "ours"}, nil
	case "ours":
		return []string{"ours", "upstream"}, nil
	case "auto":
		last, _ := os.ReadFile(stateFile)
		next := "upstream"
		if string(last) == "upstream" {
			next = "ours"
		}
		if err := os.MkdirAll(filepath.Dir(stateFile), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(stateFile, []byte(next), 0o644); err != nil {
			return nil, err
		}
		return order(next, stateFile)
	default:
		return nil, fmt.Errorf("-first must be upstream, ours or auto, not %q", first)
	}
}

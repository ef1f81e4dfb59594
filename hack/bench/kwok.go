package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/bulwark-k8s/bulwark/internal/kwokcluster"
)

// kwokScenario is the name of the whole-cluster scenario in the report.
const kwokScenario = "kwok cluster"

// sloClass names a request as the Kubernetes API call latency SLO groups
// them: mutating, GET, LIST by scope; the Lease renewals of the nodes
// apart (their heartbeats).
func sloClass(m *dto.Metric) string {
	verb, resource, scope := label(m, "verb"), label(m, "resource"), label(m, "scope")
	switch {
	case verb == "PUT" && resource == "leases":
		return "node Lease renewal"
	case verb == "GET":
		return "GET"
	case verb == "LIST":
		return "LIST " + scope
	case verb == "POST" || verb == "PUT" || verb == "PATCH" || verb == "DELETE":
		return "mutating"
	}
	return ""
}

// kwokDeployments is how many Deployments the kwok cluster's pods are in:
// a thousand pods each.
func (p Params) kwokDeployments() int { return max(1, p.KwokPods/1000) }

// kwokCluster measures one server under a whole simulated cluster: on an
// etcd and a server of its own (the seeded pods, their nodes missing, would
// be garbage to its controllers), kube-scheduler, kube-controller-manager
// and kwok's nodes run the Deployment workload.
func (r *Run) kwokCluster(ctx context.Context, run int, name string, dir string, report *Report) error {
	logf("%s: %s (%d nodes, %d pods)", name, kwokScenario, r.Params.KwokNodes, r.Params.KwokPods)
	dir = filepath.Join(dir, "kwok-"+name)
	args := []string{"--shutdown-watch-termination-grace-period=10s"}
	if name == "ours" {
		args = append(args, r.OursArgs...)
	}
	local, err := kwokcluster.StartLocal(ctx, kwokcluster.LocalConfig{
		BinDir: r.BinDir, APIServer: r.binary(name), Name: name, Args: args, Dir: dir, Nodes: r.Params.KwokNodes,
	})
	if err != nil {
		return err
	}
	defer local.Stop()
	proc, cluster := local.APIServer, local.Cluster

	before, err := scrapeHistograms(ctx, proc.Config, "apiserver_request_sli_duration_seconds", sloClass)
	if err != nil {
		return err
	}
	usage := startUsage(proc.Pid())
	start := time.Now()
	workload := kwokcluster.Workload{Namespace: "workload", Deployments: r.Params.kwokDeployments(), Pods: r.Params.KwokPods, PhaseTimeout: time.Hour}
	result, err := workload.Run(ctx, proc.Client)
	if err != nil {
		return fmt.Errorf("%s: %w (%v)", kwokScenario, err, cluster.Healthy())
	}
	took := time.Since(start)
	used := usage.Stop()
	after, err := scrapeHistograms(ctx, proc.Config, "apiserver_request_sli_duration_seconds", sloClass)
	if err != nil {
		return err
	}
	report.add(run, kwokScenario, "workload duration", "s", name, took.Seconds())
	report.addLatencies(run, kwokScenario, "pod startup", name, result.PodStartup)
	for _, class := range []string{"mutating", "GET", "LIST namespace", "LIST cluster", "node Lease renewal"} {
		if a := after[class]; a != nil {
			report.add(run, kwokScenario, class+" p99 (server)", "ms", name, 1000*serverQuantile(before[class], a, 0.99))
		}
	}
	report.add(run, kwokScenario, "apiserver CPU", "s", name, used.CPUSeconds)
	report.add(run, kwokScenario, "apiserver peak RSS", "MiB", name, used.PeakRSSMiB)

	counts, err := kwokcluster.CountRequests(kwokcluster.AuditLog(dir))
	if err != nil {
		return err
	}
	var lists, podLists, watches float64
	for req, n := range counts {
		if !req.FromCluster() {
			continue
		}
		switch req.Verb {
		case "list":
			lists += float64(n)
			if req.Resource == "pods" && req.Scope == "cluster" {
				podLists += float64(n)
			}
		case "watch":
			watches += float64(n)
		}
	}
	report.add(run, kwokScenario, "LISTs served to the cluster", "requests", name, lists)
	report.add(run, kwokScenario, "cluster-scope LISTs of pods", "requests", name, podLists)
	report.add(run, kwokScenario, "WATCHes served to the cluster", "requests", name, watches)
	logf("%s: %s: %v, phases %s", name, kwokScenario, took.Round(time.Second), phases(result.Phases))
	return cluster.Healthy()
}

func phases(ps []kwokcluster.Phase) string {
	var parts []string
	for _, p := range ps {
		parts = append(parts, fmt.Sprintf("%s %v", p.Name, p.Took.Round(time.Second)))
	}
	return strings.Join(parts, ", ")
}

// Command kwok-cluster starts a simulated cluster on this machine: etcd, a
// kube-apiserver (Bulwark's, or any other binary), kube-scheduler,
// kube-controller-manager and kwok's nodes, and writes an admin kubeconfig.
// With -workload-pods it runs the Deployment workload once, prints what it
// measured and the requests the apiserver served per kind, and exits;
// otherwise it runs until interrupted.
//
//	make kwok-cluster KWOK_NODES=100
//	go run ./hack/kwok-cluster -apiserver _output/bin/kube-apiserver-upstream -workload-pods 3000
package main

import (
	"context"
	"flag"
	"fmt"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/bulwark-k8s/bulwark/internal/kwokcluster"
)

func main() {
	bin := flag.String("bin-dir", "_output/bin", "directory of etcd, kube-scheduler, kube-controller-manager and kwok")
	apiserver := flag.String("apiserver", "_output/bin/kube-apiserver", "the kube-apiserver binary")
	dir := flag.String("dir", "_output/kwok-cluster", "directory of data, certificates, kubeconfigs and logs (emptied first)")
	nodes := flag.Int("nodes", 100, "nodes kwok simulates")
	pods := flag.Int("workload-pods", 0, "run the Deployment workload with this many pods, print its figures and exit (0: run until interrupted)")
	deployments := flag.Int("workload-deployments", 10, "Deployments of the workload")
	flag.Parse()
	if err := run(*bin, *apiserver, *dir, *nodes, *pods, *deployments); err != nil {
		fmt.Fprintln(os.Stderr, "kwok-cluster:", err)
		os.Exit(1)
	}
}

func run(bin, apiserver, dir string, nodes, pods, deployments int) error {
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	local, err := kwokcluster.StartLocal(ctx, kwokcluster.LocalConfig{BinDir: bin, APIServer: apiserver, Dir: dir, Nodes: nodes})
	if err != nil {
		return err
	}
	defer local.Stop()
	server, cluster := local.APIServer, local.Cluster
	kubeconfig := filepath.Join(dir, "admin.kubeconfig")
	if err := server.PKI.WriteAdminKubeconfig(kubeconfig, server.URL); err != nil {
		return err
	}
	fmt.Printf("%s on %s with %d kwok nodes Ready; logs in %s.\n  kubectl --kubeconfig %s get nodes\n", filepath.Base(apiserver), server.URL, nodes, dir, kubeconfig)

	if pods == 0 {
		fmt.Println("Interrupt (Ctrl-C) to stop.")
		<-ctx.Done()
		return nil
	}
	start := time.Now()
	result, err := kwokcluster.Workload{Namespace: "workload", Deployments: deployments, Pods: pods, PhaseTimeout: 30 * time.Minute}.Run(ctx, server.Client)
	if err != nil {
		return err
	}
	fmt.Printf("workload of %d pods in %d Deployments: %v\n", pods, deployments, time.Since(start).Round(time.Second))
	for _, p := range result.Phases {
		fmt.Printf("  %-15s %v\n", p.Name, p.Took.Round(100*time.Millisecond))
	}
	if n := len(result.PodStartup); n > 0 {
		fmt.Printf("pod startup (created to Running and Ready, %d pods): p50 %v, p99 %v\n", n, result.PodStartup[n/2], result.PodStartup[n*99/100])
	}
	if err := cluster.Healthy(); err != nil {
		return err
	}
	counts, err := kwokcluster.CountRequests(kwokcluster.AuditLog(dir))
	if err != nil {
		return err
	}
	fmt.Println("LISTs and WATCHes served, by kind:")
	keys := slices.SortedFunc(maps.Keys(counts), func(a, b kwokcluster.Request) int { return strings.Compare(a.String(), b.String()) })
	for _, r := range keys {
		if r.Verb == "list" || r.Verb == "watch" {
			fmt.Printf("  %5d  %s\n", counts[r], r)
		}
	}
	return nil
}

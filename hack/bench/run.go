package main

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"k8s.io/client-go/rest"

	"github.com/bulwark-k8s/bulwark/internal/localcluster"
	"github.com/bulwark-k8s/bulwark/internal/pki"
)

// Run is one benchmark run: one data set, both servers.
type Run struct {
	Params   Params
	BinDir   string
	Out      string
	Filter   *regexp.Regexp
	Order    []string
	OursArgs []string
	// Tuning is a file of API Priority and Fairness objects: when set, the
	// tunedScenarios are measured a third time, on upstream with them.
	Tuning string
}

// tunedUpstream names upstream's binary with Run.Tuning applied.
const tunedUpstream = "upstream-tuned"

// tunedScenarios are those with a misbehaving client, which an operator
// without Bulwark answers with a FlowSchema.
var tunedScenarios = regexp.MustCompile(`^(flood|heartbeats under LIST flood|cost: flooder LISTs)$`)

// server is the apiserver being measured.
type server struct {
	name    string
	proc    *localcluster.APIServer
	url     string
	cfg     *rest.Config
	http    *http.Client
	etcdURL string
	// flooder is the misbehaving client's config: a node agent's service
	// account, not an admin (whom upstream's APF exempts).
	flooder *rest.Config
}

func (r *Run) binary(name string) string {
	return filepath.Join(r.BinDir, map[string]string{"upstream": "kube-apiserver-upstream", tunedUpstream: "kube-apiserver-upstream", "ours": "kube-apiserver"}[name])
}

// Execute seeds the data and measures every scenario on both servers.
func (r *Run) Execute(ctx context.Context) (*Report, error) {
	// Server and etcd logs and data stay in Out/work until the next run,
	// for a look after a surprising number.
	dir, err := filepath.Abs(filepath.Join(r.Out, "work"))
	if err != nil {
		return nil, err
	}
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	bundle, err := pki.Ensure(filepath.Join(dir, "pki"), nil)
	if err != nil {
		return nil, err
	}
	etcd, err := localcluster.StartEtcd(localcluster.EtcdConfig{
		Binary: filepath.Join(r.BinDir, "etcd"), Dir: dir,
		ExtraArgs: []string{"--quota-backend-bytes=8589934592", "--backend-bbolt-freelist-type=map"},
	})
	if err != nil {
		return nil, err
	}
	defer etcd.Stop()

	report := newReport(r)
	logf("seeding %d pods, %d nodes and Leases, %d namespaces into etcd", r.Params.Pods, r.Params.Nodes, r.Params.Namespaces)
	took, err := seedData(ctx, etcd.ClientURL, r.Params.Data)
	if err != nil {
		return nil, fmt.Errorf("seed: %w", err)
	}
	report.SeedSeconds = took.Seconds()
	logf("seeded in %.1fs", took.Seconds())

	servers := r.Order
	if r.Tuning != "" && slices.ContainsFunc(scenarios(r.Params), func(sc scenario) bool { return r.runs(tunedUpstream, sc.name) }) {
		servers = append(servers, tunedUpstream)
	}
	for _, name := range servers {
		if err := r.measure(ctx, name, bundle, etcd, dir, report); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	return report, nil
}

// runs tells whether a server measures a scenario.
func (r *Run) runs(server, scenario string) bool {
	return r.Filter.MatchString(scenario) && (server != tunedUpstream || tunedScenarios.MatchString(scenario))
}

func (r *Run) measure(ctx context.Context, name string, bundle *pki.Bundle, etcd *localcluster.Etcd, dir string, report *Report) error {
	var args []string
	if name == "ours" {
		args = r.OursArgs
	}
	version, err := exec.Command(r.binary(name), "--version").Output()
	if err != nil {
		return err
	}
	report.Versions[name] = strings.TrimSpace(string(version))

	started := time.Now()
	proc, err := localcluster.StartAPIServer(localcluster.APIServerConfig{
		Binary: r.binary(name), Name: name, Dir: dir, PKI: bundle, Etcd: etcd, Args: args,
	})
	if err != nil {
		return err
	}
	defer func() {
		if err := proc.Stop(); err != nil {
			logf("%s: stop: %v", name, err)
		}
	}()
	s := &server{name: name, proc: proc, url: proc.URL, cfg: proc.Config, etcdURL: etcd.ClientURL}
	if s.http, err = httpClient(s.cfg, goodUserAgent); err != nil {
		return err
	}
	if err := warmUp(ctx, s); err != nil {
		return err
	}
	if s.flooder, err = flooderConfig(ctx, s.cfg); err != nil {
		return err
	}
	if name == tunedUpstream {
		if err := applyTuning(ctx, s.cfg, r.Tuning); err != nil {
			return fmt.Errorf("%s: %w", r.Tuning, err)
		}
	}
	report.add("startup", "ready with caches filled", "s", name, time.Since(started).Seconds())
	report.add("startup", "RSS after start", "MiB", name, orNaN(rssMiB(proc.Pid())))

	for _, sc := range scenarios(r.Params) {
		if !r.runs(name, sc.name) {
			continue
		}
		logf("%s: %s", name, sc.name)
		before, err := scrapeRequestDurations(ctx, s.cfg)
		if err != nil {
			return err
		}
		usage := startUsage(s.proc.Pid())
		m, err := sc.run(ctx, s, r.Params)
		u := usage.Stop()
		if err != nil {
			return fmt.Errorf("%s: %w", sc.name, err)
		}
		if m.usage != nil {
			u = *m.usage
		}
		for metric, l := range m.latencies {
			report.addLatencies(sc.name, metric, name, l)
		}
		if m.serverKey != "" {
			after, err := scrapeRequestDurations(ctx, s.cfg)
			if err != nil {
				return err
			}
			for _, q := range []float64{0.5, 0.9, 0.99} {
				v := serverQuantile(before[m.serverKey], after[m.serverKey], q)
				report.add(sc.name, fmt.Sprintf("server p%g (%s)", q*100, m.serverKey), "ms", name, v*1000)
			}
		}
		for _, v := range m.values {
			report.add(sc.name, v.name, v.unit, name, v.value)
		}
		report.add(sc.name, "apiserver CPU", "s", name, u.CPUSeconds)
		report.add(sc.name, "apiserver peak RSS", "MiB", name, u.PeakRSSMiB)
	}
	return nil
}

// warmUp waits until the watch caches the scenarios read are filled: a
// fresh apiserver is ready before its caches are, and a measurement that
// includes a cache's start is a measurement of the start.
func warmUp(ctx context.Context, s *server) error {
	for _, path := range []string{"/api/v1/pods", "/api/v1/nodes", "/apis/coordination.k8s.io/v1/leases"} {
		err := poll(ctx, 3*time.Minute, func() bool {
			_, _, err := timed(ctx, s.http, http.MethodGet, s.url+path+"?limit=1&resourceVersion=0", goodUserAgent, "", nil)
			return err == nil
		})
		if err != nil {
			return fmt.Errorf("warm-up %s: %w", path, err)
		}
	}
	return nil
}

// orNaN is a measurement, or NaN (printed as a missing figure, never a
// number) when it could not be taken; the error is logged.
func orNaN(v float64, err error) float64 {
	if err != nil {
		logf("measurement failed: %v", err)
		return math.NaN()
	}
	return v
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

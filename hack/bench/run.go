package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/client-go/rest"

	"github.com/bulwark-k8s/bulwark/internal/localcluster"
	"github.com/bulwark-k8s/bulwark/internal/pki"
	"github.com/bulwark-k8s/bulwark/internal/seed"
)

// Run is one benchmark: one data set, both servers, measured Runs times
// in alternating order.
type Run struct {
	Params Params
	BinDir string
	Out    string
	Filter *regexp.Regexp
	// Order is the order of the first run; each next run reverses the
	// previous one's, so that neither server always meets the fresher
	// etcd, the cooler machine or the other's leftovers.
	Order    []string
	Runs     int
	OursArgs []string
	// Tuning is a file of API Priority and Fairness objects: when set, the
	// tunedScenarios are measured a third time, on upstream with them
	// applied after its own scenarios.
	Tuning string
	// Profile is how long a CPU profile of the server is taken from the
	// start of each scenario (0: none), for a pprof diff of the two
	// servers on the same run.
	Profile time.Duration
}

// tunedUpstream names upstream with Run.Tuning applied.
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
	return filepath.Join(r.BinDir, map[string]string{"upstream": "kube-apiserver-upstream", "ours": "kube-apiserver"}[name])
}

// Execute seeds the data and measures every scenario on both servers. If
// a scenario fails, the report holds what was measured before it.
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
	seeded := slices.ContainsFunc(scenarios(r.Params), func(sc scenario) bool { return r.Filter.MatchString(sc.name) })
	kwok := r.Params.KwokPods > 0 && r.Filter.MatchString(kwokScenario)
	if seeded {
		logf("seeding %d objects (%d pods, %d nodes and Leases, %d namespaces) into etcd", r.Params.Count(), r.Params.Pods, r.Params.Nodes, r.Params.Namespaces)
		took, err := seedData(ctx, etcd.ClientURL, r.Params.Data)
		if err != nil {
			return nil, fmt.Errorf("seed: %w", err)
		}
		report.SeedSeconds = took.Seconds()
		logf("seeded in %.1fs", took.Seconds())
	}

	servers := r.Order
	start := time.Now()
	defer func() { report.Seconds = time.Since(start).Seconds() }()
	for run := range r.Runs {
		logf("run %d of %d: %s", run+1, r.Runs, strings.Join(servers, ", "))
		report.Orders = append(report.Orders, servers)
		for _, name := range servers {
			if err := r.recordVersion(name, report); err != nil {
				return nil, err
			}
			if seeded {
				if err := r.measure(ctx, run, name, bundle, etcd, dir, report); err != nil {
					return report.partial(), fmt.Errorf("run %d, %s: %w", run+1, name, err)
				}
			}
		}
		for _, name := range servers {
			if kwok {
				if err := r.kwokCluster(ctx, run, name, dir, report); err != nil {
					return report.partial(), fmt.Errorf("run %d, %s: %w", run+1, name, err)
				}
			}
		}
		servers = slices.Clone(servers)
		slices.Reverse(servers)
	}
	report.summarize()
	return report, nil
}

// recordVersion puts what the server's binary says of its version in the report.
func (r *Run) recordVersion(name string, report *Report) error {
	version, err := exec.Command(r.binary(name), "--version").Output()
	if err != nil {
		return err
	}
	report.Versions[name] = strings.TrimSpace(string(version))
	return nil
}

// runs tells whether a server measures a scenario.
func (r *Run) runs(server, scenario string) bool {
	return r.Filter.MatchString(scenario) && (server != tunedUpstream || tunedScenarios.MatchString(scenario))
}

func (r *Run) measure(ctx context.Context, run int, name string, bundle *pki.Bundle, etcd *localcluster.Etcd, dir string, report *Report) error {
	args := []string{
		// The watches end when a graceful stop begins, as a production
		// apiserver is configured: otherwise the open watches hold the stop
		// for the HTTP server's shutdown timeout (60 s), on both servers.
		"--shutdown-watch-termination-grace-period=10s",
	}
	if r.Params.Workloads {
		// The seeded Services' cluster IPs are in it.
		args = append(args, "--service-cluster-ip-range="+seed.ServiceCIDR)
	}
	if name == "ours" {
		args = append(args, r.OursArgs...)
	}
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
	if err := warmUp(ctx, s, r.Params); err != nil {
		return err
	}
	if s.flooder, err = flooderConfig(ctx, s.cfg); err != nil {
		return err
	}
	report.add(run, "startup", "ready with caches filled", "s", name, time.Since(started).Seconds())
	report.add(run, "startup", "apiserver CPU to ready", "s", name, orNaN(cpuSeconds(proc.Pid())))
	report.add(run, "startup", "RSS after start", "MiB", name, orNaN(rssMiB(proc.Pid())))
	report.add(run, "startup", "live heap after GC", "MiB", name, orNaN(r.liveHeap(ctx, run, name, s)))

	for _, sc := range scenarios(r.Params) {
		if r.runs(name, sc.name) {
			if err := r.scenario(ctx, run, name, s, sc, report); err != nil {
				return err
			}
		}
	}
	if name != "upstream" || r.Tuning == "" || !slices.ContainsFunc(scenarios(r.Params), func(sc scenario) bool { return r.runs(tunedUpstream, sc.name) }) {
		return nil
	}
	// The operator's answer to the incident, applied to the running server.
	logf("%s: applying %s", name, r.Tuning)
	if err := applyTuning(ctx, s.cfg, r.Tuning); err != nil {
		return fmt.Errorf("%s: %w", r.Tuning, err)
	}
	for _, sc := range scenarios(r.Params) {
		if r.runs(tunedUpstream, sc.name) {
			if err := r.scenario(ctx, run, tunedUpstream, s, sc, report); err != nil {
				return err
			}
		}
	}
	// The objects are in etcd: the next server must not find them.
	if err := removeTuning(ctx, s.cfg, r.Tuning); err != nil {
		return fmt.Errorf("%s: %w", r.Tuning, err)
	}
	return nil
}

// scenario measures one scenario on server s, whose figures go to the
// report under name.
func (r *Run) scenario(ctx context.Context, run int, name string, s *server, sc scenario, report *Report) error {
	logf("%s: %s", name, sc.name)
	if err := collectGarbage(ctx, s); err != nil {
		return err
	}
	before, err := scrapeRequestDurations(ctx, s.cfg)
	if err != nil {
		return err
	}
	usage := startUsage(s.proc.Pid())
	profiled := r.startProfile(ctx, run, name, s, sc.name)
	m, err := sc.run(ctx, s, r.Params)
	u := usage.Stop()
	if perr := <-profiled; perr != nil {
		logf("%s: %s: CPU profile: %v", name, sc.name, perr)
	}
	if gaveUp := (*incomplete)(nil); errors.As(err, &gaveUp) {
		// What the server could not do on this machine is its figure; the
		// next scenarios need a server that is not drowning in it.
		logf("%s: %s did not complete: %v", name, sc.name, err)
		report.add(run, sc.name, "did not complete: "+gaveUp.why+", after", "s", name, gaveUp.after.Seconds())
		report.add(run, sc.name, "apiserver peak RSS", "MiB", name, u.PeakRSSMiB)
		return r.restartServer(ctx, s)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", sc.name, err)
	}
	if m.cleanup != nil {
		if err := m.cleanup(ctx); err != nil {
			return fmt.Errorf("%s: undo its writes: %w", sc.name, err)
		}
	}
	if m.usage != nil {
		u = *m.usage
	}
	for metric, l := range m.latencies {
		report.addLatencies(run, sc.name, metric, name, l)
	}
	if m.serverKey != "" {
		after, err := scrapeRequestDurations(ctx, s.cfg)
		if err != nil {
			return err
		}
		for _, q := range []float64{0.5, 0.9, 0.99} {
			v := serverQuantile(before[m.serverKey], after[m.serverKey], q)
			report.add(run, sc.name, fmt.Sprintf("server p%g (%s)", q*100, m.serverKey), "ms", name, v*1000)
		}
	}
	for _, v := range m.values {
		report.add(run, sc.name, v.name, v.unit, name, v.value)
	}
	report.add(run, sc.name, "apiserver CPU", "s", name, u.CPUSeconds)
	report.add(run, sc.name, "apiserver peak RSS", "MiB", name, u.PeakRSSMiB)
	return nil
}

// restartServer kills a server and starts it again, filled and warmed up
// as at its first start.
func (r *Run) restartServer(ctx context.Context, s *server) error {
	logf("%s: restarting it", s.name)
	s.proc.Kill()
	if err := s.proc.Start(); err != nil {
		return fmt.Errorf("%s: starting again: %w", s.name, err)
	}
	return warmUp(ctx, s, r.Params)
}

// liveHeap collects the server's garbage, writes its heap profile into
// Out/profiles/<run>-startup-<server>.heap.pprof (what holds the memory:
// `go tool pprof -sample_index=inuse_space`) and returns its live heap.
func (r *Run) liveHeap(ctx context.Context, run int, name string, s *server) (float64, error) {
	_, profile, err := timed(ctx, s.http, http.MethodGet, s.url+"/debug/pprof/heap?gc=1", goodUserAgent, "", nil)
	if err != nil {
		return 0, err
	}
	file := filepath.Join(r.Out, "profiles", fmt.Sprintf("%d-startup-%s.heap.pprof", run+1, name))
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return 0, err
	}
	if err := os.WriteFile(file, profile, 0o644); err != nil {
		return 0, err
	}
	_, text, err := timed(ctx, s.http, http.MethodGet, s.url+"/debug/pprof/heap?debug=1", goodUserAgent, "", nil)
	if err != nil {
		return 0, err
	}
	return heapAllocMiB(text)
}

// heapAllocMiB reads HeapAlloc from a text heap profile's MemStats.
func heapAllocMiB(text []byte) (float64, error) {
	for line := range strings.Lines(string(text)) {
		if v, ok := strings.CutPrefix(line, "# HeapAlloc = "); ok {
			n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return n / (1 << 20), err
		}
	}
	return 0, errors.New("the heap profile has no HeapAlloc")
}

// notInFileName is what a scenario's name becomes "_" for in a file name.
var notInFileName = regexp.MustCompile(`[^a-zA-Z0-9.]+`)

// startProfile takes a CPU profile of the server for r.Profile into
// Out/profiles/<run>-<scenario>-<server>.pprof; the channel gives its error
// when it is written (at once when r.Profile is 0).
func (r *Run) startProfile(ctx context.Context, run int, name string, s *server, scenario string) <-chan error {
	done := make(chan error, 1)
	if r.Profile == 0 {
		done <- nil
		return done
	}
	file := filepath.Join(r.Out, "profiles", fmt.Sprintf("%d-%s-%s.pprof", run+1, notInFileName.ReplaceAllString(scenario, "_"), name))
	go func() {
		url := fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", s.url, int(math.Ceil(r.Profile.Seconds())))
		_, body, err := timed(ctx, s.http, http.MethodGet, url, goodUserAgent, "", nil)
		if err == nil {
			if err = os.MkdirAll(filepath.Dir(file), 0o755); err == nil {
				err = os.WriteFile(file, body, 0o644)
			}
		}
		done <- err
	}()
	return done
}

// warmUp waits until the watch caches of the seeded resources are filled:
// a fresh apiserver is ready before its caches are, and a measurement that
// includes a cache's start is a measurement of the start. (Events have no
// watch cache, on either server.)
func warmUp(ctx context.Context, s *server, p Params) error {
	paths := []string{"/api/v1/pods", "/api/v1/nodes", "/apis/coordination.k8s.io/v1/leases"}
	if p.Workloads {
		paths = append(paths, "/apis/apps/v1/deployments", "/apis/apps/v1/replicasets", "/api/v1/services", "/apis/discovery.k8s.io/v1/endpointslices")
	}
	if p.ConfigMaps > 0 {
		paths = append(paths, "/api/v1/configmaps")
	}
	if p.Secrets > 0 {
		paths = append(paths, "/api/v1/secrets")
	}
	if p.Widgets > 0 {
		// A custom resource's watch cache starts at its first request.
		paths = append(paths, widgetsPath)
	}
	for _, path := range paths {
		err := poll(ctx, 10*time.Minute, func() bool {
			_, _, err := timed(ctx, s.http, http.MethodGet, s.url+path+"?limit=1&resourceVersion=0", goodUserAgent, "", nil)
			return err == nil
		})
		if err != nil {
			return fmt.Errorf("warm-up %s: %w", path, err)
		}
	}
	return nil
}

// collectGarbage has the server collect its garbage, so that a scenario
// does not pay for the one before it: the servers' heaps differ in size,
// and a collection falling in one server's short scenario and not in the
// other's is a difference of when, not of how much.
func collectGarbage(ctx context.Context, s *server) error {
	return poll(ctx, time.Minute, func() bool {
		_, _, err := timed(ctx, s.http, http.MethodGet, s.url+"/debug/pprof/heap?gc=1", goodUserAgent, "", nil)
		return err == nil
	})
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

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/bulwark-k8s/bulwark/internal/seed"
)

// nodeLeasePeriod is how often a kubelet renews its node Lease.
const nodeLeasePeriod = 10 * time.Second

// nodesPerConnection is how many of the heartbeat scenario's nodes share a
// connection: each renews one Lease at a time, so a connection never has
// more streams than Go's HTTP/2 client opens before the server's settings.
const nodesPerConnection = 100

// flood is a misbehaving client: workers sending cluster-wide LIST pods
// (consistent reads of every pod) back to back until ctx is done.
type flood struct {
	ok, rejected, failed atomic.Int64
	done                 sync.WaitGroup
}

func startFlood(ctx context.Context, s *server, workers int) (*flood, error) {
	f := &flood{}
	client, err := rest.HTTPClientFor(ownConnection(s.flooder, floodUserAgent))
	if err != nil {
		return nil, err
	}
	for range workers {
		f.done.Add(1)
		go func() {
			defer f.done.Done()
			for ctx.Err() == nil {
				resp, err := get(ctx, client, s.url+"/api/v1/pods", protobufAccept, floodUserAgent)
				if err != nil {
					if ctx.Err() == nil {
						f.failed.Add(1)
						time.Sleep(100 * time.Millisecond)
					}
					continue
				}
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				switch {
				case err != nil:
					f.failed.Add(1)
				case resp.StatusCode == http.StatusTooManyRequests:
					f.rejected.Add(1)
					// A client-go client honours Retry-After; a buggy one
					// may not, and this one does not either.
				case resp.StatusCode/100 == 2:
					f.ok.Add(1)
				default:
					f.failed.Add(1)
				}
			}
		}()
	}
	return f, nil
}

func (f *flood) values(d time.Duration) []namedValue {
	f.done.Wait()
	return []namedValue{
		{"flooder LISTs served", "req/s", float64(f.ok.Load()) / d.Seconds()},
		{"flooder LISTs rejected (429)", "req/s", float64(f.rejected.Load()) / d.Seconds()},
	}
}

// heartbeatScenario renews the Lease of every seeded node at the kubelet's
// period, each node on its own schedule, for the heartbeat duration.
func heartbeatScenario(ctx context.Context, s *server, p Params, withFlood bool) (*measurement, error) {
	// Each group of nodesPerConnection nodes renews on a connection of its
	// own, opened here, as kubelets each have theirs: one client for all
	// would open connections during the run (Go's HTTP/2 client takes 100
	// streams on a new one before the server's settings arrive), and the
	// first of them that loses its handshake to the loaded machine fails
	// 100 renewals at once, on any server.
	clients := make([]kubernetes.Interface, (p.Nodes+nodesPerConnection-1)/nodesPerConnection)
	for c := range clients {
		cfg := ownConnection(s.cfg, "kubelet/v1.37.2 (linux/amd64) bench")
		cfg.ContentType = protobufAccept
		var err error
		if clients[c], err = kubernetes.NewForConfig(cfg); err != nil {
			return nil, err
		}
	}
	client := func(node int) kubernetes.Interface { return clients[node/nodesPerConnection] }
	current := make([]*coordinationv1.Lease, p.Nodes)
	if _, _, err := parallel(ctx, p.Nodes, 32, func(i int) (time.Duration, error) {
		l, err := client(i).CoordinationV1().Leases("kube-node-lease").Get(ctx, seed.NodeName(i), metav1.GetOptions{})
		current[i] = l
		return 0, err
	}); err != nil {
		return nil, err
	}

	runCtx, cancel := context.WithTimeout(ctx, p.HeartbeatDuration)
	defer cancel()
	var f *flood
	if withFlood {
		var err error
		if f, err = startFlood(runCtx, s, p.FloodConcurrency); err != nil {
			return nil, err
		}
	}
	var mu sync.Mutex
	var lat Latencies
	var failures renewalFailures
	var wg sync.WaitGroup
	for i := range p.Nodes {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			timer := time.NewTimer(rand.N(nodeLeasePeriod))
			defer timer.Stop()
			for {
				select {
				case <-runCtx.Done():
					return
				case <-timer.C:
				}
				start := time.Now()
				l, err := renew(runCtx, client(i), current[i])
				if err != nil {
					if runCtx.Err() == nil {
						failures.add(err)
					}
				} else {
					current[i] = l
					mu.Lock()
					lat = append(lat, time.Since(start))
					mu.Unlock()
				}
				timer.Reset(nodeLeasePeriod)
			}
		}(i)
	}
	wg.Wait()
	m := &measurement{
		latencies: map[string]Latencies{"renewal latency": lat},
		serverKey: "PUT leases",
		values:    failures.values(),
	}
	if f != nil {
		m.values = append(m.values, f.values(p.HeartbeatDuration)...)
	}
	return m, nil
}

// renewalFailures counts failed Lease renewals by why they failed, and
// logs the first failure of each kind.
type renewalFailures struct {
	mu     sync.Mutex
	counts [len(renewalFailureKinds)]int64
}

// renewalFailureKinds are the rows of the failures' breakdown: a
// renewal that fails with 429 was shed, one that timed out queued too
// long, one whose connection broke was closed on (or never reached the
// server).
var renewalFailureKinds = [...]string{"429", "timed out (504 or client)", "other HTTP status", "connection", "other"}

func (f *renewalFailures) add(err error) {
	var status apierrors.APIStatus
	kind := len(renewalFailureKinds) - 1
	switch {
	case apierrors.IsTooManyRequests(err):
		kind = 0
	case apierrors.IsTimeout(err) || apierrors.IsServerTimeout(err) || errors.Is(err, context.DeadlineExceeded):
		kind = 1
	case errors.As(err, &status):
		kind = 2
	case utilnet.IsProbableEOF(err) || utilnet.IsConnectionReset(err) || utilnet.IsHTTP2ConnectionLost(err) || errors.As(err, new(net.Error)):
		kind = 3
	}
	f.mu.Lock()
	f.counts[kind]++
	first := f.counts[kind] == 1
	f.mu.Unlock()
	if first {
		logf("first failed Lease renewal (%s): %v", renewalFailureKinds[kind], err)
	}
}

func (f *renewalFailures) values() []namedValue {
	f.mu.Lock()
	defer f.mu.Unlock()
	var total int64
	values := []namedValue{{"failed renewals", "count", 0}}
	for i, kind := range renewalFailureKinds {
		total += f.counts[i]
		values = append(values, namedValue{"failed renewals: " + kind, "count", float64(f.counts[i])})
	}
	values[0].value = float64(total)
	return values
}

// renew updates a Lease as the kubelet does: from its last copy, and after
// a conflict from a fresh read.
func renew(ctx context.Context, client kubernetes.Interface, l *coordinationv1.Lease) (*coordinationv1.Lease, error) {
	leases := client.CoordinationV1().Leases(l.Namespace)
	for range 5 {
		l = l.DeepCopy()
		l.Spec.RenewTime = &metav1.MicroTime{Time: time.Now()}
		updated, err := leases.Update(ctx, l, metav1.UpdateOptions{})
		if !apierrors.IsConflict(err) {
			return updated, err
		}
		if l, err = leases.Get(ctx, l.Name, metav1.GetOptions{}); err != nil {
			return nil, err
		}
	}
	return nil, errors.New("lease renewal kept conflicting")
}

// floodScenario runs the flooder against well-behaved clients.
func floodScenario(ctx context.Context, s *server, p Params) (*measurement, error) {
	runCtx, cancel := context.WithTimeout(ctx, p.FloodDuration)
	defer cancel()
	f, err := startFlood(runCtx, s, p.FloodConcurrency)
	if err != nil {
		return nil, err
	}
	good, err := startGoodClients(runCtx, s, p)
	if err != nil {
		return nil, err
	}
	m := good.measurement(p.FloodDuration)
	m.values = append(m.values, f.values(p.FloodDuration)...)
	return m, nil
}

// goodClients are well-behaved clients, each on a connection of its own,
// sending a fixed mix (GET pod, LIST a node's pods, GET node) ten times a
// second until ctx is done.
type goodClients struct {
	mu        sync.Mutex
	latencies Latencies
	good, bad atomic.Int64
	done      sync.WaitGroup
}

func startGoodClients(ctx context.Context, s *server, p Params) (*goodClients, error) {
	g := &goodClients{}
	for c := range p.GoodClients {
		client, err := httpClient(s.cfg, goodUserAgent)
		if err != nil {
			return nil, err
		}
		g.done.Add(1)
		go func() {
			defer g.done.Done()
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for n := c; ; n++ {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				var path string
				switch j := n * 7919 % p.Pods; n % 3 {
				case 0:
					path = "/api/v1/namespaces/" + seed.NamespaceName(p.PodNamespace(j)) + "/pods/" + p.PodName(j)
				case 1:
					path = "/api/v1/pods?fieldSelector=spec.nodeName%3D" + seed.NodeName(j%p.Nodes)
				default:
					path = "/api/v1/nodes/" + seed.NodeName(j%p.Nodes)
				}
				d, _, err := timed(ctx, client, http.MethodGet, s.url+path, goodUserAgent, "", nil)
				if ctx.Err() != nil {
					return
				}
				if err != nil {
					g.bad.Add(1)
					continue
				}
				g.good.Add(1)
				g.mu.Lock()
				g.latencies = append(g.latencies, d)
				g.mu.Unlock()
			}
		}()
	}
	return g, nil
}

// measurement waits for the clients to stop and reports them over d.
func (g *goodClients) measurement(d time.Duration) *measurement {
	g.done.Wait()
	return &measurement{
		latencies: map[string]Latencies{"good-client latency": g.latencies},
		serverKey: "GET pods",
		values: []namedValue{
			{"good-client goodput", "req/s", float64(g.good.Load()) / d.Seconds()},
			{"good-client failures", "count", float64(g.bad.Load())},
		},
	}
}

// stormGiveUp bounds how long a storm client keeps trying.
const stormGiveUp = 60 * time.Second

// stormScenario is a reconnect storm: p.StormClients clients, as kubelets
// after a failover, each open a new TLS connection with a client
// certificate at the same moment and GET their Node, retrying with backoff
// until served, while the well-behaved clients run on connections they
// already had.
func stormScenario(ctx context.Context, s *server, p Params) (*measurement, error) {
	tlsConfig, err := rest.TLSConfigFor(s.cfg)
	if err != nil {
		return nil, err
	}
	goodCtx, stopGood := context.WithCancel(ctx)
	defer stopGood()
	good, err := startGoodClients(goodCtx, s, p)
	if err != nil {
		return nil, err
	}
	shedBefore, err := scrapeShed(ctx, s)
	if err != nil {
		return nil, err
	}
	var (
		mu       sync.Mutex
		served   Latencies
		retries  atomic.Int64
		unserved atomic.Int64
		storm    sync.WaitGroup
	)
	start := time.Now()
	for i := range p.StormClients {
		storm.Add(1)
		go func() {
			defer storm.Done()
			transport := &http.Transport{TLSClientConfig: tlsConfig.Clone(), ForceAttemptHTTP2: true, TLSHandshakeTimeout: 10 * time.Second}
			defer transport.CloseIdleConnections()
			client := &http.Client{Transport: transport, Timeout: 30 * time.Second}
			for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 2*time.Second) {
				if err := getOK(ctx, client, s.url+"/api/v1/nodes/"+seed.NodeName(i%p.Nodes)); err == nil {
					mu.Lock()
					served = append(served, time.Since(start))
					mu.Unlock()
					return
				}
				if ctx.Err() != nil || time.Since(start) > stormGiveUp {
					unserved.Add(1)
					return
				}
				retries.Add(1)
				time.Sleep(backoff/2 + rand.N(backoff/2))
			}
		}()
	}
	storm.Wait()
	elapsed := time.Since(start)
	stopGood()
	m := good.measurement(elapsed)
	shedAfter, err := scrapeShed(ctx, s)
	if err != nil {
		return nil, err
	}
	for _, level := range []string{"soft", "hard"} {
		m.values = append(m.values, namedValue{"requests shed as overloaded (" + level + ")", "count", shedAfter[level] - shedBefore[level]})
	}
	m.latencies["storm client served after"] = served
	m.values = append(m.values,
		namedValue{"storm clients served", "count", float64(len(served))},
		namedValue{"storm clients not served in 60 s", "count", float64(unserved.Load())},
		namedValue{"storm retries", "count", float64(retries.Load())},
		namedValue{"storm duration", "s", elapsed.Seconds()},
	)
	return m, nil
}

// scrapeShed reads how many requests Bulwark's overload shedding has
// answered 429, by level (none on upstream).
func scrapeShed(ctx context.Context, s *server) (map[string]float64, error) {
	shed := map[string]float64{}
	for _, level := range []string{"soft", "hard"} {
		n, err := scrapeCounter(ctx, s.cfg, "bulwark_overload_shed_requests_total", map[string]string{"level": level})
		if err != nil {
			return nil, err
		}
		shed[level] = n
	}
	return shed, nil
}

func getOK(ctx context.Context, client *http.Client, url string) error {
	resp, err := get(ctx, client, url, protobufAccept, "bench-storm/1.0")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return nil
}

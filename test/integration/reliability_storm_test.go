package integration

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/bulwark-k8s/bulwark/internal/seed"
	"github.com/bulwark-k8s/bulwark/test/integration/framework"
)

// TestReconnectStorm sends hundreds (thousands at full size) of clients at
// the apiserver at once, each with a TLS handshake of its own, retrying with
// backoff as client-go does: first the moment it is started again after a
// SIGKILL (a crashed replica), then while it runs (the clients of a failed
// replica failing over), beside upstream for comparison. It is ready within
// 30 s of the restart and every storm client is served within a minute.
// While the second storm runs, clients on established connections and the
// readiness probe are answered under the 1 s SLO at the quick size; the
// storm's clients run on the same two cores, and at full size their own
// handshakes take the CPU from either server, so there the latencies are
// reported beside upstream's only.
func TestReconnectStorm(t *testing.T) {
	nodes, clients := sized(100, 1000), sized(500, 5000)
	etcd := framework.StartEtcd(t, framework.EtcdOptions{})
	seedPodsAndNodes(t, etcd.ClientURL, 0, nodes)
	s := framework.StartAPIServer(t, framework.APIServerOptions{Etcd: etcd})
	tlsConfig, err := rest.TLSConfigFor(s.Config)
	if err != nil {
		t.Fatal(err)
	}

	s.Process.Kill()
	restarted := time.Now()
	ready := make(chan error, 1)
	var readyAfter time.Duration // written before ready is sent on
	go func() {
		err := s.Start()
		readyAfter = time.Since(restarted)
		ready <- err
	}()
	served, unserved := storm(s, tlsConfig, clients, nodes)
	if err := <-ready; err != nil {
		t.Fatal(err)
	}
	figure(t, "storm clients", float64(clients), "clients")
	figure(t, "restart into a storm: ready after", readyAfter.Seconds(), "s")
	figure(t, "restart into a storm: all clients served after", served.quantile(1).Seconds(), "s")
	figure(t, "restart into a storm: clients not served within a minute", float64(unserved), "clients")
	if readyAfter > 30*time.Second {
		t.Errorf("ready %v after the restart, want within 30s", readyAfter)
	}
	if unserved > 0 {
		t.Errorf("restart into a storm: %d clients not served within a minute", unserved)
	}

	// The second storm, on Bulwark and, for comparison, on upstream.
	upstream := framework.StartAPIServer(t, framework.APIServerOptions{Etcd: etcd, PKI: s.PKI, Name: "upstream", Binary: framework.Bins(t).Upstream})
	for _, server := range []struct {
		name string
		s    *framework.APIServer
	}{{"bulwark", s}, {"upstream", upstream}} {
		prefix := server.name + ", storm on a running server: "
		served, unserved, established, readiness := stormWithProbes(t, server.s, clients, nodes)
		figure(t, prefix+"all clients served after", served.quantile(1).Seconds(), "s")
		figure(t, prefix+"clients not served within a minute", float64(unserved), "clients")
		for _, q := range []float64{0.5, 0.9, 0.99} {
			figure(t, fmt.Sprintf("%sestablished clients p%.0f", prefix, q*100), established.quantile(q).Seconds()*1000, "ms")
			figure(t, fmt.Sprintf("%s/readyz p%.0f", prefix, q*100), readiness.quantile(q).Seconds()*1000, "ms")
		}
		if server.name != "bulwark" {
			continue
		}
		if unserved > 0 {
			t.Errorf("%s%d clients not served within a minute", prefix, unserved)
		}
		if fullSize() {
			continue
		}
		for what, l := range map[string]*latencies{"established clients": established, "/readyz": readiness} {
			if p99 := l.quantile(0.99); p99 > time.Second {
				t.Errorf("%s%s p99 %v, want under 1s", prefix, what, p99)
			}
		}
	}
}

// stormWithProbes runs a storm on s while four clients on established
// connections GET a node, and /readyz, every 20 ms.
func stormWithProbes(t *testing.T, s *framework.APIServer, clients, nodes int) (served *latencies, unserved int, established, readiness *latencies) {
	tlsConfig, err := rest.TLSConfigFor(s.Config)
	if err != nil {
		t.Fatal(err)
	}
	established, readiness = &latencies{}, &latencies{}
	done := make(chan struct{})
	var probes sync.WaitGroup
	for range 4 {
		probe := ownConnectionClient(t, s.Config)
		if _, err := probe.CoreV1().Nodes().Get(context.Background(), seed.NodeName(0), metav1.GetOptions{}); err != nil {
			t.Fatal(err)
		}
		probes.Add(1)
		go func() {
			defer probes.Done()
			for {
				start := time.Now()
				if _, err := probe.CoreV1().Nodes().Get(context.Background(), seed.NodeName(0), metav1.GetOptions{}); err != nil {
					t.Errorf("established client during the storm: %v", err)
				} else {
					established.add(time.Since(start))
				}
				start = time.Now()
				if body, err := probe.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(context.Background()); err != nil {
					t.Errorf("/readyz during the storm: %v %s", err, body)
				} else {
					readiness.add(time.Since(start))
				}
				select {
				case <-done:
					return
				case <-time.After(20 * time.Millisecond):
				}
			}
		}()
	}
	served, unserved = storm(s, tlsConfig, clients, nodes)
	close(done)
	probes.Wait()
	return served, unserved, established, readiness
}

// storm has n clients GET a node each, every one on a new connection,
// retrying with jittered backoff until served or a minute has passed; it
// returns when they are done.
func storm(s *framework.APIServer, tlsConfig *tls.Config, n, nodes int) (served *latencies, unserved int) {
	served = &latencies{}
	var failed atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			transport := &http.Transport{TLSClientConfig: tlsConfig.Clone(), ForceAttemptHTTP2: true, TLSHandshakeTimeout: 10 * time.Second}
			defer transport.CloseIdleConnections()
			client := &http.Client{Transport: transport, Timeout: 30 * time.Second}
			for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 4*time.Second) {
				resp, err := client.Get(s.URL + "/api/v1/nodes/" + seed.NodeName(i%nodes))
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode == http.StatusOK {
						served.add(time.Since(start))
						return
					}
				}
				if time.Since(start) > time.Minute {
					failed.Add(1)
					return
				}
				time.Sleep(backoff/2 + rand.N(backoff/2))
			}
		}()
	}
	wg.Wait()
	return served, int(failed.Load())
}

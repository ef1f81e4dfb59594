package integration

import (
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/bulwark-k8s/bulwark/test/integration/framework"
)

// TestReconnectStorm kills the apiserver (SIGKILL, as a crashed replica)
// and, the moment it is started again, lets thousands of clients reconnect
// at once, each with a TLS handshake of its own, retrying with backoff as
// client-go does. The handshake guard and shedding keep it responsive: it
// is ready within 30 s, a client on an established connection is served
// under the 1 s SLO throughout, and every storm client is served within a
// minute.
func TestReconnectStorm(t *testing.T) {
	nodes, clients := sized(100, 1000), sized(1000, 5000)
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
	go func() { ready <- s.Start() }()

	var served latencies
	var unserved atomic.Int64
	var storm sync.WaitGroup
	for i := range clients {
		storm.Add(1)
		go func() {
			defer storm.Done()
			transport := &http.Transport{TLSClientConfig: tlsConfig.Clone(), ForceAttemptHTTP2: true, TLSHandshakeTimeout: 10 * time.Second}
			defer transport.CloseIdleConnections()
			client := &http.Client{Transport: transport, Timeout: 30 * time.Second}
			for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 4*time.Second) {
				resp, err := client.Get(s.URL + "/api/v1/nodes/" + nodeName(i%nodes))
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode == http.StatusOK {
						served.add(time.Since(restarted))
						return
					}
				}
				if time.Since(restarted) > time.Minute {
					unserved.Add(1)
					return
				}
				time.Sleep(backoff/2 + rand.N(backoff/2))
			}
		}()
	}

	if err := <-ready; err != nil {
		t.Fatal(err)
	}
	readyAfter := time.Since(restarted)
	// A client with an established connection, served throughout the storm.
	var established latencies
	probe := ownConnectionClient(t, s.Config)
	stormDone := make(chan struct{})
	go func() {
		storm.Wait()
		close(stormDone)
	}()
	for done := false; !done; {
		start := time.Now()
		if _, err := probe.CoreV1().Nodes().Get(context.Background(), nodeName(0), metav1.GetOptions{}); err != nil {
			t.Errorf("established client during the storm: %v", err)
		} else {
			established.add(time.Since(start))
		}
		select {
		case <-stormDone:
			done = true
		case <-time.After(100 * time.Millisecond):
		}
	}

	figure(t, "storm clients", float64(clients), "clients")
	figure(t, "ready after a SIGKILL restart into the storm", readyAfter.Seconds(), "s")
	figure(t, "storm clients served: p50", served.quantile(0.5).Seconds(), "s")
	figure(t, "storm clients served: all", served.quantile(1).Seconds(), "s")
	figure(t, "storm clients not served within a minute", float64(unserved.Load()), "clients")
	figure(t, "established client during the storm: p99", established.quantile(0.99).Seconds()*1000, "ms")
	if readyAfter > 30*time.Second {
		t.Errorf("ready %v after the restart, want within 30s", readyAfter)
	}
	if n := unserved.Load(); n > 0 {
		t.Errorf("%d storm clients not served within a minute", n)
	}
	if p99 := established.quantile(0.99); p99 > time.Second {
		t.Errorf("established client's p99 %v during the storm, want under 1s", p99)
	}
}

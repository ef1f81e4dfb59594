package integration

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"github.com/bulwark-k8s/bulwark/test/integration/framework"
)

// clientWordMark starts every word the test makes up, so that a series
// naming one is found on /metrics.
const clientWordMark = "zqx"

// TestClientChosenLabelsStayBounded sends 10,000 requests with made-up
// methods and paths, without credentials and as an admin, most aborted
// while in flight, to Bulwark and to upstream on one etcd. No metric series
// of Bulwark's may name a word the client chose; the test reports how many
// of upstream's do.
func TestClientChosenLabelsStayBounded(t *testing.T) {
	etcd := framework.StartEtcd(t, framework.EtcdOptions{})
	bulwark := framework.StartAPIServer(t, framework.APIServerOptions{Etcd: etcd, Name: "bulwark"})
	upstream := framework.StartAPIServer(t, framework.APIServerOptions{Etcd: etcd, Name: "upstream", Binary: framework.Bins(t).Upstream, PKI: bulwark.PKI})
	for _, s := range []struct {
		name   string
		server *framework.APIServer
	}{{"bulwark", bulwark}, {"upstream", upstream}} {
		before := strings.Count(metrics(t, s.server), "\n")
		sendMadeUpRequests(t, s.server, 10000)
		after := metrics(t, s.server)
		var minted []string
		for _, line := range strings.Split(after, "\n") {
			if !strings.HasPrefix(line, "#") && strings.Contains(line, clientWordMark) {
				minted = append(minted, line)
			}
		}
		figure(t, fmt.Sprintf("client-chosen labels, %s: series naming a made-up word after 10,000 requests", s.name), float64(len(minted)), "series")
		figure(t, fmt.Sprintf("client-chosen labels, %s: /metrics lines added", s.name), float64(strings.Count(after, "\n")-before), "lines")
		families := map[string]int{}
		for _, line := range minted {
			name, _, _ := strings.Cut(line, "{")
			families[strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")]++
		}
		if len(minted) > 0 {
			t.Logf("%s: series naming a made-up word, by metric: %v; for example %s", s.name, families, minted[0])
		}
		if s.name == "bulwark" {
			for _, line := range minted {
				if strings.HasPrefix(line, "bulwark_") {
					t.Errorf("a client minted a series of Bulwark's: %s", line)
				}
			}
			if n := metricSum(t, after, "bulwark_abandoned_requests_total"); n == 0 {
				t.Errorf("no request counted as abandoned: the test did not abort requests in flight")
			}
		}
	}
}

// sendMadeUpRequests sends n requests with random methods and paths to s,
// half without credentials, each cancelled after a random moment.
func sendMadeUpRequests(t *testing.T, s *framework.APIServer, n int) {
	t.Helper()
	admin, err := rest.HTTPClientFor(s.Config)
	if err != nil {
		t.Fatal(err)
	}
	anonymous, err := rest.HTTPClientFor(rest.AnonymousClientConfig(s.Config))
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 7))
	word := func() string {
		b := []byte(clientWordMark)
		for range 1 + rng.IntN(8) {
			b = append(b, "abcdefghijklmnopqrstuvwxyz"[rng.IntN(26)])
		}
		return string(b)
	}
	methods := []string{"GET", "POST", "PUT", "PATCH", "DELETE"}
	type request struct {
		method, path string
		client       *http.Client
		abortAfter   time.Duration
	}
	requests := make(chan request)
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range requests {
				ctx, cancel := context.WithTimeout(context.Background(), r.abortAfter)
				req, err := http.NewRequestWithContext(ctx, r.method, s.URL+r.path, nil)
				if err == nil {
					if resp, err := r.client.Do(req); err == nil {
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
				}
				cancel()
			}
		}()
	}
	for i := range n {
		r := request{method: methods[rng.IntN(len(methods))], client: admin, abortAfter: time.Duration(rng.IntN(3000)) * time.Microsecond}
		if i%3 == 0 {
			r.method = strings.ToUpper(word())
		}
		if i%2 == 0 {
			r.client = anonymous
		}
		switch i % 5 {
		case 0:
			r.path = "/api/v1/" + word()
		case 1:
			r.path = "/api/v1/namespaces/default/" + word() + "/" + word()
		case 2:
			r.path = "/apis/" + word() + "/v1/" + word()
		case 3:
			// A real resource with a made-up verb or subresource: what a
			// LIST of a large resource, slow enough to abort, looks like.
			r.path = "/api/v1/namespaces/default/configmaps/" + word() + "/" + word()
		default:
			r.path = "/" + word() + "/" + word()
		}
		requests <- r
	}
	close(requests)
	wg.Wait()
}

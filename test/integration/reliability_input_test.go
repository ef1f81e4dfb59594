package integration

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"github.com/bulwark-k8s/bulwark/internal/pki"
	"github.com/bulwark-k8s/bulwark/test/integration/framework"
)

// badRequest is one malformed request, sent with admin credentials so that
// it reaches as deep as any client can.
type badRequest struct {
	name, method, path string
	header             http.Header
	body               string
	// fixed is what Bulwark answers where upstream answers a client's
	// mistake with a 5xx; 0: upstream's answer.
	fixed int
}

func badRequests() []badRequest {
	big := strings.Repeat("x", 2<<20)
	deep := strings.Repeat(`{"a":`, 100000) + "1" + strings.Repeat("}", 100000)
	manyValues := make([]string, 300)
	for i := range manyValues {
		manyValues[i] = fmt.Sprintf("v%d", i)
	}
	json := http.Header{"Content-Type": {"application/json"}}
	return []badRequest{
		{name: "unterminated set selector", method: "GET", path: "/api/v1/pods?labelSelector=app+in+(a,b"},
		{name: "empty set selector", method: "GET", path: "/api/v1/pods?labelSelector=app+in+()"},
		{name: "garbled label selector", method: "GET", path: "/api/v1/pods?labelSelector=app%3D%3D%3Dx"},
		{name: "300-value set selector", method: "GET", path: "/api/v1/pods?labelSelector=app+in+(" + strings.Join(manyValues, ",") + ")"},
		{name: "64 KiB label key", method: "GET", path: "/api/v1/pods?labelSelector=" + strings.Repeat("k", 64<<10) + "%3Dv"},
		{name: "garbled field selector", method: "GET", path: "/api/v1/pods?fieldSelector=spec.nodeName%3D%3D%3D"},
		{name: "unsupported field", method: "GET", path: "/api/v1/pods?fieldSelector=spec.unknown%3Dx"},
		{name: "negative limit", method: "GET", path: "/api/v1/pods?limit=-1"},
		{name: "limit beyond int64", method: "GET", path: "/api/v1/pods?limit=99999999999999999999999"},
		{name: "largest limit", method: "GET", path: "/api/v1/pods?limit=9223372036854775807"},
		{name: "limit not a number", method: "GET", path: "/api/v1/pods?limit=abc"},
		{name: "garbage continue", method: "GET", path: "/api/v1/pods?limit=1&continue=%25%25garbage"},
		{name: "continue with negative revision", method: "GET", path: "/api/v1/pods?limit=1&continue=" +
			base64.RawURLEncoding.EncodeToString([]byte(`{"v":"meta.k8s.io/v1","rv":-5,"start":"x"}`))},
		{name: "resourceVersion not a number", method: "GET", path: "/api/v1/pods?resourceVersion=abc"},
		{name: "Exact without a resourceVersion", method: "GET", path: "/api/v1/pods?resourceVersionMatch=Exact"},
		{name: "unknown resourceVersionMatch", method: "GET", path: "/api/v1/pods?resourceVersion=1&resourceVersionMatch=Bogus"},
		{name: "resourceVersion far in the future", method: "GET", path: "/api/v1/pods?resourceVersion=18446744073709551615&resourceVersionMatch=NotOlderThan"},
		{name: "watch from a garbled resourceVersion", method: "GET", path: "/api/v1/pods?watch=true&resourceVersion=abc", fixed: http.StatusBadRequest},
		{name: "watch with a negative timeout", method: "GET", path: "/api/v1/pods?watch=true&timeoutSeconds=-1"},
		{name: "watch with an unparsable bookmark flag", method: "GET", path: "/api/v1/pods?watch=true&timeoutSeconds=1&allowWatchBookmarks=maybe"},
		{name: "NUL in a namespace", method: "GET", path: "/api/v1/namespaces/%00/pods"},
		{name: "dot segments", method: "GET", path: "/api/v1/namespaces/../../../etc/passwd"},
		{name: "doubled slashes", method: "GET", path: "//api//v1//pods"},
		{name: "unknown method", method: "BREW", path: "/api/v1/pods"},
		{name: "truncated JSON", method: "POST", path: "/api/v1/namespaces/default/configmaps", header: json, body: `{"apiVersion":"v1","kind":"ConfigMap","metadata":{`},
		{name: "deeply nested JSON", method: "POST", path: "/api/v1/namespaces/default/configmaps", header: json, body: deep},
		{name: "4 MiB body", method: "POST", path: "/api/v1/namespaces/default/configmaps", header: json, body: `{"data":{"x":"` + big + big + `"}}`},
		{name: "unknown content type", method: "POST", path: "/api/v1/namespaces/default/configmaps", header: http.Header{"Content-Type": {"application/x-garbage"}}, body: "{}"},
		{name: "unknown patch type", method: "PATCH", path: "/api/v1/nodes/node-1/status", header: http.Header{"Content-Type": {"application/x-patch"}}, body: "{}"},
		{name: "garbled heartbeat", method: "PUT", path: "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/node-1", header: json, body: `{"spec":`},
		{name: "garbled node status", method: "PATCH", path: "/api/v1/nodes/node-1/status", header: http.Header{"Content-Type": {"application/merge-patch+json"}}, body: `{"status":[`},
		{name: "2 MiB header", method: "GET", path: "/api/v1/pods", header: http.Header{"X-Big": {big}}},
		{name: "64 KiB User-Agent", method: "GET", path: "/api/v1/namespaces", header: http.Header{"User-Agent": {strings.Repeat("u", 64<<10)}}},
		{name: "garbled Accept", method: "GET", path: "/api/v1/pods", header: http.Header{"Accept": {"application/vnd.kubernetes.protobuf;stream=watch;;;=="}}},
	}
}

// TestBadInput sends malformed requests to Bulwark and to upstream on one
// etcd: Bulwark must answer each as upstream does (a 4xx Status for what
// upstream refuses), while slowloris clients (a ClientHello or request
// headers trickled a byte at a time) hold connections open: they are
// closed at upstream's deadline, and fresh clients are served meanwhile.
// Nothing panics; memory stays bounded.
func TestBadInput(t *testing.T) {
	etcd := framework.StartEtcd(t, framework.EtcdOptions{})
	bundle, err := pki.Ensure(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	limits := filepath.Join(t.TempDir(), "limits.yaml")
	// A rule every request is checked against: the limiter's parsing runs.
	writeFile(t, limits, limitsHeader+"- {name: probes, userAgent: '^probe/', qps: 1000, burst: 1000}\n")
	ours := framework.StartAPIServer(t, framework.APIServerOptions{Etcd: etcd, PKI: bundle, Name: "bulwark", Args: []string{"--user-agent-limits-config=" + limits}})
	upstream := framework.StartAPIServer(t, framework.APIServerOptions{Etcd: etcd, PKI: bundle, Name: "upstream", Binary: framework.Bins(t).Upstream})

	slow := startSlowloris(t, ours, sized(100, 1000))
	fresh := startFreshClients(t, ours)

	for _, r := range badRequests() {
		want := sendBad(t, upstream, r)
		if r.fixed != 0 {
			figure(t, fmt.Sprintf("%s: upstream %d, Bulwark", r.name, want), float64(r.fixed), "status")
			want = r.fixed
		}
		got := sendBad(t, ours, r)
		switch {
		case got != want:
			t.Errorf("%s: Bulwark %d, want %d", r.name, got, want)
		case got >= 500 && got != http.StatusGatewayTimeout: // 504: a resourceVersion etcd has not reached
			t.Errorf("%s: %d from both", r.name, got)
		}
	}
	figure(t, "malformed requests, each as upstream answers it", float64(len(badRequests())), "requests")

	closedAfter := slow.wait(t, 45*time.Second)
	figure(t, "slowloris connections", float64(slow.n), "connections")
	figure(t, "slowloris connections closed after (max)", closedAfter.Seconds(), "s")
	fresh.stop()
	figure(t, "fresh connections during slowloris: p99", fresh.latencies.quantile(0.99).Seconds()*1000, "ms")
	figure(t, "fresh connections during slowloris: failed", float64(fresh.failed.Load()), "requests")
	if n := fresh.failed.Load(); n > 0 {
		t.Errorf("%d fresh connections failed beside slowloris clients", n)
	}
	if p99 := fresh.latencies.quantile(0.99); p99 > time.Second {
		t.Errorf("fresh connections' p99 %v beside slowloris clients, want under 1s", p99)
	}
	rss := rssMiB(t, ours.Pid())
	figure(t, "RSS after the bad input", rss, "MiB")
	if rss > 1024 {
		t.Errorf("RSS %.0f MiB after the bad input, want under 1 GiB", rss)
	}
	if log, err := os.ReadFile(ours.LogPath); err != nil || strings.Contains(string(log), "panic") {
		t.Errorf("Bulwark's log mentions a panic (or is unreadable: %v)", err)
	}
}

// sendBad sends r to s and returns the status code.
func sendBad(t *testing.T, s *framework.APIServer, r badRequest) int {
	t.Helper()
	tlsConfig, err := rest.TLSConfigFor(s.Config)
	if err != nil {
		t.Fatal(err)
	}
	// HTTP/1.1: an HTTP/2 client refuses to send a header beyond the
	// server's advertised limit.
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConfig}}
	defer client.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, r.method, s.URL+r.path, strings.NewReader(r.body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("User-Agent", "probe/1.0")
	for k, v := range r.header {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", r.name, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode
}

// slowloris holds connections that send a byte every second: half trickle a
// ClientHello, half (after their handshake) the headers of a request.
type slowloris struct {
	n      int
	start  time.Time
	closed chan time.Duration
}

func startSlowloris(t *testing.T, s *framework.APIServer, n int) *slowloris {
	tlsConfig, err := rest.TLSConfigFor(s.Config)
	if err != nil {
		t.Fatal(err)
	}
	host := strings.TrimPrefix(s.URL, "https://")
	tlsConfig.ServerName, _, _ = net.SplitHostPort(host)
	l := &slowloris{n: n, start: time.Now(), closed: make(chan time.Duration, n)}
	trickle := func(conn net.Conn, data string) {
		defer conn.Close()
		for i := 0; ; i = (i + 1) % len(data) {
			if _, err := conn.Write([]byte{data[i]}); err != nil {
				break
			}
			time.Sleep(time.Second)
		}
		l.closed <- time.Since(l.start)
	}
	for i := range n {
		raw, err := net.Dial("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			// A TLS handshake record of 512 bytes, begun.
			go trickle(raw, "\x16\x03\x01\x02\x00"+strings.Repeat("\x01", 507))
			continue
		}
		conn := tls.Client(raw, tlsConfig)
		if err := conn.Handshake(); err != nil {
			t.Fatal(err)
		}
		go trickle(conn, fmt.Sprintf("GET /api/v1/pods HTTP/1.1\r\nHost: %s\r\n%s", host, strings.Repeat("X-Slow: 1\r\n", 100)))
		time.Sleep(5 * time.Millisecond) // a connection every 5 ms: a slow attack, not a storm
	}
	return l
}

// wait waits for the server to close every connection and returns when the
// last was closed, since the first was opened.
func (l *slowloris) wait(t *testing.T, timeout time.Duration) time.Duration {
	t.Helper()
	var last time.Duration
	deadline := time.After(timeout)
	for range l.n {
		select {
		case d := <-l.closed:
			last = max(last, d)
		case <-deadline:
			t.Fatalf("slowloris connections still open %v after the first was opened", timeout)
		}
	}
	return last
}

// freshClients each open a new TLS connection and GET a namespace, ten
// times a second, until stopped.
type freshClients struct {
	latencies latencies
	failed    atomic.Int64
	cancel    context.CancelFunc
	wg        sync.WaitGroup
}

func startFreshClients(t *testing.T, s *framework.APIServer) *freshClients {
	tlsConfig, err := rest.TLSConfigFor(s.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &freshClients{cancel: cancel}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			transport := &http.Transport{TLSClientConfig: tlsConfig.Clone(), DisableKeepAlives: true}
			client := &http.Client{Transport: transport, Timeout: 10 * time.Second}
			start := time.Now()
			resp, err := client.Get(s.URL + "/api/v1/namespaces/default")
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			switch {
			case err == nil && resp.StatusCode == http.StatusOK:
				f.latencies.add(time.Since(start))
			case ctx.Err() == nil:
				f.failed.Add(1)
			}
		}
	}()
	return f
}

func (f *freshClients) stop() {
	f.cancel()
	f.wg.Wait()
}

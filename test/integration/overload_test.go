package integration

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"github.com/bulwark-k8s/bulwark/test/integration/framework"
)

// stallLists opens n connections that each ask for a large LIST and read no
// more than its status line: each request stays in flight, blocked on
// writing, until its connection closes.
func stallLists(t *testing.T, s *framework.APIServer, n int) (release func()) {
	t.Helper()
	tlsConfig, err := rest.TLSConfigFor(s.Config)
	if err != nil {
		t.Fatal(err)
	}
	host := strings.TrimPrefix(s.URL, "https://")
	var conns []*tls.Conn
	for range n {
		conn, err := tls.Dial("tcp", host, tlsConfig)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, conn)
		fmt.Fprintf(conn, "GET /api/v1/configmaps HTTP/1.1\r\nHost: %s\r\nUser-Agent: staller\r\n\r\n", host)
		// One at a time, so that each is admitted below the threshold.
		conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		status, err := bufio.NewReaderSize(conn, 16).ReadString('\n')
		if err != nil || !strings.HasPrefix(status, "HTTP/1.1 200") {
			t.Fatalf("stalled LIST %d: %q, %v; want it admitted", len(conns), status, err)
		}
	}
	return func() {
		for _, c := range conns {
			c.Close()
		}
	}
}

// TestOverloadHardThresholdClosesConnections drives the real binary past its
// hard in-flight threshold: new requests get 429 and their connection is
// closed (HTTP/1.1: Connection: close; HTTP/2: GOAWAY), and once the load is
// gone the client, on a new connection, is served again.
func TestOverloadHardThresholdClosesConnections(t *testing.T) {
	etcd := framework.StartEtcd(t, framework.EtcdOptions{})
	// 100 MB of ConfigMaps: far more than socket buffers hold.
	putBigConfigMaps(t, etcd.ClientURL, 2000, 50000)
	s := framework.StartAPIServer(t, framework.APIServerOptions{Etcd: etcd, Args: []string{
		// Soft shedding off: it would turn away the stalled LISTs themselves.
		"--overload-soft-inflight=0", "--overload-hard-inflight=3",
		// In-flight requests are the only signal: the garbage of filling a
		// 100 MB watch cache can delay the Go scheduler on a busy machine.
		"--overload-soft-scheduler-latency=0", "--overload-hard-scheduler-latency=0",
	}})

	tlsConfig, err := rest.TLSConfigFor(s.Config)
	if err != nil {
		t.Fatal(err)
	}
	// A transport with its own TLS config and no ForceAttemptHTTP2 speaks HTTP/1.1.
	http1 := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConfig}}
	http2, err := rest.HTTPClientFor(s.Config)
	if err != nil {
		t.Fatal(err)
	}
	get := func(client *http.Client) (*http.Response, bool) {
		reused := false
		ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }})
		req, _ := http.NewRequestWithContext(ctx, "GET", s.URL+"/api/v1/namespaces/default/configmaps/big-1", nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp, reused
	}
	if resp, _ := get(http2); resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
		t.Fatalf("before the load: %d over HTTP/%d", resp.StatusCode, resp.ProtoMajor)
	}
	// The LISTs to stall must reach the store, not the cache-not-ready gate
	// while the watch cache of 100 MB of ConfigMaps fills.
	waitUntil(t, time.Minute, "ConfigMaps' watch cache ready", func() bool {
		code, _ := call(t, s, "GET", "/api/v1/configmaps?limit=1", "test", false)
		return code == http.StatusOK
	})

	release := stallLists(t, s, 3)
	waitUntil(t, 30*time.Second, "in-flight requests above the hard threshold", func() bool {
		resp, _ := get(http1)
		if resp.StatusCode != http.StatusTooManyRequests {
			t.Logf("%d; %s", resp.StatusCode, grepLines(metrics(t, s), "bulwark_overload_inflight"))
		}
		return resp.StatusCode == http.StatusTooManyRequests && resp.Close
	})
	// HTTP/2: the shed response carries a GOAWAY; the next request cannot
	// reuse the connection.
	resp, _ := get(http2)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Errorf("HTTP/2 while overloaded: %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	release()
	waitUntil(t, 30*time.Second, "load gone", func() bool {
		resp, _ := get(http1)
		return resp.StatusCode == http.StatusOK
	})
	resp, reused := get(http2)
	if resp.StatusCode != http.StatusOK || reused {
		t.Errorf("after the load: %d, connection reused %v; want 200 on a new connection", resp.StatusCode, reused)
	}
	if m := metrics(t, s); !strings.Contains(m, `bulwark_overload_shed_requests_total{level="hard"}`) {
		t.Error("no hard sheds counted")
	}
}

// TestOverloadSheddingQuietUnderNormalLoad runs a steady mixed load against
// the default thresholds: nothing may be shed.
func TestOverloadSheddingQuietUnderNormalLoad(t *testing.T) {
	etcd := framework.StartEtcd(t, framework.EtcdOptions{})
	s := framework.StartAPIServer(t, framework.APIServerOptions{Etcd: etcd})
	client, err := rest.HTTPClientFor(s.Config)
	if err != nil {
		t.Fatal(err)
	}
	paths := []string{"/api/v1/namespaces", "/api/v1/namespaces/default/configmaps", "/api/v1/namespaces/kube-system", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", "/version"}
	var wg sync.WaitGroup
	errs := make(chan string, 16)
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 150 {
				resp, err := client.Get(s.URL + paths[(w+i)%len(paths)])
				if err != nil {
					errs <- err.Error()
					return
				}
				io.Copy(io.Discard, bufio.NewReader(resp.Body))
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					errs <- fmt.Sprintf("%s: %d", paths[(w+i)%len(paths)], resp.StatusCode)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	m := metrics(t, s)
	for _, level := range []string{"soft", "hard"} {
		if line := fmt.Sprintf(`bulwark_overload_shed_requests_total{level=%q} 0`, level); !strings.Contains(m, line+"\n") {
			t.Errorf("want %q: requests were shed under normal load:\n%s", line, grepLines(m, "bulwark_overload"))
		}
	}
}

func grepLines(text, prefix string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestLargeListLimit holds a LIST of every ConfigMap (100 MB) in flight with
// one large LIST allowed at a time: another gets 429 after its second of
// waiting, while a paged LIST, a namespaced LIST and a LIST by selector are
// served; once the first is gone, the next large LIST is served.
func TestLargeListLimit(t *testing.T) {
	etcd := framework.StartEtcd(t, framework.EtcdOptions{})
	putBigConfigMaps(t, etcd.ClientURL, 2000, 50000)
	s := framework.StartAPIServer(t, framework.APIServerOptions{Etcd: etcd, Args: []string{
		"--max-concurrent-large-lists=1", "--large-list-min-bytes=1Mi",
		// Upstream measures each resource once a minute by default; the
		// first measure after the start fails while the watch cache fills.
		"--etcd-count-metric-poll-period=2s",
	}})
	// At least the 2000 put: the apiserver writes ConfigMaps of its own
	// (kube-system/extension-apiserver-authentication, ...) as it starts.
	waitUntil(t, 2*time.Minute, "ConfigMaps measured", func() bool {
		return metricSum(t, metrics(t, s), `apiserver_resource_objects{group="",resource="configmaps"}`) >= 2000
	})

	release := stallLists(t, s, 1)
	start := time.Now()
	if code, body := call(t, s, "GET", "/api/v1/configmaps", "test", false); code != http.StatusTooManyRequests {
		t.Errorf("a second large LIST: %d %.200s, want 429", code, body)
	} else if waited := time.Since(start); waited < time.Second {
		t.Errorf("a second large LIST refused after %v, before its second of waiting", waited)
	}
	for _, path := range []string{
		"/api/v1/configmaps?limit=500",
		"/api/v1/namespaces/default/configmaps?limit=10",
		"/api/v1/configmaps?labelSelector=app%3Dnone",
	} {
		if code, body := call(t, s, "GET", path, "test", false); code != http.StatusOK {
			t.Errorf("%s beside a large LIST: %d %.200s", path, code, body)
		}
	}
	release()
	waitUntil(t, 30*time.Second, "a large LIST served once the first is gone", func() bool {
		code, _ := call(t, s, "GET", "/api/v1/configmaps", "test", false)
		return code == http.StatusOK
	})
	if m := metrics(t, s); !strings.Contains(m, `bulwark_large_list_rejected_requests_total{group="",resource="configmaps"}`) {
		t.Error("the rejected large LIST was not counted")
	}
}

package integration

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/bulwark-k8s/bulwark/internal/localcluster"
	"github.com/bulwark-k8s/bulwark/internal/pki"
	"github.com/bulwark-k8s/bulwark/test/integration/framework"
)

const (
	scaleOutReplicas = 3
	scaleOutClients  = 12
	scaleOutPeriod   = 50 * time.Millisecond
	// haproxyRise is past the time HAProxy takes to put a server that has
	// become ready back in rotation: two checks 500 ms apart (startHAProxy).
	haproxyRise = 2 * time.Second
)

// TestScaleOut runs the topology docs/operator-guide.md describes for more
// than one machine's worth of load: three apiserver replicas behind a TCP
// load balancer (HAProxy, checking each replica's /readyz), on a
// three-member etcd cluster, with Events in an etcd of their own
// (--etcd-servers-overrides). Clients, each on its own connection, read
// through the load balancer while one replica is restarted: every client
// keeps being served (its connection moves to another replica), and once
// the replica is back, new connections reach it again.
func TestScaleOut(t *testing.T) {
	haproxy, err := exec.LookPath("haproxy")
	if err != nil {
		t.Fatal("haproxy is not installed (make test installs it from Debian's packages): ", err)
	}
	members := framework.StartEtcdCluster(t, 3)
	events := framework.StartEtcd(t, framework.EtcdOptions{})
	var servers []string
	for _, m := range members {
		servers = append(servers, m.ClientURL)
	}
	bundle, err := pki.Ensure(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	replicas := make([]*framework.APIServer, scaleOutReplicas)
	for i := range replicas {
		replicas[i] = framework.StartAPIServer(t, framework.APIServerOptions{PKI: bundle, Name: fmt.Sprintf("kube-apiserver-%d", i), Args: []string{
			"--etcd-servers=" + strings.Join(servers, ","),
			"--etcd-servers-overrides=/events#" + events.ClientURL,
		}})
	}
	lbURL := startHAProxy(t, haproxy, replicas)
	lbConfig := bundle.AdminRESTConfig(lbURL)

	// Events go to their own etcd, and only there.
	lb := ownConnectionClient(t, lbConfig)
	ev := &corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: "scale-out"}, InvolvedObject: corev1.ObjectReference{Kind: "Namespace", Name: "default"}, Reason: "Test"}
	if _, err := lb.CoreV1().Events("default").Create(context.Background(), ev, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if n := etcdKeys(t, events.ClientURL, "/registry/events/"); n != 1 {
		t.Errorf("the events etcd holds %d events, want 1", n)
	}
	if n := etcdKeys(t, members[0].ClientURL, "/registry/events/"); n != 0 {
		t.Errorf("the main etcd holds %d events, want 0", n)
	}

	// What the readers read: nothing in the apiserver itself reads PodTemplates.
	template := &corev1.PodTemplate{ObjectMeta: metav1.ObjectMeta{Name: "scale-out"}, Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}}
	if _, err := lb.CoreV1().PodTemplates("default").Create(context.Background(), template, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	load := startReaders(t, lbConfig, scaleOutClients)
	defer load.stop()
	waitUntil(t, 30*time.Second, "every replica serving readers before the restart", func() bool {
		return !slices.Contains(servedBy(t, replicas), 0)
	})

	restarted := 1
	duringStart := load.snapshot()
	stopped := time.Now()
	replicas[restarted].Restart(t)
	t.Logf("replica %d restarted in %v", restarted, time.Since(stopped).Round(time.Millisecond))
	var during []counted
	waitUntil(t, 30*time.Second, fmt.Sprintf("every reader served since replica %d restarted", restarted), func() bool {
		during = load.since(duringStart)
		return !slices.ContainsFunc(during, func(c counted) bool { return c.ok == 0 })
	})
	failed := 0
	for _, c := range during {
		failed += c.failed
	}
	t.Logf("during the restart: %v reads served, %d failed (a read in flight on the closed connection)", sumOK(during), failed)
	if failed > scaleOutClients {
		t.Errorf("%d reads failed during the restart; want at most one per reader", failed)
	}

	// New connections reach the restarted replica again, once HAProxy has
	// seen it ready: its checks run every 500 ms and want 2 successes.
	waitUntil(t, 30*time.Second, fmt.Sprintf("replica %d ready", restarted), func() bool {
		code, _ := call(t, replicas[restarted], "GET", "/readyz", "test", false)
		return code == http.StatusOK
	})
	time.Sleep(haproxyRise)
	beforeFresh := servedBy(t, replicas)
	fresh := startReaders(t, lbConfig, scaleOutClients)
	defer fresh.stop()
	waitUntil(t, 30*time.Second, "every replica, the restarted one too, serving new connections", func() bool {
		after := servedBy(t, replicas)
		for i := range replicas {
			if after[i] <= beforeFresh[i] {
				return false
			}
		}
		t.Logf("reads served by replica: before %v, after %v", beforeFresh, after)
		return true
	})
}

// startHAProxy runs HAProxy in TCP mode in front of the replicas, checking
// each one's /readyz over TLS, and returns its URL.
func startHAProxy(t *testing.T, binary string, replicas []*framework.APIServer) string {
	port := framework.FreePort(t)
	config := fmt.Sprintf(`global
  maxconn 4096
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
frontend apiserver
  bind 127.0.0.1:%d
  default_backend apiservers
backend apiservers
  balance roundrobin
  option httpchk GET /readyz
  http-check expect status 200
`, port)
	for i, r := range replicas {
		config += fmt.Sprintf("  server replica-%d %s check check-ssl verify none inter 500ms fall 2 rise 2\n", i, strings.TrimPrefix(r.URL, "https://"))
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := localcluster.StartProcess("haproxy", filepath.Join(dir, "haproxy.log"), binary, "-f", path, "-db")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Kill() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	waitUntil(t, 10*time.Second, "haproxy listening", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return "https://" + addr
}

// ownConnectionClient is a client with a connection of its own (client-go
// shares one transport between clients of the same config otherwise).
func ownConnectionClient(t *testing.T, config *rest.Config) kubernetes.Interface {
	c := rest.CopyConfig(config)
	c.QPS = -1
	c.UserAgent = "scale-out-reader"
	c.Dial = (&net.Dialer{Timeout: 5 * time.Second}).DialContext
	client, err := kubernetes.NewForConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	return client
}

// readers GET a PodTemplate in a loop, each on its own connection.
type readers struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	counts []readerCount
}

type readerCount struct{ ok, failed atomic.Int64 }

// counted is a snapshot of one reader's counts.
type counted struct{ ok, failed int }

func startReaders(t *testing.T, config *rest.Config, n int) *readers {
	ctx, cancel := context.WithCancel(context.Background())
	r := &readers{cancel: cancel, counts: make([]readerCount, n)}
	for i := range n {
		client := ownConnectionClient(t, config)
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			for ctx.Err() == nil {
				reqCtx, done := context.WithTimeout(ctx, 5*time.Second)
				_, err := client.CoreV1().PodTemplates("default").Get(reqCtx, "scale-out", metav1.GetOptions{})
				done()
				switch {
				case err == nil:
					r.counts[i].ok.Add(1)
				case ctx.Err() == nil:
					r.counts[i].failed.Add(1)
				}
				time.Sleep(scaleOutPeriod)
			}
		}()
	}
	return r
}

func (r *readers) stop() {
	r.cancel()
	r.wg.Wait()
}

func (r *readers) snapshot() []counted {
	out := make([]counted, len(r.counts))
	for i := range r.counts {
		out[i] = counted{int(r.counts[i].ok.Load()), int(r.counts[i].failed.Load())}
	}
	return out
}

func (r *readers) since(before []counted) []counted {
	now := r.snapshot()
	for i := range now {
		now[i].ok -= before[i].ok
		now[i].failed -= before[i].failed
	}
	return now
}

func sumOK(c []counted) int {
	n := 0
	for _, x := range c {
		n += x.ok
	}
	return n
}

// servedBy reads, from each replica's /metrics, how many GETs of
// PodTemplates it has served: the readers'.
func servedBy(t *testing.T, replicas []*framework.APIServer) []float64 {
	out := make([]float64, len(replicas))
	for i, r := range replicas {
		for _, line := range strings.Split(metrics(t, r), "\n") {
			if strings.HasPrefix(line, "apiserver_request_total{") && strings.Contains(line, `resource="podtemplates"`) &&
				strings.Contains(line, `verb="GET"`) && strings.Contains(line, `code="200"`) {
				fields := strings.Fields(line)
				v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
				if err != nil {
					t.Fatal(err)
				}
				out[i] += v
			}
		}
	}
	return out
}

// etcdKeys counts the keys under prefix in an etcd.
func etcdKeys(t *testing.T, url, prefix string) int64 {
	client, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	resp, err := client.Get(context.Background(), prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Count
}

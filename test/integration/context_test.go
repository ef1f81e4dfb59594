package integration

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/bulwark-k8s/bulwark/test/integration/framework"
)

// TestAbandonedRequestStopsWebhookCall pins that a client going away stops
// the admission webhook call its request started: a real HTTPS webhook
// holds the call and records when its request context ends.
func TestAbandonedRequestStopsWebhookCall(t *testing.T) {
	ctx := context.Background()
	etcd := framework.StartEtcd(t, framework.EtcdOptions{})
	s := framework.StartAPIServer(t, framework.APIServerOptions{Etcd: etcd})

	called := make(chan struct{}, 1)
	ended := make(chan time.Time, 1)
	webhook := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var review admissionv1.AdmissionReview
		if err := json.NewDecoder(r.Body).Decode(&review); err != nil || review.Request == nil {
			http.Error(w, "bad review", http.StatusBadRequest)
			return
		}
		called <- struct{}{}
		select {
		case <-r.Context().Done():
			ended <- time.Now()
		case <-time.After(25 * time.Second):
			review.Response = &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true}
			_ = json.NewEncoder(w).Encode(review)
		}
	})}
	cert, err := tls.LoadX509KeyPair(s.PKI.Serving.Cert, s.PKI.Serving.Key)
	if err != nil {
		t.Fatal(err)
	}
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	webhook.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}}
	go webhook.ServeTLS(listener, "", "")
	t.Cleanup(func() { webhook.Close() })

	caBundle, err := os.ReadFile(s.PKI.CA.Cert)
	if err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("https://%s/validate", listener.Addr())
	none := admissionregistrationv1.SideEffectClassNone
	fail := admissionregistrationv1.Fail
	timeout := int32(30)
	_, err = s.Client.AdmissionregistrationV1().ValidatingWebhookConfigurations().Create(ctx, &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "slow"},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name:                    "slow.bulwark.test",
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: caBundle},
			Rules:                   []admissionregistrationv1.RuleWithOperations{{Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create}, Rule: admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"configmaps"}}}},
			ObjectSelector:          &metav1.LabelSelector{MatchLabels: map[string]string{"webhook": "slow"}},
			SideEffects:             &none,
			FailurePolicy:           &fail,
			TimeoutSeconds:          &timeout,
			AdmissionReviewVersions: []string{"v1"},
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	// The webhook configuration reaches admission through an informer; retry
	// until a create is held by the webhook.
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{GenerateName: "held-", Labels: map[string]string{"webhook": "slow"}}}
	var abandoned time.Time
	deadline := time.Now().Add(30 * time.Second)
	for abandoned.IsZero() {
		if time.Now().After(deadline) {
			t.Fatal("the webhook was never called")
		}
		reqCtx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			_, err := s.Client.CoreV1().ConfigMaps("default").Create(reqCtx, cm, metav1.CreateOptions{})
			done <- err
		}()
		select {
		case <-called:
			time.Sleep(200 * time.Millisecond)
			abandoned = time.Now()
			cancel()
			<-done
		case err := <-done:
			cancel()
			if err == nil { // created before the webhook was active; try again
				continue
			}
			t.Fatalf("create: %v", err)
		}
	}

	select {
	case end := <-ended:
		if lag := end.Sub(abandoned); lag > 100*time.Millisecond {
			t.Errorf("webhook call ended %v after the client went away, want within 100ms", lag)
		} else {
			t.Logf("webhook call ended %v after the client went away", lag)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("webhook call still running 10s after the client went away")
	}
	waitUntil(t, 30*time.Second, "abandoned create counted", func() bool {
		return strings.Contains(metrics(t, s), `bulwark_abandoned_requests_total{resource="configmaps",verb="create"}`)
	})
}

var goroutinesMetric = regexp.MustCompile(`(?m)^go_goroutines (\d+)`)

func goroutines(t *testing.T, s *framework.APIServer) int {
	t.Helper()
	m := goroutinesMetric.FindStringSubmatch(metrics(t, s))
	if m == nil {
		t.Fatal("no go_goroutines on /metrics")
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

var heapAllocMetric = regexp.MustCompile(`(?m)^go_memstats_heap_alloc_bytes (\S+)`)

// liveHeapMiB is the apiserver's heap right after garbage collections
// (profiling's heap endpoint runs one on request): two, since what a
// sync.Pool holds (the encoders' buffers) survives one.
func liveHeapMiB(t *testing.T, s *framework.APIServer) float64 {
	t.Helper()
	for range 2 {
		if code, _ := call(t, s, "GET", "/debug/pprof/heap?gc=1", "test", false); code != http.StatusOK {
			t.Fatalf("/debug/pprof/heap?gc=1: %d", code)
		}
	}
	m := heapAllocMetric.FindStringSubmatch(metrics(t, s))
	if m == nil {
		t.Fatal("no go_memstats_heap_alloc_bytes on /metrics")
	}
	bytes, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return bytes / (1 << 20)
}

// TestAbandonedListsReleaseTheirWork has many clients, each on its own
// connection, abort slow LISTs (tens of megabytes each) mid-response, and
// checks that the apiserver's goroutines and live heap return to their
// baseline: nothing the requests started is left running or referenced.
func TestAbandonedListsReleaseTheirWork(t *testing.T) {
	const (
		objects = 3000
		slack   = 30 // goroutines of the apiserver's own controllers come and go
	)
	clients, perClient := sized(50, 200), sized(6, 15)
	etcd := framework.StartEtcd(t, framework.EtcdOptions{})
	putBigConfigMaps(t, etcd.ClientURL, objects, 10000)
	s := framework.StartAPIServer(t, framework.APIServerOptions{Etcd: etcd})
	// Settle, then take the baseline.
	waitUntil(t, 30*time.Second, "LIST served", func() bool {
		code, _ := call(t, s, "GET", "/api/v1/namespaces/default/configmaps?limit=1", "test", false)
		return code == http.StatusOK
	})
	// The baseline is the heap of a server that has served such LISTs in
	// full (what the watch cache keeps for them stays) once it stops
	// growing (the start history fills after the cache).
	if _, err := s.Client.CoreV1().ConfigMaps("").List(context.Background(), metav1.ListOptions{}); err != nil {
		t.Fatal(err)
	}
	var baselineHeap float64
	waitUntil(t, time.Minute, "the live heap settling", func() bool {
		previous := baselineHeap
		time.Sleep(time.Second)
		baselineHeap = liveHeapMiB(t, s)
		return previous > 0 && baselineHeap-previous < 4
	})
	baseline := goroutines(t, s)

	var wg sync.WaitGroup
	for c := range clients {
		// A connection of its own, closed once the client is done: open
		// connections are not work left behind.
		cfg := rest.CopyConfig(s.Config)
		cfg.QPS = -1
		httpClient, err := rest.HTTPClientFor(cfg)
		if err != nil {
			t.Fatal(err)
		}
		client, err := kubernetes.NewForConfigAndClient(cfg, httpClient)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer httpClient.CloseIdleConnections()
			for i := range perClient {
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(20+(c*perClient+i)%100)*time.Millisecond)
				// A consistent LIST of all 30 MB, aborted mid-way.
				_, _ = client.CoreV1().ConfigMaps("").List(ctx, metav1.ListOptions{})
				cancel()
			}
		}()
	}
	wg.Wait()

	var last int
	waitUntil(t, 20*time.Second, fmt.Sprintf("goroutines back to baseline (%d)", baseline), func() bool {
		last = goroutines(t, s)
		return last <= baseline+slack
	})
	heap := liveHeapMiB(t, s)
	figure(t, "LISTs aborted mid-response", float64(clients*perClient), "requests")
	figure(t, "goroutines: baseline", float64(baseline), "goroutines")
	figure(t, "goroutines: after the aborts", float64(last), "goroutines")
	figure(t, "live heap: baseline", baselineHeap, "MiB")
	figure(t, "live heap: after the aborts", heap, "MiB")
	if heap > baselineHeap+64 {
		t.Errorf("live heap %.0f MiB after the aborted LISTs, baseline %.0f MiB", heap, baselineHeap)
	}
	waitUntil(t, 30*time.Second, "abandoned LISTs counted", func() bool {
		return strings.Contains(metrics(t, s), `bulwark_abandoned_requests_total{resource="configmaps",verb="list"}`)
	})
}

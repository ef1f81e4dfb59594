package integration

import (
	"context"
	"iter"
	"net/http"
	"strings"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/bulwark-k8s/bulwark/internal/seed"
	"github.com/bulwark-k8s/bulwark/test/integration/framework"
)

// TestCacheNotReadyGate fills etcd with custom objects behind the apiserver's
// back, so that the watch cache the first request of that resource starts
// takes a while to fill: meanwhile LISTs get 429, then they succeed.
//
// The server then has gated LISTs and User-Agent limits loaded, so it shows
// every metric the shipped dashboard and alerts query: the test checks that
// they all exist.
func TestCacheNotReadyGate(t *testing.T) {
	const objects = 40000
	ctx := context.Background()
	limits := t.TempDir() + "/limits.yaml"
	writeFile(t, limits, "apiVersion: bulwark.k8s.io/v1alpha1\nkind: UserAgentLimits\nrules:\n- {name: broken-agent, userAgent: '^broken-agent/', qps: 0}\n")
	etcd := framework.StartEtcd(t, framework.EtcdOptions{})
	s := framework.StartAPIServer(t, framework.APIServerOptions{Etcd: etcd, Args: []string{"--user-agent-limits-config=" + limits}})

	gvk := schema.GroupVersionKind{Group: "gate.bulwark.test", Version: "v1", Kind: "Widget"}
	crds := apiextensionsclient.NewForConfigOrDie(s.Config).ApiextensionsV1().CustomResourceDefinitions()
	crd, err := crds.Create(ctx, widgetCRD(gvk), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 30*time.Second, "CRD established", func() bool {
		crd, err = crds.Get(ctx, crd.Name, metav1.GetOptions{})
		for _, c := range crd.Status.Conditions {
			if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
				return true
			}
		}
		return false
	})
	putObjects(t, etcd.ClientURL, seed.CustomObjects(gvk, "widgets", "default", objects, map[string]any{"size": "large", "padding": strings.Repeat("x", 200)}, seed.Now()))

	// The first request creates the resource's storage and its watch cache,
	// and is itself served (from etcd, by upstream); the ones after it are
	// gated until the cache holds every object.
	path := "/apis/gate.bulwark.test/v1/namespaces/default/widgets?limit=1"
	var codes []int
	gated := 0
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		code, body := call(t, s, "GET", path, "kubectl", false)
		codes = append(codes, code)
		if code == http.StatusTooManyRequests {
			gated++
		} else if code != http.StatusOK {
			t.Fatalf("LIST while the cache fills: %d %s", code, body)
		} else if gated > 0 {
			break
		}
	}
	if gated == 0 || codes[len(codes)-1] != http.StatusOK {
		t.Fatalf("answers %v: want 429s while the cache of %d objects fills, then 200", codes, objects)
	}
	t.Logf("%d LISTs gated before the cache was ready", gated)
	// A single-object GET is never gated.
	if code, body := call(t, s, "GET", "/apis/gate.bulwark.test/v1/namespaces/default/widgets/w-7", "kubectl", false); code != http.StatusOK {
		t.Errorf("GET one widget: %d %s", code, body)
	}
	m := metrics(t, s)
	if !strings.Contains(m, `bulwark_cache_not_ready_rejected_requests_total{group="gate.bulwark.test",resource="widgets"}`) {
		t.Error("no bulwark_cache_not_ready_rejected_requests_total for widgets on /metrics")
	}
	checkMonitoringQueries(t, m)
}

// putBigConfigMaps writes n ConfigMaps big-<i> in default, each with a
// payload of size bytes, into etcd.
func putBigConfigMaps(t *testing.T, etcdURL string, n, size int) {
	t.Helper()
	putObjects(t, etcdURL, seed.ConfigMaps("default", "big", n, size, seed.Now()))
}

// putObjects writes objects into etcd behind the apiserver's back, far
// faster than creating them through it.
func putObjects(t *testing.T, etcdURL string, objects iter.Seq[seed.Object]) {
	t.Helper()
	if err := seed.Put(context.Background(), etcdURL, objects); err != nil {
		t.Fatal(err)
	}
}

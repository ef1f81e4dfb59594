package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/bulwark-k8s/bulwark/test/integration/framework"
)

// Vocabulary of the differential test's pods: small, so that selectors
// match often and every index value is shared by several pods.
const (
	diffNamespaces = 3
	diffNodes      = 4
	diffApps       = 5
	diffTiers      = 3
	diffTracks     = 2
	diffPods       = 300
	// diffWriteInterval paces the writers during the LISTs: writes keep
	// coming, and the LISTs still get most of the two cores.
	diffWriteInterval = 20 * time.Millisecond
)

// TestLabelIndexesDifferential checks that LISTs served through the label
// indexes of our watch cache answer exactly what etcd holds. Random pods are
// created, relabelled and deleted while random LISTs (label selectors with
// =, ==, in, notin, !=, exists and !exists on indexed and unindexed keys,
// field selectors, namespaces, limit and continue, every resourceVersion
// semantic) run against our binary; each answer is compared with what a
// server without a watch cache (the same binary, --watch-cache=false, on
// the same etcd) reads from etcd at exactly the resourceVersion ours
// answered with: same items, same order, same resourceVersions. A
// consistent read must also see every write acknowledged before it.
//
// The seed is printed; BULWARK_SEED=<seed> repeats a run.
func TestLabelIndexesDifferential(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("BULWARK_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("BULWARK_SEED: %v", err)
		}
	}
	t.Logf("seed %d (BULWARK_SEED=%d reproduces this run)", seed, seed)

	etcd := framework.StartEtcd(t, framework.EtcdOptions{})
	ours := framework.StartAPIServer(t, framework.APIServerOptions{Etcd: etcd, Args: []string{
		"--watch-cache-label-indexes=pods:app,pods:tier", // track stays unindexed
	}})
	reference := framework.StartAPIServer(t, framework.APIServerOptions{Etcd: etcd, PKI: ours.PKI, Args: []string{"--watch-cache=false"}})
	ctx := context.Background()
	oursClient, referenceClient := unthrottledClient(t, ours), unthrottledClient(t, reference)
	for i := range diffNamespaces {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("ns-%d", i)}}
		if _, err := ours.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		// No controller-manager runs to create it; admission wants it.
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}
		if _, err := ours.Client.CoreV1().ServiceAccounts(ns.Name).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	w := &diffWriter{client: oursClient, rng: rand.New(rand.NewPCG(seed, 1))}
	for range diffPods {
		w.step(t, ctx, true)
	}
	if t.Failed() {
		t.FailNow()
	}
	// Writers keep changing pods while the LISTs run, so that consistent
	// reads race with writes and snapshots differ from one case to the next.
	stop := make(chan struct{})
	var writers sync.WaitGroup
	writers.Add(1)
	go func() {
		defer writers.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(diffWriteInterval):
				w.step(t, ctx, false)
			}
		}
	}()

	rng := rand.New(rand.NewPCG(seed, 2))
	const cases = 3000
	before := metrics(t, ours)
	consistent := 0
	start := time.Now()
	for i := range cases {
		if i%500 == 0 {
			t.Logf("case %d after %v", i, time.Since(start).Round(time.Millisecond))
		}
		c := randomListCase(rng, w)
		if c.resourceVersion == "" {
			consistent++ // the first page; the others are read at its resourceVersion
		}
		acknowledged := w.lastRV.Load()
		got, err := listAllPages(ctx, oursClient, c)
		if err != nil {
			t.Fatalf("case %d %s: ours: %v", i, c, err)
		}
		if c.resourceVersion == "" && got.resourceVersion < acknowledged {
			t.Fatalf("case %d %s: consistent read at resourceVersion %d, before the write acknowledged at %d", i, c, got.resourceVersion, acknowledged)
		}
		exact := listCase{namespace: c.namespace, labels: c.labels, fields: c.fields,
			resourceVersion: strconv.FormatUint(got.resourceVersion, 10), match: metav1.ResourceVersionMatchExact}
		want, err := listAllPages(ctx, referenceClient, exact)
		if err != nil {
			t.Fatalf("case %d %s: reference at %d: %v", i, c, got.resourceVersion, err)
		}
		if diff := cmp.Diff(want, got, cmp.AllowUnexported(listAnswer{})); diff != "" {
			t.Fatalf("case %d %s: ours differs from etcd at its resourceVersion (-etcd +ours):\n%s", i, c, diff)
		}
	}
	close(stop)
	writers.Wait()
	t.Logf("%d cases, %d writes", cases, w.writes.Load())

	// The consistent LISTs were the watch cache's (upstream's consistent
	// reads from the cache, waiting for it to be fresh), not etcd's: each
	// counted once, none falling back to etcd.
	after := metrics(t, ours)
	const consistentReads = `apiserver_watch_cache_consistent_read_total{fallback="%s",group="",resource="pods",success="%s"}`
	delta := func(series string) float64 { return metricSum(t, after, series) - metricSum(t, before, series) }
	if served := delta(fmt.Sprintf(consistentReads, "false", "true")); served != float64(consistent) {
		t.Errorf("%d consistent LISTs sent, %v served by the watch cache:\n%s", consistent, served, grepLines(after, "apiserver_watch_cache_consistent_read_total"))
	}
	for _, series := range []string{fmt.Sprintf(consistentReads, "true", "true"), fmt.Sprintf(consistentReads, "true", "false"), fmt.Sprintf(consistentReads, "false", "false")} {
		if n := delta(series); n != 0 {
			t.Errorf("%s moved by %v: consistent LISTs fell back to etcd or failed", series, n)
		}
	}
	if waited := delta(`apiserver_watch_cache_read_wait_seconds_count{group="",resource="pods"}`); waited == 0 {
		t.Errorf("no consistent LIST waited for the watch cache to be fresh, while writes raced with them")
	}
	t.Logf("%d consistent LISTs, all served by the watch cache", consistent)

	// The indexes were used, so the comparison above tested them.
	lists := grepLines(after, "apiserver_storage_list_total{")
	for _, index := range []string{"l:app", "l:tier"} {
		if !strings.Contains(lists, fmt.Sprintf(`{group="",index=%q,resource="pods",storage="watchcache"}`, index)) {
			t.Errorf("no LIST served through index %s:\n%s", index, lists)
		}
	}
	t.Logf("LISTs by storage and index:\n%s", lists)
}

// unthrottledClient is a client of s without client-go's default rate
// limit (5 requests a second), which would make the server look slow.
func unthrottledClient(t *testing.T, s *framework.APIServer) kubernetes.Interface {
	config := rest.CopyConfig(s.Config)
	config.QPS = -1
	client, err := kubernetes.NewForConfig(config)
	if err != nil {
		t.Fatal(err)
	}
	return client
}

// diffWriter makes random changes to pods and remembers the newest
// resourceVersion it was acknowledged.
type diffWriter struct {
	client kubernetes.Interface
	mu     sync.Mutex
	rng    *rand.Rand
	pods   []types.NamespacedName
	next   int
	lastRV atomic.Uint64
	writes atomic.Int64
}

func (w *diffWriter) step(t *testing.T, ctx context.Context, createOnly bool) {
	w.mu.Lock()
	// 0-3 create, 4-8 relabel, 9 delete; the pod count stays near diffPods.
	op := w.rng.IntN(10)
	switch {
	case createOnly || len(w.pods) < diffPods/2:
		op = 0
	case len(w.pods) > diffPods && op < 4:
		op = 9
	}
	var target types.NamespacedName
	if op >= 4 {
		k := w.rng.IntN(len(w.pods))
		target = w.pods[k]
		if op == 9 {
			w.pods = slices.Delete(w.pods, k, k+1)
		}
	}
	labels := randomLabels(w.rng)
	node, ns, name := fmt.Sprintf("node-%d", w.rng.IntN(diffNodes)), fmt.Sprintf("ns-%d", w.rng.IntN(diffNamespaces)), fmt.Sprintf("pod-%d", w.next)
	if op < 4 {
		w.next++
		w.pods = append(w.pods, types.NamespacedName{Namespace: ns, Name: name})
	}
	w.mu.Unlock()

	var meta metav1.Object
	var err error
	pods := w.client.CoreV1().Pods(target.Namespace)
	switch {
	case op < 4:
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
			Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "registry.k8s.io/pause:3.10"}}},
		}
		meta, err = w.client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	case op < 9:
		// Replace all labels: keys may disappear as well as change.
		value, _ := json.Marshal(labels)
		patch := fmt.Sprintf(`[{"op":"add","path":"/metadata/labels","value":%s}]`, value)
		meta, err = pods.Patch(ctx, target.Name, types.JSONPatchType, []byte(patch), metav1.PatchOptions{})
	default:
		var deleted *corev1.Pod
		deleted, err = pods.Get(ctx, target.Name, metav1.GetOptions{})
		if err == nil {
			err = pods.Delete(ctx, target.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
			meta = deleted
		}
	}
	if err != nil {
		t.Errorf("write: %v", err)
		return
	}
	w.writes.Add(1)
	if rv, err := strconv.ParseUint(meta.GetResourceVersion(), 10, 64); err == nil && op != 9 {
		for old := w.lastRV.Load(); rv > old && !w.lastRV.CompareAndSwap(old, rv); old = w.lastRV.Load() {
		}
	}
}

// created is how many pods the writer has created.
func (w *diffWriter) created() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.next
}

func randomLabels(rng *rand.Rand) map[string]string {
	labels := map[string]string{}
	if rng.IntN(5) > 0 {
		labels["app"] = fmt.Sprintf("a%d", rng.IntN(diffApps))
	}
	if rng.IntN(3) > 0 {
		labels["tier"] = fmt.Sprintf("t%d", rng.IntN(diffTiers))
	}
	if rng.IntN(2) > 0 {
		labels["track"] = fmt.Sprintf("k%d", rng.IntN(diffTracks))
	}
	return labels
}

// listCase is one LIST request.
type listCase struct {
	namespace, labels, fields string
	resourceVersion           string
	match                     metav1.ResourceVersionMatch
	limit                     int64
}

func (c listCase) String() string {
	return fmt.Sprintf("{namespace=%q labels=%q fields=%q resourceVersion=%q match=%q limit=%d}", c.namespace, c.labels, c.fields, c.resourceVersion, c.match, c.limit)
}

func randomListCase(rng *rand.Rand, w *diffWriter) listCase {
	app := func() string { return fmt.Sprintf("a%d", rng.IntN(diffApps+1)) } // a5 matches nothing
	tier := func() string { return fmt.Sprintf("t%d", rng.IntN(diffTiers)) }
	labelSelectors := []func() string{
		func() string { return "" },
		func() string { return "app=" + app() },
		func() string { return "app==" + app() },
		func() string { return "app in (" + app() + ")" },
		func() string { return "app in (" + app() + "," + app() + ")" },
		func() string { return "app notin (" + app() + ")" },
		func() string { return "app!=" + app() },
		func() string { return "app" },
		func() string { return "!app" },
		func() string { return "app=" + app() + ",tier=" + tier() },
		func() string { return "tier=" + tier() + ",track=k" + strconv.Itoa(rng.IntN(diffTracks)) },
		func() string { return "track=k" + strconv.Itoa(rng.IntN(diffTracks)) },
		func() string { return "app=" + app() + ",tier in (t0,t1)" },
		func() string { return "app in (" + app() + "),!track" },
	}
	fieldSelectors := []func() string{
		func() string { return "" },
		func() string { return "" },
		func() string { return "spec.nodeName=node-" + strconv.Itoa(rng.IntN(diffNodes)) },
		func() string { return "spec.nodeName!=node-" + strconv.Itoa(rng.IntN(diffNodes)) },
		func() string { return "metadata.name=pod-" + strconv.Itoa(rng.IntN(w.created()+1)) },
	}
	c := listCase{
		labels: labelSelectors[rng.IntN(len(labelSelectors))](),
		fields: fieldSelectors[rng.IntN(len(fieldSelectors))](),
	}
	if rng.IntN(2) == 0 {
		c.namespace = fmt.Sprintf("ns-%d", rng.IntN(diffNamespaces))
	}
	if rng.IntN(3) == 0 {
		c.limit = 1 + rng.Int64N(100)
	}
	recent := strconv.FormatUint(w.lastRV.Load(), 10)
	switch rng.IntN(5) {
	case 0, 1: // consistent
	case 2:
		c.resourceVersion = "0"
	case 3:
		c.resourceVersion, c.match = recent, metav1.ResourceVersionMatchNotOlderThan
	default:
		c.resourceVersion, c.match = recent, metav1.ResourceVersionMatchExact
	}
	return c
}

// listAnswer is what a LIST returned, all pages together.
type listAnswer struct {
	resourceVersion uint64
	items           []string // namespace/name@resourceVersion, in order
}

func listAllPages(ctx context.Context, client kubernetes.Interface, c listCase) (listAnswer, error) {
	var answer listAnswer
	opts := metav1.ListOptions{LabelSelector: c.labels, FieldSelector: c.fields, ResourceVersion: c.resourceVersion, ResourceVersionMatch: c.match, Limit: c.limit}
	for page := 0; ; page++ {
		list, err := client.CoreV1().Pods(c.namespace).List(ctx, opts)
		if err != nil {
			return answer, err
		}
		rv, err := strconv.ParseUint(list.ResourceVersion, 10, 64)
		if err != nil {
			return answer, fmt.Errorf("list resourceVersion %q: %v", list.ResourceVersion, err)
		}
		if page == 0 {
			answer.resourceVersion = rv
		} else if rv != answer.resourceVersion {
			return answer, fmt.Errorf("page %d at resourceVersion %d, the first at %d", page, rv, answer.resourceVersion)
		}
		for _, p := range list.Items {
			answer.items = append(answer.items, p.Namespace+"/"+p.Name+"@"+p.ResourceVersion)
		}
		if list.Continue == "" {
			return answer, nil
		}
		// A continued LIST carries its resourceVersion in the token.
		opts = metav1.ListOptions{LabelSelector: c.labels, FieldSelector: c.fields, Limit: c.limit, Continue: list.Continue}
	}
}

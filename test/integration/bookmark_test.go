package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	clientfeatures "k8s.io/client-go/features"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"

	"github.com/bulwark-k8s/bulwark/internal/podwatch"
	"github.com/bulwark-k8s/bulwark/test/integration/framework"
)

const (
	resumeNodes        = 20
	resumeInterval     = 2 * time.Second
	resumeChurnPods    = 10
	resumeChurnPeriod  = 50 * time.Millisecond
	resumeNamespace    = "kubelets"
	resumeChurnNS      = "churn"
	resumeChurnNode    = "busy-node"
	resumeSettle       = 2*resumeInterval + time.Second
	resumeWatchTimeout = time.Minute
	// relistBackoff is past client-go's backoff between a watch that
	// failed (410 Gone) and the reflector's LIST: 800 ms at first.
	relistBackoff = 3 * time.Second
)

// TestWatchesResumeAcrossRestarts runs kubelet-style reflectors (client-go,
// bookmarks allowed, a field selector on their node) while pods of another
// node keep changing, so that only bookmarks move the reflectors'
// resourceVersions. The apiserver is restarted gracefully and then killed
// with SIGKILL; every reflector must resume its watch without a single LIST.
// The other node's pods change at random (changes, creations, deletions;
// the seed is printed, BULWARK_SEED repeats it): a watcher of them
// (client-go's RetryWatcher, which resumes from the last resourceVersion it
// saw) must see every acknowledged write once, in order, across both
// restarts.
func TestWatchesResumeAcrossRestarts(t *testing.T) {
	etcd := framework.StartEtcd(t, framework.EtcdOptions{})
	server := framework.StartAPIServer(t, framework.APIServerOptions{Etcd: etcd, Args: []string{
		"--watch-bookmark-interval=" + resumeInterval.String(), gracefulStopArg,
	}})
	client := unthrottledClient(t, server)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, ns := range []string{resumeNamespace, resumeChurnNS} {
		createNamespace(t, client, ns)
	}
	for i := range resumeNodes {
		for j := range 2 {
			createPod(t, client, resumeNamespace, fmt.Sprintf("node-%d-pod-%d", i, j), fmt.Sprintf("node-%d", i))
		}
	}
	var startRV string
	for i := range resumeChurnPods {
		startRV = createPod(t, client, resumeChurnNS, fmt.Sprintf("churn-%d", i), resumeChurnNode).ResourceVersion
	}

	watchers := make([]*podwatch.Watcher, resumeNodes)
	for i := range watchers {
		watchers[i] = podwatch.ForNode(fmt.Sprintf("node-%d", i))
		watchers[i].WatchTimeout = resumeWatchTimeout
		defer func(done <-chan struct{}) { <-done }(watchers[i].Start(ctx, client))
	}
	defer cancel()
	waitUntil(t, time.Minute, "reflectors synced", func() bool { return allSynced(watchers) })
	// Their streaming lists (client-go's default) were served through
	// the spec.nodeName index, not a filter of every pod (docs/cacher.md).
	if clientfeatures.FeatureGates().Enabled(clientfeatures.WatchListClient) {
		if n := metricSum(t, metrics(t, server), "bulwark_watch_cache_listed_streaming_lists_total"); n < resumeNodes {
			t.Errorf("%v streaming lists served through an index, want the %d reflectors'", n, resumeNodes)
		}
	}

	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("BULWARK_SEED"); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("BULWARK_SEED: %v", err)
		}
	}
	t.Logf("churn seed %d (BULWARK_SEED=%d repeats it)", seed, seed)
	churn := newChurnWriter(client, seed)
	go churn.run(ctx)
	events := watchChurn(ctx, t, client, startRV)

	for _, restart := range []struct {
		name string
		do   func()
	}{
		{"graceful", func() { server.Restart(t) }},
		{"SIGKILL", func() {
			server.Process.Kill()
			if err := server.Start(); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		time.Sleep(resumeSettle) // bookmarks carry the churn's revisions to the reflectors
		listsBefore, goneBefore := podwatch.Totals(watchers)
		churnGoneBefore := events.gone.Load()
		stopped := time.Now()
		restart.do()
		t.Logf("%s restart: stopped and ready again in %v", restart.name, time.Since(stopped).Round(time.Millisecond))
		waitUntil(t, time.Minute, restart.name+": reflectors watching again", func() bool { return podwatch.WatchingSince(watchers, stopped) == resumeNodes })
		// A reflector that got 410 Gone lists after client-go's backoff.
		time.Sleep(relistBackoff)
		lists, gone := podwatch.Totals(watchers)
		if lists != listsBefore || gone != goneBefore || events.gone.Load() != churnGoneBefore {
			t.Errorf("%s: the reflectors listed %d times and got 410 Gone %d times, the churn watcher %d times; want none",
				restart.name, lists-listsBefore, gone-goneBefore, events.gone.Load()-churnGoneBefore)
		}
		m := metrics(t, server)
		resumed, serverGone := metricSum(t, m, "bulwark_watch_history_resumptions_total"), metricSum(t, m, "bulwark_watch_gone_total")
		t.Logf("%s restart: %d reflectors resumed, %v watches served from the start history", restart.name, resumeNodes, resumed)
		if serverGone != 0 {
			t.Errorf("%s: bulwark_watch_gone_total %v, want 0", restart.name, serverGone)
		}
		// After SIGKILL no last bookmark told the reflectors where etcd
		// was: each is behind the new cache's start (the other node's pods
		// changed after its last bookmark) and must resume from the
		// history. The churn watcher saw the last write itself, and is
		// behind only if a write failed after it.
		if restart.name == "SIGKILL" && resumed < resumeNodes {
			t.Errorf("%s: %v watches served from the start history, want every reflector's (%d)", restart.name, resumed, resumeNodes)
		}
		// The resumed watches deliver: a new pod on a node reaches its reflector.
		node := len(watchers) - 1
		name := "after-" + strings.ToLower(restart.name)
		createPod(t, client, resumeNamespace, name, watchers[node].Name)
		waitUntil(t, 10*time.Second, restart.name+": the new pod reaching its reflector", func() bool {
			_, ok, _ := watchers[node].Store().GetByKey(resumeNamespace + "/" + name)
			return ok
		})
	}

	acknowledged := churn.stop()
	var last uint64
	for _, write := range acknowledged {
		last = max(last, write.rv)
	}
	waitUntil(t, 10*time.Second, "the churn watcher reaching the last write", func() bool {
		got := events.get()
		return len(got) > 0 && got[len(got)-1].rv >= last
	})
	got := events.get()
	for i := 1; i < len(got); i++ {
		if got[i].rv <= got[i-1].rv {
			t.Fatalf("churn watcher: event %v after %v (out of order or duplicated)", got[i], got[i-1])
		}
	}
	deletions, missed := 0, 0
	for _, write := range acknowledged {
		seen := slices.Contains(got, write)
		if write.typ == watch.Deleted {
			deletions++
			seen = slices.ContainsFunc(got, func(e podVersion) bool { return e.typ == watch.Deleted && e.name == write.name })
		}
		if !seen {
			missed++
			t.Errorf("churn watcher missed the acknowledged write %v", write)
		}
	}
	t.Logf("churn watcher: %d events across both restarts, %d acknowledged writes (%d deletions), none missed", len(got), len(acknowledged), deletions)

	// Every acknowledged write is there afterwards: each pod's last
	// acknowledged state, or a later one whose answer was lost.
	final := map[string]podVersion{}
	for _, write := range acknowledged {
		final[write.name] = write
	}
	list, err := client.CoreV1().Pods(resumeChurnNS).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	stored := map[string]uint64{}
	for _, p := range list.Items {
		stored[p.Name] = parseRV(p.ResourceVersion)
	}
	lost := 0
	for name, write := range final {
		if rv, ok := stored[name]; (write.typ == watch.Deleted) == ok || rv < write.rv {
			lost++
			t.Errorf("acknowledged write %v lost: stored at %d (present %v)", write, rv, ok)
		}
	}
	figure(t, "restarts under load (graceful and SIGKILL): acknowledged writes", float64(len(acknowledged)), "writes")
	figure(t, "restarts under load: acknowledged writes lost", float64(lost), "writes")
	figure(t, "restarts under load: acknowledged writes the watcher missed", float64(missed), "writes")
}

// podVersion is one version of a pod: a write, or the event that shows it.
// A deletion's resourceVersion is not known to the writer (0).
type podVersion struct {
	typ  watch.EventType
	name string
	rv   uint64
}

// churnWriter makes random changes to the churn pods — changes mostly,
// creations and deletions — remembering every write the server
// acknowledged; writes fail while it restarts.
type churnWriter struct {
	client       kubernetes.Interface
	rng          *rand.Rand
	live         []string
	created      int
	mu           sync.Mutex
	acknowledged []podVersion
	done         chan struct{}
	stopped      chan struct{}
}

func newChurnWriter(client kubernetes.Interface, seed uint64) *churnWriter {
	c := &churnWriter{client: client, rng: rand.New(rand.NewPCG(seed, 3)), done: make(chan struct{}), stopped: make(chan struct{})}
	for i := range resumeChurnPods {
		c.live = append(c.live, fmt.Sprintf("churn-%d", i))
	}
	return c
}

func (c *churnWriter) run(ctx context.Context) {
	defer close(c.stopped)
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-c.done:
			return
		case <-time.After(resumeChurnPeriod):
		}
		if write, ok := c.step(ctx, i); ok {
			c.mu.Lock()
			c.acknowledged = append(c.acknowledged, write)
			c.mu.Unlock()
		}
	}
}

// step makes one random change; ok is false when the server did not
// acknowledge it.
func (c *churnWriter) step(ctx context.Context, i int) (write podVersion, ok bool) {
	pods := c.client.CoreV1().Pods(resumeChurnNS)
	switch op := c.rng.IntN(10); {
	case op < 2 || len(c.live) < resumeChurnPods/2:
		name := fmt.Sprintf("churn-new-%d", c.created)
		c.created++ // a name is never reused, even when the creation's answer was lost
		pod, err := pods.Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec:       corev1.PodSpec{NodeName: resumeChurnNode, Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
		}, metav1.CreateOptions{})
		if err != nil {
			return write, false
		}
		c.live = append(c.live, name)
		return podVersion{watch.Added, name, parseRV(pod.ResourceVersion)}, true
	case op < 3:
		j := c.rng.IntN(len(c.live))
		name := c.live[j]
		now := int64(0)
		err := pods.Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &now})
		if err != nil && !apierrors.IsNotFound(err) {
			return write, false
		}
		c.live = slices.Delete(c.live, j, j+1)
		return podVersion{typ: watch.Deleted, name: name}, err == nil
	default:
		j := c.rng.IntN(len(c.live))
		name := c.live[j]
		patch := fmt.Sprintf(`{"metadata":{"labels":{"step":"%d"}}}`, i)
		pod, err := pods.Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
		if apierrors.IsNotFound(err) { // deleted by a request whose answer was lost
			c.live = slices.Delete(c.live, j, j+1)
		}
		if err != nil {
			return write, false
		}
		return podVersion{watch.Modified, name, parseRV(pod.ResourceVersion)}, true
	}
}

func parseRV(rv string) uint64 {
	v, _ := strconv.ParseUint(rv, 10, 64)
	return v
}

func (c *churnWriter) stop() []podVersion {
	close(c.done)
	<-c.stopped
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.acknowledged)
}

// eventLog is what the churn watcher received.
type eventLog struct {
	mu     sync.Mutex
	events []podVersion
	// gone counts the 410 Gone the watcher received.
	gone atomic.Int64
}

func (l *eventLog) get() []podVersion {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.events)
}

// watchChurn runs client-go's RetryWatcher on the churn pods from rv.
func watchChurn(ctx context.Context, t *testing.T, client kubernetes.Interface, rv string) *eventLog {
	log := &eventLog{}
	w, err := watchtools.NewRetryWatcherWithContext(ctx, rv, &cache.ListWatch{
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return client.CoreV1().Pods(resumeChurnNS).Watch(ctx, o)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer w.Stop()
		for event := range w.ResultChan() {
			pod, ok := event.Object.(*corev1.Pod)
			if !ok {
				if apierrors.IsResourceExpired(apierrors.FromObject(event.Object)) || apierrors.IsGone(apierrors.FromObject(event.Object)) {
					log.gone.Add(1)
				}
				t.Errorf("churn watcher: %s event %v", event.Type, event.Object)
				return
			}
			if event.Type == watch.Bookmark {
				continue
			}
			log.mu.Lock()
			log.events = append(log.events, podVersion{event.Type, pod.Name, parseRV(pod.ResourceVersion)})
			log.mu.Unlock()
		}
	}()
	return log
}

func createNamespace(t *testing.T, client kubernetes.Interface, name string) {
	t.Helper()
	ctx := context.Background()
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// No controller-manager runs to create it; admission wants it.
	if _, err := client.CoreV1().ServiceAccounts(name).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func createPod(t *testing.T, client kubernetes.Interface, namespace, name, node string) *corev1.Pod {
	t.Helper()
	pod, err := client.CoreV1().Pods(namespace).Create(context.Background(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return pod
}

var sampleValue = regexp.MustCompile(`\s([0-9.e+-]+)$`)

// metricSum adds the samples of a metric in a /metrics text: every series
// of a name, or one series named with its labels.
func metricSum(t *testing.T, text, name string) float64 {
	t.Helper()
	var sum float64
	for _, line := range regexp.MustCompile(`(?m)^`+regexp.QuoteMeta(name)+`(\{[^}]*\})? .*$`).FindAllString(text, -1) {
		m := sampleValue.FindStringSubmatch(line)
		v, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		sum += v
	}
	return sum
}

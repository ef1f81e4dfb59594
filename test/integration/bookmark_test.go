package integration

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"

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
)

// TestWatchesResumeAcrossRestarts runs kubelet-style reflectors (client-go,
// bookmarks allowed, a field selector on their node) while pods of another
// node keep changing, so that only bookmarks move the reflectors'
// resourceVersions. The apiserver is restarted gracefully and then killed
// with SIGKILL; every reflector must resume its watch without a single LIST.
// A watcher of the changing pods (client-go's RetryWatcher, which resumes
// from the last resourceVersion it saw) must see every acknowledged write
// once, in order, across both restarts.
func TestWatchesResumeAcrossRestarts(t *testing.T) {
	etcd := framework.StartEtcd(t, framework.EtcdOptions{})
	server := framework.StartAPIServer(t, framework.APIServerOptions{Etcd: etcd, Args: []string{
		"--watch-bookmark-interval=" + resumeInterval.String(),
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

	var reflectors sync.WaitGroup
	defer reflectors.Wait()
	defer cancel()
	watchers := make([]*nodeWatcher, resumeNodes)
	for i := range watchers {
		watchers[i] = &nodeWatcher{node: fmt.Sprintf("node-%d", i), store: cache.NewStore(cache.MetaNamespaceKeyFunc)}
		r := cache.NewReflectorWithOptions(watchers[i].listWatch(client), &corev1.Pod{}, watchers[i].store, cache.ReflectorOptions{Name: watchers[i].node})
		reflectors.Add(1)
		go func() {
			defer reflectors.Done()
			r.RunWithContext(ctx)
		}()
	}
	waitUntil(t, time.Minute, "reflectors watching", func() bool { return watchingSince(watchers, time.Time{}) == resumeNodes })

	churn := &churnWriter{client: client}
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
		lists := make([]int64, len(watchers))
		for i, w := range watchers {
			lists[i] = w.lists.Load()
		}
		stopped := time.Now()
		restart.do()
		t.Logf("%s restart: stopped and ready again in %v", restart.name, time.Since(stopped).Round(time.Millisecond))
		waitUntil(t, time.Minute, restart.name+": reflectors watching again", func() bool { return watchingSince(watchers, stopped) == resumeNodes })
		for i, w := range watchers {
			if n := w.lists.Load() - lists[i]; n != 0 {
				t.Errorf("%s: the reflector of %s listed %d times", restart.name, w.node, n)
			}
		}
		resumed := metricSum(t, metrics(t, server), "bulwark_watch_history_resumptions_total")
		t.Logf("%s restart: %d reflectors resumed, %v watches served from the start history", restart.name, resumeNodes, resumed)
		if restart.name == "SIGKILL" && resumed == 0 {
			t.Errorf("%s: no watch was served from the start history", restart.name)
		}
		// The resumed watches deliver: a new pod on a node reaches its reflector.
		node := len(watchers) - 1
		name := "after-" + strings.ToLower(restart.name)
		createPod(t, client, resumeNamespace, name, watchers[node].node)
		waitUntil(t, 10*time.Second, restart.name+": the new pod reaching its reflector", func() bool {
			_, ok, _ := watchers[node].store.GetByKey(resumeNamespace + "/" + name)
			return ok
		})
	}

	acknowledged := churn.stop()
	last := acknowledged[len(acknowledged)-1]
	waitUntil(t, 10*time.Second, "the churn watcher reaching the last write", func() bool {
		got := events.get()
		return len(got) > 0 && got[len(got)-1].rv >= last.rv
	})
	got := events.get()
	for i := 1; i < len(got); i++ {
		if got[i].rv <= got[i-1].rv {
			t.Fatalf("churn watcher: event %v after %v (out of order or duplicated)", got[i], got[i-1])
		}
	}
	for _, write := range acknowledged {
		if !slices.Contains(got, write) {
			t.Errorf("churn watcher missed the acknowledged write %v", write)
		}
	}
	t.Logf("churn watcher: %d events across both restarts, %d acknowledged writes, none missed", len(got), len(acknowledged))
}

// nodeWatcher is a kubelet's reflector on the pods of its node, counting
// its LISTs (and streaming lists) and when its watch last started.
type nodeWatcher struct {
	node         string
	store        cache.Store
	lists        atomic.Int64
	watchStarted atomic.Int64 // unix nanos
}

func (w *nodeWatcher) listWatch(client kubernetes.Interface) *cache.ListWatch {
	selector := fields.OneTermEqualSelector("spec.nodeName", w.node).String()
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			w.lists.Add(1)
			o.FieldSelector = selector
			return client.CoreV1().Pods("").List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			if o.SendInitialEvents != nil && *o.SendInitialEvents {
				w.lists.Add(1)
			}
			o.FieldSelector = selector
			o.AllowWatchBookmarks = true
			timeout := int64(resumeWatchTimeout.Seconds())
			o.TimeoutSeconds = &timeout
			wi, err := client.CoreV1().Pods("").Watch(ctx, o)
			if err == nil {
				w.watchStarted.Store(time.Now().UnixNano())
			}
			return wi, err
		},
	}
}

func watchingSince(watchers []*nodeWatcher, since time.Time) int {
	n := 0
	for _, w := range watchers {
		if w.watchStarted.Load() > since.UnixNano() {
			n++
		}
	}
	return n
}

// podVersion is one version of a pod: a write, or the event that shows it.
type podVersion struct {
	name string
	rv   uint64
}

// churnWriter changes the churn pods one after the other, remembering
// every write the server acknowledged; writes fail while it restarts.
type churnWriter struct {
	client       kubernetes.Interface
	mu           sync.Mutex
	acknowledged []podVersion
	done         chan struct{}
	stopped      chan struct{}
}

func (c *churnWriter) run(ctx context.Context) {
	c.mu.Lock()
	c.done, c.stopped = make(chan struct{}), make(chan struct{})
	c.mu.Unlock()
	defer close(c.stopped)
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-c.done:
			return
		case <-time.After(resumeChurnPeriod):
		}
		name := fmt.Sprintf("churn-%d", i%resumeChurnPods)
		patch := fmt.Sprintf(`{"metadata":{"labels":{"step":"%d"}}}`, i)
		pod, err := c.client.CoreV1().Pods(resumeChurnNS).Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
		if err != nil {
			continue // the server is restarting
		}
		rv, _ := strconv.ParseUint(pod.ResourceVersion, 10, 64)
		c.mu.Lock()
		c.acknowledged = append(c.acknowledged, podVersion{name, rv})
		c.mu.Unlock()
	}
}

func (c *churnWriter) stop() []podVersion {
	c.mu.Lock()
	close(c.done)
	c.mu.Unlock()
	<-c.stopped
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.acknowledged)
}

// eventLog is what the churn watcher received.
type eventLog struct {
	mu     sync.Mutex
	events []podVersion
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
				t.Errorf("churn watcher: %s event %v", event.Type, event.Object)
				return
			}
			if event.Type == watch.Bookmark {
				continue
			}
			rv, _ := strconv.ParseUint(pod.ResourceVersion, 10, 64)
			log.mu.Lock()
			log.events = append(log.events, podVersion{pod.Name, rv})
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

// metricSum adds the samples of a counter in a /metrics text.
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

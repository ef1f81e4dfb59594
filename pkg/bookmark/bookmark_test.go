package bookmark

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/apiserver/pkg/apis/example"
	examplev1 "k8s.io/apiserver/pkg/apis/example/v1"
	apirequest "k8s.io/apiserver/pkg/endpoints/request"
	genericregistry "k8s.io/apiserver/pkg/registry/generic/registry"
	"k8s.io/apiserver/pkg/storage"
	cacherstorage "k8s.io/apiserver/pkg/storage/cacher"
	etcd3testing "k8s.io/apiserver/pkg/storage/etcd3/testing"
	"k8s.io/apiserver/pkg/storage/storagebackend"
	"k8s.io/apiserver/pkg/storage/storagebackend/factory"
	"k8s.io/component-base/metrics/testutil"
)

const prefix = "/pods/"

// testEtcd is a real etcd with the storage config of upstream's example
// Pods, the type upstream's storage tests use.
type testEtcd struct {
	config *storagebackend.Config
	client *clientv3.Client
}

func startEtcd(t testing.TB) testEtcd {
	scheme := runtime.NewScheme()
	metav1.AddToGroupVersion(scheme, metav1.SchemeGroupVersion)
	utilruntime.Must(example.AddToScheme(scheme))
	utilruntime.Must(examplev1.AddToScheme(scheme))
	pb := protobuf.NewSerializer(scheme, scheme)
	server, config := etcd3testing.NewUnsecuredEtcd3TestClientServer(t)
	t.Cleanup(func() { server.Terminate(t) })
	config.Codec = serializer.NewCodecFactory(scheme).CodecForVersions(pb, pb, schema.GroupVersions{examplev1.SchemeGroupVersion}, nil)
	return testEtcd{config: config, client: server.V3Client.Client}
}

// newStorage builds what the apiserver builds for a resource: upstream's
// StorageWithCacher, decorated by m; it returns once the cache is filled.
func (e testEtcd) newStorage(t testing.TB, m *Manager) (storage.Interface, factory.DestroyFunc) {
	t.Helper()
	config := e.config.ForResource(schema.GroupResource{Resource: "pods"})
	config.EventsHistoryWindow = cacherstorage.DefaultEventFreshDuration
	s, destroy, err := m.Decorate(genericregistry.StorageWithCacher())(config, prefix,
		func(obj runtime.Object) (string, error) { return storage.NamespaceKeyFunc(prefix, obj) },
		func() runtime.Object { return &example.Pod{} },
		func() runtime.Object { return &example.PodList{} },
		podAttrs, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(destroy)
	if err := wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		return s.ReadinessCheck() == nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	return s, destroy
}

func podAttrs(obj runtime.Object) (labels.Set, fields.Set, error) {
	pod := obj.(*example.Pod)
	return labels.Set(pod.Labels), fields.Set{"metadata.name": pod.Name, "metadata.namespace": pod.Namespace, "spec.nodeName": pod.Spec.NodeName}, nil
}

func newManager(t testing.TB, config Config) *Manager {
	t.Helper()
	RegisterMetrics()
	m, err := NewManager(config)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// put creates or replaces a pod and returns its resourceVersion.
func put(t testing.TB, s storage.Interface, pod *example.Pod) uint64 {
	t.Helper()
	key, _ := storage.NamespaceKeyFunc(prefix, pod)
	out := &example.Pod{}
	err := s.GuaranteedUpdate(context.Background(), key, out, true, nil, func(runtime.Object, storage.ResponseMeta) (runtime.Object, *uint64, error) {
		return pod.DeepCopy(), nil, nil
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return rvOf(t, out)
}

func remove(t *testing.T, s storage.Interface, namespace, name string) uint64 {
	t.Helper()
	out := &example.Pod{}
	key := prefix + namespace + "/" + name
	if err := s.Delete(context.Background(), key, out, nil, storage.ValidateAllObjectFunc, nil, storage.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	return rvOf(t, out)
}

func rvOf(t testing.TB, obj runtime.Object) uint64 {
	t.Helper()
	o, err := meta.Accessor(obj)
	if err != nil {
		t.Fatal(err)
	}
	rv, err := strconv.ParseUint(o.GetResourceVersion(), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return rv
}

func pod(namespace, name string, labels map[string]string) *example.Pod {
	return &example.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: labels}}
}

func watchOpts(rv uint64, selector string) storage.ListOptions {
	return storage.ListOptions{
		ResourceVersion: strconv.FormatUint(rv, 10),
		Recursive:       true,
		Predicate: storage.SelectionPredicate{
			Label: labels.SelectorFromSet(nil), Field: fields.Everything(), GetAttrs: podAttrs, AllowWatchBookmarks: true,
		},
	}
}

func withSelector(t *testing.T, opts storage.ListOptions, selector string) storage.ListOptions {
	t.Helper()
	l, err := labels.Parse(selector)
	if err != nil {
		t.Fatal(err)
	}
	opts.Predicate.Label = l
	return opts
}

// received is one event a watcher got: its type, object and resourceVersion.
type received struct {
	Type watch.EventType
	Name string
	RV   uint64
}

func (r received) String() string { return fmt.Sprintf("%s %s@%d", r.Type, r.Name, r.RV) }

// collect reads events until the watch reaches resourceVersion until (by
// an event or a bookmark), or the timeout; bookmarks are kept only if asked.
func collect(t *testing.T, w watch.Interface, until uint64, timeout time.Duration, bookmarks bool) (got []received, closed bool) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case event, ok := <-w.ResultChan():
			if !ok {
				return got, true
			}
			if event.Type == watch.Error {
				t.Fatalf("error event: %v", event.Object)
			}
			r := received{Type: event.Type, RV: rvOf(t, event.Object)}
			if event.Type != watch.Bookmark {
				o, _ := meta.Accessor(event.Object) // the cache sends its cachingObjects
				r.Name = o.GetName()
			}
			if event.Type != watch.Bookmark || bookmarks {
				got = append(got, r)
			}
			if until > 0 && r.RV >= until {
				return got, false
			}
		case <-deadline:
			return got, false
		}
	}
}

// TestPeriodicBookmarks: a watcher of a namespace where nothing happens gets
// a bookmark every interval, carrying the revision etcd has reached,
// whether other pods change or only keys of other resources.
func TestPeriodicBookmarks(t *testing.T) {
	e := startEtcd(t)
	s, _ := e.newStorage(t, newManager(t, Config{Interval: time.Second}))
	start := put(t, s, pod("busy", "p", nil))
	w, err := s.Watch(context.Background(), prefix+"quiet", watchOpts(start, ""))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()

	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
				put(t, s, pod("busy", "p", map[string]string{"i": strconv.Itoa(i)}))
			}
		}
	}()
	got, _ := collect(t, w, 0, 5500*time.Millisecond, true)
	if len(got) < 3 || len(got) > 7 {
		t.Fatalf("%d bookmarks in 5.5s with an interval of 1s: %v", len(got), got)
	}
	for i, r := range got {
		if r.Type != watch.Bookmark {
			t.Fatalf("event %v in a namespace without pods", r)
		}
		if i > 0 && r.RV <= got[i-1].RV {
			t.Errorf("bookmarks %v then %v: the resourceVersion did not advance", got[i-1], r)
		}
	}

	// Only another resource changes: the bookmark follows etcd's revision.
	stop <- struct{}{}
	resp, err := e.client.Put(context.Background(), "/registry/other/key", "v")
	if err != nil {
		t.Fatal(err)
	}
	got, _ = collect(t, w, uint64(resp.Header.Revision), 5*time.Second, true)
	if len(got) == 0 || got[len(got)-1].RV < uint64(resp.Header.Revision) {
		t.Errorf("bookmarks %v; none reached etcd's revision %d", got, resp.Header.Revision)
	}
}

// TestSegmentsLoseNothing: a watcher whose watch is served by many segments
// receives every write once, in order, while writes keep coming.
func TestSegmentsLoseNothing(t *testing.T) {
	e := startEtcd(t)
	s, _ := e.newStorage(t, newManager(t, Config{Interval: time.Second}))
	start := put(t, s, pod("ns", "seed", nil))
	segmentsBefore := segmentsOf(t)
	w, err := s.Watch(context.Background(), prefix, watchOpts(start, ""))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	// The watcher reads while the writes come, as a client does: one
	// event per write.
	const writes = 120
	got := make(chan []received, 1)
	go func() {
		var events []received
		for event := range w.ResultChan() {
			if event.Type == watch.Bookmark {
				continue
			}
			o, _ := meta.Accessor(event.Object)
			rv, _ := strconv.ParseUint(o.GetResourceVersion(), 10, 64)
			if events = append(events, received{Type: event.Type, Name: o.GetName(), RV: rv}); len(events) == writes {
				break
			}
		}
		got <- events
	}()
	var want []received
	exists := map[string]bool{}
	for i := range writes {
		name := fmt.Sprintf("p%d", i%10)
		switch {
		case i%7 == 6 && exists[name]:
			want = append(want, received{Type: watch.Deleted, Name: name, RV: remove(t, s, "ns", name)})
			exists[name] = false
		case exists[name]:
			want = append(want, received{Type: watch.Modified, Name: name, RV: put(t, s, pod("ns", name, map[string]string{"i": strconv.Itoa(i)}))})
		default:
			want = append(want, received{Type: watch.Added, Name: name, RV: put(t, s, pod("ns", name, nil))})
			exists[name] = true
		}
		time.Sleep(40 * time.Millisecond) // 120 writes over about five intervals
	}
	select {
	case events := <-got:
		if !slices.Equal(events, want) {
			t.Errorf("events:\n%v\nwant:\n%v", events, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the watcher did not receive every write")
	}
	if n := segmentsOf(t) - segmentsBefore; n < 3 {
		t.Errorf("%v segments in about five intervals", n)
	}
}

// TestSlowWatcherResumes: a watcher that reads slower than a burst of
// writes comes is closed by the watch cache (shown on the cache's own
// watch, read the same way); served by segments, it receives every write
// once, in order, and its watch does not end.
func TestSlowWatcherResumes(t *testing.T) {
	e := startEtcd(t)
	s, _ := e.newStorage(t, newManager(t, Config{Interval: 10 * time.Second}))
	start := put(t, s, pod("ns", "seed", nil))
	resumedBefore := slowWatchersOf(t, "resumed")

	type result struct {
		got    []received
		closed bool
	}
	slowReader := func(w watch.Interface, until *atomic.Uint64, done chan<- result) {
		defer w.Stop()
		var r result
		for {
			select {
			case event, ok := <-w.ResultChan():
				if !ok {
					r.closed = true
					done <- r
					return
				}
				if event.Type == watch.Bookmark {
					continue
				}
				o, _ := meta.Accessor(event.Object)
				rv, _ := strconv.ParseUint(o.GetResourceVersion(), 10, 64)
				r.got = append(r.got, received{Type: event.Type, Name: o.GetName(), RV: rv})
				if last := until.Load(); last > 0 && rv >= last {
					done <- r
					return
				}
				time.Sleep(5 * time.Millisecond)
			case <-time.After(30 * time.Second):
				done <- r
				return
			}
		}
	}
	var until atomic.Uint64
	ours, cachesOwn := make(chan result, 1), make(chan result, 1)
	w, err := s.Watch(context.Background(), prefix, watchOpts(start, ""))
	if err != nil {
		t.Fatal(err)
	}
	go slowReader(w, &until, ours)
	plain, err := s.(*bookmarkingStorage).Interface.Watch(context.Background(), prefix, watchOpts(start, ""))
	if err != nil {
		t.Fatal(err)
	}
	go slowReader(plain, &until, cachesOwn)

	var want []received
	for i := range 400 {
		want = append(want, received{Type: watch.Modified, Name: "seed", RV: put(t, s, pod("ns", "seed", map[string]string{"i": strconv.Itoa(i)}))})
	}
	until.Store(want[len(want)-1].RV)

	if r := <-cachesOwn; !r.closed || len(r.got) >= len(want) {
		t.Fatalf("the cache's own watch got %d of %d events (closed: %v): the burst does not make the cache close a slow watcher", len(r.got), len(want), r.closed)
	}
	r := <-ours
	if r.closed || !slices.Equal(r.got, want) {
		t.Errorf("closed: %v; got %d events, want %d once, in order:\n%v", r.closed, len(r.got), len(want), r.got)
	}
	if n := slowWatchersOf(t, "resumed") - resumedBefore; n == 0 {
		t.Error("no resumption counted")
	}
}

func slowWatchersOf(t *testing.T, outcome string) float64 {
	t.Helper()
	v, err := testutil.GetCounterMetricValue(slowWatchers.WithLabelValues("", "pods", outcome))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func segmentsOf(t *testing.T) float64 {
	t.Helper()
	v, err := testutil.GetCounterMetricValue(segments.WithLabelValues("", "pods"))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestLastBookmark: when the apiserver terminates, a watcher gets a bookmark
// with the latest revision, long before its next periodic one, and again
// before the cache closes its watch.
func TestLastBookmark(t *testing.T) {
	e := startEtcd(t)
	m := newManager(t, Config{Interval: time.Minute})
	s, destroy := e.newStorage(t, m)
	start := put(t, s, pod("busy", "p", nil))
	w, err := s.Watch(context.Background(), prefix+"quiet", watchOpts(start, ""))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	latest := put(t, s, pod("busy", "p", map[string]string{"a": "b"}))
	// The watch takes bookmarks on demand once it runs; one that starts at
	// the very moment of termination is not owed one (it is current).
	if err := wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, 5*time.Second, true, func(context.Context) (bool, error) {
		m.mu.Lock()
		defer m.mu.Unlock()
		return len(m.watches) == 1, nil
	}); err != nil {
		t.Fatal("the watch does not take bookmarks on demand")
	}

	begin := time.Now()
	go func() {
		m.Terminating()
		destroy()
	}()
	// etcd moves on, as in any cluster (leases, events), with nothing the
	// watch selects: only the bookmark tells the watcher.
	if _, err := e.client.Put(context.Background(), "/leases/elsewhere", "x"); err != nil {
		t.Fatal(err)
	}
	got, closed := collect(t, w, 0, 3*finalBookmarkTimeout, true)
	if !closed || len(got) == 0 || got[0].Type != watch.Bookmark || got[0].RV < latest {
		t.Errorf("after termination: %v (closed: %v); want a bookmark at resourceVersion %d or later, then the end", got, closed, latest)
	}
	if d := time.Since(begin); d > 2*finalBookmarkTimeout {
		t.Errorf("termination took %v", d)
	}
}

// TestStartHistory: a watch that resumes, after a restart, from a
// resourceVersion older than the new watch cache gets the events since then
// that it would have got from the old cache — created, changed, relabelled
// out of and into its selector, deleted — instead of 410 Gone; then live
// events. Without a history the answer is upstream's 410.
func TestStartHistory(t *testing.T) {
	e := startEtcd(t)
	// The server before the restart answers from its cache alone: the reference.
	before, destroyBefore := e.newStorage(t, newManager(t, Config{Interval: time.Second}))
	put(t, before, pod("ns", "a", map[string]string{"app": "x"}))
	from := put(t, before, pod("ns", "b", map[string]string{"app": "x"}))
	put(t, before, pod("ns", "a", map[string]string{"app": "x", "v": "2"})) // modified
	put(t, before, pod("ns", "b", map[string]string{"app": "y"}))           // leaves the selector
	put(t, before, pod("ns", "c", map[string]string{"app": "x"}))           // created
	put(t, before, pod("other", "a", map[string]string{"app": "x"}))        // another namespace
	put(t, before, pod("ns", "b", map[string]string{"app": "x", "v": "3"})) // comes back
	last := remove(t, before, "ns", "a")

	opts := withSelector(t, watchOpts(from, ""), "app=x")
	reference, err := before.Watch(context.Background(), prefix+"ns", opts)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := collect(t, reference, last, 5*time.Second, false)
	reference.Stop()
	if len(want) != 5 {
		t.Fatalf("the cache before the restart sent %v", want)
	}
	destroyBefore()

	after, _ := e.newStorage(t, newManager(t, Config{Interval: time.Second, HistoryBudget: 1 << 20}))
	w, err := after.Watch(context.Background(), prefix+"ns", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	got, _ := collect(t, w, last, 15*time.Second, false)
	if !slices.Equal(got, want) {
		t.Errorf("resumed after the restart:\n%v\nwant what the cache sent before it:\n%v", got, want)
	}
	live := put(t, after, pod("ns", "d", map[string]string{"app": "x"}))
	if got, _ := collect(t, w, live, 5*time.Second, false); len(got) != 1 || got[0] != (received{Type: watch.Added, Name: "d", RV: live}) {
		t.Errorf("live event after the history: %v", got)
	}

	noHistory, _ := e.newStorage(t, newManager(t, Config{Interval: time.Second}))
	w, err = noHistory.Watch(context.Background(), prefix+"ns", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	select {
	case event := <-w.ResultChan():
		if status, ok := event.Object.(*metav1.Status); event.Type != watch.Error || !ok || status.Code != 410 {
			t.Errorf("without a history: %v %v, want upstream's 410", event.Type, event.Object)
		}
	case <-time.After(5 * time.Second):
		t.Errorf("without a history: no answer")
	}
}

// TestUnparsableResourceVersion: a watch from a resourceVersion that is not
// a number is the client's mistake, 400, not upstream's 500.
func TestUnparsableResourceVersion(t *testing.T) {
	e := startEtcd(t)
	s, _ := e.newStorage(t, newManager(t, Config{Interval: time.Second}))
	opts := watchOpts(0, "")
	opts.ResourceVersion = "abc"
	w, err := s.Watch(context.Background(), prefix, opts)
	if err == nil {
		w.Stop()
		t.Fatal("watch from resourceVersion abc started")
	}
	if !apierrors.IsBadRequest(err) {
		t.Errorf("watch from resourceVersion abc: %v, want BadRequest", err)
	}
}

// serverShutdownSignal is the apiserver's signal of having stopped
// accepting new requests, which its watch filter puts in a watch's context.
type serverShutdownSignal chan struct{}

func (s serverShutdownSignal) ShuttingDown() <-chan struct{} { return s }

// TestWatchWhileShuttingDown: once the server stops accepting new requests
// (it ends the open watches then), a new watch gets 429 with a Retry-After,
// which a reflector retries, not a watch that ends at once with nothing,
// after which it relists; before that, and for a plain watch too, watches
// are served.
func TestWatchWhileShuttingDown(t *testing.T) {
	e := startEtcd(t)
	s, _ := e.newStorage(t, newManager(t, Config{Interval: time.Second}))
	rv := put(t, s, pod("ns", "p", nil))
	signal := make(serverShutdownSignal)
	ctx := apirequest.WithServerShutdownSignal(context.Background(), signal)
	for _, bookmarks := range []bool{true, false} {
		opts := watchOpts(rv, "")
		opts.Predicate.AllowWatchBookmarks = bookmarks
		w, err := s.Watch(ctx, prefix, opts)
		if err != nil {
			t.Fatalf("bookmarks %v, before the shutdown: %v", bookmarks, err)
		}
		w.Stop()
	}
	close(signal)
	for _, bookmarks := range []bool{true, false} {
		opts := watchOpts(rv, "")
		opts.Predicate.AllowWatchBookmarks = bookmarks
		w, err := s.Watch(ctx, prefix, opts)
		if err == nil {
			w.Stop()
			t.Fatalf("bookmarks %v: a watch started while the server shuts down", bookmarks)
		}
		if seconds, ok := apierrors.SuggestsClientDelay(err); !apierrors.IsTooManyRequests(err) || !ok || seconds < 1 {
			t.Errorf("bookmarks %v: %v, want 429 with a Retry-After", bookmarks, err)
		}
	}
}

// TestPlainWatches: a watch this package cannot improve is the watch
// cache's own, with no goroutine or channel in between; one that takes
// bookmarks at an interval is served by segments.
func TestPlainWatches(t *testing.T) {
	e := startEtcd(t)
	for _, tc := range []struct {
		name      string
		config    Config
		bookmarks bool
		segmented bool
	}{
		{"bookmarks, interval", Config{Interval: time.Second}, true, true},
		{"no bookmarks asked for", Config{Interval: time.Second, HistoryBudget: 1 << 20}, false, false},
		{"bookmarks, upstream's interval", Config{HistoryBudget: 1 << 20}, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := e.newStorage(t, newManager(t, tc.config))
			rv := put(t, s, pod("ns", "p", nil))
			opts := watchOpts(rv, "")
			opts.Predicate.AllowWatchBookmarks = tc.bookmarks
			w, err := s.Watch(context.Background(), prefix, opts)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Stop()
			if _, segmented := w.(*resumingWatch); segmented != tc.segmented {
				t.Errorf("watch %T, segmented %v; want %v", w, segmented, tc.segmented)
			}
		})
	}
	// Nothing to do: no decorator at all.
	if m := newManager(t, Config{}); m.Active() {
		t.Errorf("a manager with no interval and no history budget is active")
	}
}

// TestWatchWaitsForTheStartHistory: a watch that resumes while the start
// history is still being read waits for it a moment, then gets 429 with a
// Retry-After, never the cache's 410 Gone.
func TestWatchWaitsForTheStartHistory(t *testing.T) {
	h := &history{resource: schema.GroupResource{Resource: "pods"}, filled: make(chan struct{})}
	start := time.Now()
	_, _, covered, err := h.since(context.Background(), 5, prefix, storage.Everything)
	if !apierrors.IsTooManyRequests(err) || covered {
		t.Fatalf("while the history is read: covered %v, %v; want 429", covered, err)
	}
	if waited := time.Since(start); waited < historyWait {
		t.Errorf("429 after %v, before waiting %v for the history", waited, historyWait)
	}
	if seconds, ok := apierrors.SuggestsClientDelay(err); !ok || seconds != historyRetryAfterSeconds {
		t.Errorf("Retry-After %d (%v), want %d", seconds, ok, historyRetryAfterSeconds)
	}
	// Read meanwhile: the watch is served from it.
	h.to, h.from = 10, 1
	go func() {
		time.Sleep(100 * time.Millisecond)
		close(h.filled)
	}()
	if _, to, covered, err := h.since(context.Background(), 5, prefix, storage.Everything); err != nil || !covered || to != 10 {
		t.Errorf("once read: to %d, covered %v, %v; want 10, covered", to, covered, err)
	}
}

// TestStartHistoryReadInChunks: the history is read in chunks of revisions,
// newest first: it holds the newest events that fit the budget, every one
// of them once and in order, from etcd's oldest retained revision on when
// they all fit.
func TestStartHistoryReadInChunks(t *testing.T) {
	e := startEtcd(t)
	config := e.config.ForResource(schema.GroupResource{Resource: "pods"})
	probe := newHistory(config, prefix, 1)
	ctx := context.Background()
	const writes = 3*historyChunkRevisions + 500
	var revs []uint64
	for i := range writes {
		key := fmt.Sprintf("%sns/pod-%d", probe.etcdPrefix, i%700) // creations, then changes
		resp, err := e.client.Put(ctx, key, fmt.Sprintf("value-%05d", i))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.client.Put(ctx, "/other-resource", "x"); err != nil { // revisions of other keys between
			t.Fatal(err)
		}
		revs = append(revs, uint64(resp.Header.Revision))
	}
	compactedAt := revs[400]
	if _, err := e.client.Compact(ctx, int64(compactedAt)); err != nil {
		t.Fatal(err)
	}
	to := revs[len(revs)-1] + 1

	for _, tc := range []struct {
		name   string
		budget int64
		// first is the index in revs of the oldest event the history keeps;
		// the history covers watches from wantFrom on.
		first    int
		wantFrom uint64
	}{
		{"all since the compaction", 1 << 30, 400, compactedAt - 1},
		{"the newest that fit", newestSize(probe, writes, 2500), writes - 2500, revs[writes-2501]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHistory(config, prefix, tc.budget)
			if err := h.read(ctx, to); err != nil {
				t.Fatal(err)
			}
			want := revs[tc.first:]
			if len(h.events) != len(want) {
				t.Fatalf("%d events, want %d", len(h.events), len(want))
			}
			for i, ev := range h.events {
				if ev.rev != want[i] {
					t.Fatalf("event %d at revision %d, want %d", i, ev.rev, want[i])
				}
				if wantValue := fmt.Sprintf("value-%05d", tc.first+i); string(ev.value) != wantValue {
					t.Fatalf("event %d: %q, want %q", i, ev.value, wantValue)
				}
			}
			if h.from != tc.wantFrom {
				t.Errorf("from %d, want %d (compacted at %d)", h.from, tc.wantFrom, compactedAt)
			}
			if h.to != to || h.bytes > tc.budget {
				t.Errorf("to %d, bytes %d; want %d, at most %d", h.to, h.bytes, to, tc.budget)
			}
		})
	}
}

// newestSize is what the newest n of the writes of
// TestStartHistoryReadInChunks count against the budget: key, value and
// previous value (all changes by then).
func newestSize(h *history, writes, n int) int64 {
	var size int64
	for i := writes - n; i < writes; i++ {
		size += int64(len(fmt.Sprintf("%sns/pod-%d", h.etcdPrefix, i%700)) + 2*len("value-00000"))
	}
	return size
}

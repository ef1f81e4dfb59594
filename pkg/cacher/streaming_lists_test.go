package cacher

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/apiserver/pkg/apis/example"
	"k8s.io/apiserver/pkg/registry/generic"
	"k8s.io/apiserver/pkg/storage"
	cacherstorage "k8s.io/apiserver/pkg/storage/cacher"
	"k8s.io/apiserver/pkg/storage/storagebackend"
	"k8s.io/apiserver/pkg/storage/storagebackend/factory"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
)

// TestStreamingLists: a streaming list of a namespace or whose selector an
// index serves (served by LISTs, in pages, and a watch from their
// resourceVersion) sends what the watch cache's own sends — the same
// initial objects, the bookmark that ends them at the same resourceVersion,
// then the same events — for each resourceVersion a client may start from;
// a cluster-wide one no index serves is the watch cache's. Without
// indexes, every streaming list of a namespace is still served by LISTs.
func TestStreamingLists(t *testing.T) {
	RegisterMetrics()
	// Pages of 3, so that the initial events of every case take several.
	defer func(size int64) { initialEventsPage = size }(initialEventsPage)
	initialEventsPage = 3
	for _, stack := range []struct {
		name     string
		decorate func(generic.StorageDecorator) generic.StorageDecorator
		indexes  bool
	}{
		{name: "indexed", decorate: func(d generic.StorageDecorator) generic.StorageDecorator {
			return StreamingLists(testIndexes.Decorate(d))
		}, indexes: true},
		{name: "no indexes", decorate: StreamingLists},
	} {
		t.Run(stack.name, func(t *testing.T) {
			testStreamingLists(t, newPodStorage(t, stack.decorate), stack.indexes)
		})
	}
}

func testStreamingLists(t *testing.T, s storage.Interface, indexes bool) {
	cache := s.(*listedStorage).Interface
	ctx := context.Background()
	create := func(i int) string {
		pod := &example.Pod{ObjectMeta: metav1.ObjectMeta{
			Namespace: fmt.Sprintf("ns-%d", i%2),
			Name:      fmt.Sprintf("pod-%02d", i),
			Labels:    map[string]string{"app": fmt.Sprintf("a%d", i%3)},
		}}
		if i%4 == 0 {
			pod.Status.Phase = "Running"
		}
		out := &example.Pod{}
		key, _ := podKey(pod)
		if err := s.Create(ctx, key, pod, out, 0); err != nil {
			t.Fatal(err)
		}
		return out.ResourceVersion
	}
	var middle string
	for i := range 40 {
		if rv := create(i); i == 20 {
			middle = rv
		}
	}

	// late is a pod each case selects, created and deleted after the
	// initial events. indexed: an index of the indexed stack serves it.
	tests := []struct {
		name, key, label, field, resourceVersion string
		late                                     metav1.ObjectMeta
		indexed                                  bool
	}{
		{name: "label, latest", key: "/pods/", label: "app=a1", late: lateIn("ns-0", "a1"), indexed: true},
		{name: "label, any", key: "/pods/", label: "app=a1", resourceVersion: "0", late: lateIn("ns-1", "a1"), indexed: true},
		{name: "label, not older than", key: "/pods/", label: "app=a2", resourceVersion: middle, late: lateIn("ns-0", "a2"), indexed: true},
		{name: "field", key: "/pods/", field: "status.phase=Running", late: lateIn("ns-1", "a0"), indexed: true},
		{name: "namespaced label", key: "/pods/ns-1", label: "app=a0", late: lateIn("ns-1", "a0")},
		{name: "label and more", key: "/pods/", label: "app=a1,tier!=x", field: "status.phase!=Pending", late: lateIn("ns-0", "a1"), indexed: true},
		{name: "namespace, latest", key: "/pods/ns-0", late: lateIn("ns-0", "a2")},
		{name: "namespace, any", key: "/pods/ns-1", resourceVersion: "0", late: lateIn("ns-1", "a1")},
		{name: "namespace, not older than", key: "/pods/ns-1", resourceVersion: middle, late: lateIn("ns-1", "a0")},
		{name: "namespace, no index", key: "/pods/ns-0", label: "tier!=x", field: "status.phase!=Pending", late: lateIn("ns-0", "a1")},
		{name: "no index", key: "/pods/", label: "tier!=x", late: lateIn("ns-0", "a2")},
		{name: "set", key: "/pods/", label: "app in (a0,a1)", late: lateIn("ns-0", "a0")},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := storage.ListOptions{
				ResourceVersion:      tt.resourceVersion,
				ResourceVersionMatch: metav1.ResourceVersionMatchNotOlderThan,
				SendInitialEvents:    ptr.To(true),
				Recursive:            true,
				Predicate: storage.SelectionPredicate{
					Label: labels.Everything(), Field: fields.Everything(),
					GetAttrs: examplePodAttrs, AllowWatchBookmarks: true,
				},
			}
			var err error
			if tt.label != "" {
				if opts.Predicate.Label, err = labels.Parse(tt.label); err != nil {
					t.Fatal(err)
				}
			}
			if tt.field != "" {
				if opts.Predicate.Field, err = fields.ParseSelector(tt.field); err != nil {
					t.Fatal(err)
				}
			}
			ours, err := s.Watch(ctx, tt.key, opts)
			if err != nil {
				t.Fatal(err)
			}
			defer ours.Stop()
			wantListed := tt.key != "/pods/" || indexes && tt.indexed
			if _, listed := ours.(*streamingList); listed != wantListed {
				t.Fatalf("served by LISTs: %v, want %v", listed, wantListed)
			}
			theirs, err := cache.Watch(ctx, tt.key, opts)
			if err != nil {
				t.Fatal(err)
			}
			defer theirs.Stop()
			want, got := initialEvents(t, theirs), initialEvents(t, ours)
			if !slices.Equal(got, want) {
				t.Errorf("initial events\n got %v\nwant %v", got, want)
			}
			if len(want) < 2 {
				t.Fatalf("the case selects nothing: %v", want)
			}
			// Then the same events.
			pod := &example.Pod{ObjectMeta: tt.late}
			pod.Name = fmt.Sprintf("late-%d", i)
			pod.Status.Phase = "Running"
			key, _ := podKey(pod)
			if err := s.Create(ctx, key, pod, &example.Pod{}, 0); err != nil {
				t.Fatal(err)
			}
			if err := s.Delete(ctx, key, &example.Pod{}, nil, storage.ValidateAllObjectFunc, nil, storage.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			if got, want := events(t, ours, 2), events(t, theirs, 2); !slices.Equal(got, want) {
				t.Errorf("events after the initial ones\n got %v\nwant %v", got, want)
			}
		})
	}
}

// TestStreamingListsOfALaggingCache: when the watch cache does not reach
// etcd's current revision in time, a streaming list served by LISTs ends
// with the cache's error, as the watch cache's own streaming list does
// (client-go's reflectors retry it after a backoff), and never reads etcd.
// A consistent LIST would read etcd instead, the whole resource whatever
// the selector: what a restart's thousands of kubelets must not cause.
func TestStreamingListsOfALaggingCache(t *testing.T) {
	RegisterMetrics()
	etcd := &etcdAhead{}
	s := newPodStorageOn(t, etcd.cached(), func(d generic.StorageDecorator) generic.StorageDecorator {
		return StreamingLists(testIndexes.Decorate(d))
	})
	cache := s.(*listedStorage).Interface
	ctx := context.Background()
	for i := range 4 {
		pod := &example.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns-0", Name: fmt.Sprintf("pod-%d", i), Labels: map[string]string{"app": "a0"}}}
		key, _ := podKey(pod)
		if err := s.Create(ctx, key, pod, &example.Pod{}, 0); err != nil {
			t.Fatal(err)
		}
	}
	etcd.ahead.Store(true)
	for _, tt := range []struct{ name, key, label string }{
		{name: "index", key: "/pods/", label: "app=a0"},
		{name: "namespace", key: "/pods/ns-0"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			opts := storage.ListOptions{
				SendInitialEvents: ptr.To(true), Recursive: true,
				Predicate: storage.SelectionPredicate{
					Label: labels.Everything(), Field: fields.Everything(),
					GetAttrs: examplePodAttrs, AllowWatchBookmarks: true,
				},
			}
			if tt.label != "" {
				var err error
				if opts.Predicate.Label, err = labels.Parse(tt.label); err != nil {
					t.Fatal(err)
				}
			}
			ended := func(w watch.Interface, err error) *metav1.Status {
				t.Helper()
				if err != nil {
					t.Fatal(err)
				}
				defer w.Stop()
				e, ok := <-w.ResultChan()
				if !ok || e.Type != watch.Error {
					t.Fatalf("got %v %v, want an error event", e.Type, e.Object)
				}
				if _, open := <-w.ResultChan(); open {
					t.Fatal("the watch goes on after its error")
				}
				return e.Object.(*metav1.Status)
			}
			ours := ended(s.Watch(ctx, tt.key, opts))
			theirs := ended(cache.Watch(ctx, tt.key, opts))
			if ours.Code != theirs.Code || ours.Reason != theirs.Reason {
				t.Errorf("ours ended with %d %s (%s), the watch cache's with %d %s (%s)",
					ours.Code, ours.Reason, ours.Message, theirs.Code, theirs.Reason, theirs.Message)
			}
		})
	}
	t.Cleanup(func() {
		if n := etcd.lists.Load(); n != 0 {
			t.Errorf("%d LISTs read etcd", n)
		}
	})
}

// etcdAhead is etcd storage whose current revision, once ahead is set,
// is ahead of any the watch cache can reach, and which then counts the
// LISTs that read it.
type etcdAhead struct {
	storage.Interface
	ahead atomic.Bool
	lists atomic.Int64
}

func (e *etcdAhead) GetCurrentResourceVersion(ctx context.Context) (uint64, error) {
	rv, err := e.Interface.GetCurrentResourceVersion(ctx)
	if e.ahead.Load() {
		rv += 1000
	}
	return rv, err
}

func (e *etcdAhead) GetList(ctx context.Context, key string, opts storage.ListOptions, listObj runtime.Object) error {
	if e.ahead.Load() {
		e.lists.Add(1)
	}
	return e.Interface.GetList(ctx, key, opts, listObj)
}

// cached is upstream's StorageWithCacher with e over etcd's storage.
func (e *etcdAhead) cached() generic.StorageDecorator {
	return func(config *storagebackend.ConfigForResource, prefix string, keyFunc func(obj runtime.Object) (string, error),
		newFunc, newListFunc func() runtime.Object, getAttrs storage.AttrFunc, triggers storage.IndexerFuncs, indexers *cache.Indexers,
	) (storage.Interface, factory.DestroyFunc, error) {
		raw, destroyRaw, err := generic.NewRawStorage(config, newFunc, newListFunc, prefix)
		if err != nil {
			return nil, nil, err
		}
		e.Interface = raw
		c, err := cacherstorage.NewCacherFromConfig(cacherstorage.Config{
			Storage: e, Versioner: storage.APIObjectVersioner{}, GroupResource: config.GroupResource,
			EventsHistoryWindow: config.EventsHistoryWindow, ResourcePrefix: prefix, KeyFunc: keyFunc,
			NewFunc: newFunc, NewListFunc: newListFunc, GetAttrsFunc: getAttrs, IndexerFuncs: triggers,
			Indexers: indexers, Codec: config.Codec,
		})
		if err != nil {
			destroyRaw()
			return nil, nil, err
		}
		delegator := cacherstorage.NewCacheDelegator(c, e)
		return delegator, func() { delegator.Stop(); c.Stop(); destroyRaw() }, nil
	}
}

func lateIn(namespace, app string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: namespace, Labels: map[string]string{"app": app}}
}

// initialEvents reads a streaming list's events up to the bookmark that
// ends the initial ones, as "TYPE name@resourceVersion".
func initialEvents(t *testing.T, w watch.Interface) []string {
	t.Helper()
	var events []string
	for {
		e := next(t, w)
		m, err := meta.Accessor(e.Object)
		if err != nil {
			t.Fatal(err)
		}
		if e.Type == watch.Bookmark {
			if m.GetAnnotations()[metav1.InitialEventsAnnotationKey] != "true" {
				continue
			}
			return append(events, fmt.Sprintf("END@%s", m.GetResourceVersion()))
		}
		events = append(events, fmt.Sprintf("%s %s/%s@%s", e.Type, m.GetNamespace(), m.GetName(), m.GetResourceVersion()))
	}
}

// events reads n events other than bookmarks.
func events(t *testing.T, w watch.Interface, n int) []string {
	t.Helper()
	var events []string
	for len(events) < n {
		e := next(t, w)
		if e.Type == watch.Bookmark {
			continue
		}
		m, err := meta.Accessor(e.Object)
		if err != nil {
			t.Fatal(err)
		}
		events = append(events, fmt.Sprintf("%s %s/%s@%s", e.Type, m.GetNamespace(), m.GetName(), m.GetResourceVersion()))
	}
	return events
}

func next(t *testing.T, w watch.Interface) watch.Event {
	t.Helper()
	select {
	case e, ok := <-w.ResultChan():
		if !ok {
			t.Fatal("the watch ended")
		}
		if e.Type == watch.Error {
			t.Fatalf("error event: %v", e.Object)
		}
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s")
		return watch.Event{}
	}
}

package cacher

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/apiserver/pkg/registry/generic"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/apiserver/pkg/storage/storagebackend"
	"k8s.io/apiserver/pkg/storage/storagebackend/factory"
	"k8s.io/client-go/tools/cache"
)

// StreamingLists wraps a storage decorator so that every watch-cached
// resource serves a streaming list (a watch with initial events, which
// client-go's reflectors send instead of a LIST since Kubernetes 1.35) of
// one namespace, or whose selector an index serves, by LISTs of what it
// selects and a watch from their resourceVersion. Upstream's watch cache
// builds a streaming list's initial events from every object of the
// resource and filters them after, index or namespace: a kubelet's
// streaming list of its node's pods reads all of the cluster's pods, and
// an operator's of a namespace of 100 ConfigMaps all of the cluster's
// ConfigMaps; 10,000 of them at once (every kubelet after the apiserver
// answered their watches 410) hold as many copies of the whole resource's
// events until each is filtered. Every other watch is the watch cache's.
//
// It wraps the indexes (Indexes.Decorate): a streaming list an index
// serves is listed through it.
func StreamingLists(decorate generic.StorageDecorator) generic.StorageDecorator {
	return func(config *storagebackend.ConfigForResource, resourcePrefix string, keyFunc func(obj runtime.Object) (string, error),
		newFunc, newListFunc func() runtime.Object, getAttrs storage.AttrFunc, triggers storage.IndexerFuncs, indexers *cache.Indexers,
	) (storage.Interface, factory.DestroyFunc, error) {
		s, destroy, err := decorate(config, resourcePrefix, keyFunc, newFunc, newListFunc, getAttrs, triggers, indexers)
		if err != nil || !WatchCached(s) {
			return s, destroy, err // --watch-cache=false: etcd serves the watch from a revision of its own
		}
		for _, selection := range []string{"index", "namespace"} {
			listedStreamingLists.WithLabelValues(config.GroupResource.Group, config.GroupResource.Resource, selection)
		}
		listed := &listedStorage{Interface: s, resource: config.GroupResource, prefix: resourcePrefix, newFunc: newFunc, newList: newListFunc,
			withIndexes: func(p storage.SelectionPredicate) storage.SelectionPredicate { return p }}
		if indexed, ok := s.(*indexedStorage); ok {
			listed.withIndexes = indexed.withIndexes
		}
		return listed, destroy, nil
	}
}

// listedStorage serves the streaming lists of one namespace, or whose
// selector an index serves, by LISTs (StreamingLists).
type listedStorage struct {
	storage.Interface
	resource schema.GroupResource
	prefix   string // of the resource's keys
	newFunc  func() runtime.Object
	newList  func() runtime.Object
	// withIndexes returns a selection with the indexes that may serve it:
	// the registry's own and ours.
	withIndexes func(storage.SelectionPredicate) storage.SelectionPredicate
}

// Unwrap returns the storage it lists and watches.
func (s *listedStorage) Unwrap() storage.Interface { return s.Interface }

func (s *listedStorage) Watch(ctx context.Context, key string, opts storage.ListOptions) (watch.Interface, error) {
	if opts.SendInitialEvents == nil || !*opts.SendInitialEvents ||
		(opts.Predicate.ShardSelector != nil && !opts.Predicate.ShardSelector.Empty()) {
		return s.Interface.Watch(ctx, key, opts)
	}
	selection := "index"
	if indexed := s.withIndexes(opts.Predicate); len(indexed.MatcherIndex(ctx)) == 0 {
		if !opts.Recursive || strings.TrimSuffix(key, "/") == strings.TrimSuffix(s.prefix, "/") {
			return s.Interface.Watch(ctx, key, opts)
		}
		selection = "namespace"
	}
	// A cache that is not ready would send the LIST to etcd; its watch
	// answers as upstream's does (429 while it fills).
	if s.ReadinessCheck() != nil {
		return s.Interface.Watch(ctx, key, opts)
	}
	listOpts := storage.ListOptions{ResourceVersion: opts.ResourceVersion, ResourceVersionMatch: metav1.ResourceVersionMatchNotOlderThan,
		Predicate: opts.Predicate, Recursive: opts.Recursive}
	if selection == "namespace" {
		// A namespace is listed in pages. What an index selects (a node's
		// pods) is listed at once: with a limit, 10,000 kubelets' streaming
		// lists took an apiserver at 200,000 pods past 12 GiB, without one
		// 5.4 GiB (the bench's restart scenario; why, not established).
		listOpts.Predicate.Limit = initialEventsPage
	}
	if opts.ResourceVersion == "" {
		// The latest, read as the watch cache reads it for its own
		// streaming lists: etcd's current revision, then the cache once it
		// has reached it, or the watch ends with the cache's error, which
		// client-go's reflectors retry after a backoff. Not a consistent
		// LIST: when the cache is not there within 3 s, that reads etcd
		// instead, the whole resource whatever the selector (the bench's
		// restart scenario at 200,000 pods: 45 kubelets' streaming lists
		// became reads of every pod from etcd, each past a minute, and the
		// apiserver past 11 GiB).
		rv, err := s.GetCurrentResourceVersion(ctx)
		if err != nil {
			return nil, err
		}
		listOpts.ResourceVersion = strconv.FormatUint(rv, 10)
	}
	first, listRV, continueToken, err := s.listPage(ctx, key, listOpts)
	if storage.IsTooLargeResourceVersion(err) {
		return endedWatch(errorStatus(err)), nil
	}
	if err != nil {
		return nil, err
	}
	var end runtime.Object
	if opts.Predicate.AllowWatchBookmarks {
		// The bookmark that ends the initial events, as the watch cache's.
		if end, err = initialEventsEnd(s.newFunc(), s.Versioner(), listRV); err != nil {
			return nil, err
		}
	}
	after := opts
	after.SendInitialEvents, after.ResourceVersion, after.ResourceVersionMatch = nil, listRV, ""
	w, err := s.Interface.Watch(ctx, key, after)
	if err != nil {
		return nil, err
	}
	listedStreamingLists.WithLabelValues(s.resource.Group, s.resource.Resource, selection).Inc()
	// The next pages are listed as the client takes the initial events:
	// a streaming list holds one page of them at a time, whatever the
	// namespace's size. Each is read at the first page's resourceVersion.
	nextPage := func() (page []runtime.Object, more bool, err error) {
		if continueToken == "" {
			return nil, false, nil
		}
		pageOpts := storage.ListOptions{Predicate: opts.Predicate, Recursive: opts.Recursive}
		pageOpts.Predicate.Limit, pageOpts.Predicate.Continue = initialEventsPage, continueToken
		page, _, continueToken, err = s.listPage(ctx, key, pageOpts)
		return page, true, err
	}
	sl := &streamingList{inner: w, result: make(chan watch.Event), done: make(chan struct{})}
	go sl.run(first, nextPage, end)
	return sl, nil
}

// initialEventsPage is how many objects a streaming list served by LISTs
// reads at a time (a variable for the tests).
var initialEventsPage int64 = 500

// listPage lists one page: its objects, resourceVersion and the continue
// token of the next page ("" if none).
func (s *listedStorage) listPage(ctx context.Context, key string, opts storage.ListOptions) ([]runtime.Object, string, string, error) {
	list := s.newList()
	if err := s.GetList(ctx, key, opts, list); err != nil {
		return nil, "", "", err
	}
	listMeta, err := meta.ListAccessor(list)
	if err != nil {
		return nil, "", "", err
	}
	items, err := meta.ExtractList(list)
	if err != nil {
		return nil, "", "", err
	}
	return items, listMeta.GetResourceVersion(), listMeta.GetContinue(), nil
}

// endedWatch is a watch that sends one error and ends, as the watch cache
// answers a streaming list it cannot serve.
func endedWatch(status *metav1.Status) watch.Interface {
	events := make(chan watch.Event, 1)
	events <- watch.Event{Type: watch.Error, Object: status}
	close(events)
	return watch.NewProxyWatcher(events)
}

// errorStatus is the Status a watch ends with for err.
func errorStatus(err error) *metav1.Status {
	var apiStatus apierrors.APIStatus
	if errors.As(err, &apiStatus) {
		status := apiStatus.Status()
		return &status
	}
	return &apierrors.NewInternalError(err).ErrStatus
}

// initialEventsEnd is the bookmark that ends a streaming list's initial
// events at resourceVersion rv.
func initialEventsEnd(obj runtime.Object, versioner storage.Versioner, rv string) (runtime.Object, error) {
	v, err := versioner.ParseResourceVersion(rv)
	if err != nil {
		return nil, err
	}
	if err := versioner.UpdateObject(obj, v); err != nil {
		return nil, err
	}
	m, err := meta.Accessor(obj)
	if err != nil {
		return nil, err
	}
	m.SetAnnotations(map[string]string{metav1.InitialEventsAnnotationKey: "true"})
	return obj, nil
}

// streamingList sends the initial objects as ADDED events, then the
// bookmark that ends them, then the events of the watch from their
// resourceVersion; it ends when that watch ends or it is stopped.
type streamingList struct {
	inner    watch.Interface
	result   chan watch.Event
	done     chan struct{}
	stopOnce sync.Once
}

func (w *streamingList) ResultChan() <-chan watch.Event { return w.result }

func (w *streamingList) Stop() {
	w.stopOnce.Do(func() {
		close(w.done)
		w.inner.Stop()
	})
}

func (w *streamingList) run(initial []runtime.Object, nextPage func() ([]runtime.Object, bool, error), end runtime.Object) {
	defer close(w.result)
	defer w.Stop()
	send := func(e watch.Event) bool {
		select {
		case w.result <- e:
			return true
		case <-w.done:
			return false
		}
	}
	for page, more := initial, true; more; {
		for _, obj := range page {
			if !send(watch.Event{Type: watch.Added, Object: obj}) {
				return
			}
		}
		var err error
		if page, more, err = nextPage(); err != nil {
			// A page the cache no longer has a snapshot for and etcd
			// compacted (410): the watch ends with the error, as the
			// watch cache's end, and the client lists again.
			send(watch.Event{Type: watch.Error, Object: errorStatus(err)})
			return
		}
	}
	if end != nil && !send(watch.Event{Type: watch.Bookmark, Object: end}) {
		return
	}
	for e := range w.inner.ResultChan() {
		if !send(e) {
			return
		}
	}
}

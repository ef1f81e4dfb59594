// Package podwatch runs client-go reflectors on pods as kubelets and
// controllers run them — bookmarks allowed, a field or label selector — and
// counts what a restart of the apiserver costs them: their LISTs (and
// streaming lists), the 410 Gone errors they receive, and when each watch
// last started. The tests and the bench share it.
package podwatch

import (
	"context"
	"net/http"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// Watcher is one reflector on the pods of a selector.
type Watcher struct {
	// Name names the reflector in client-go's logs.
	Name string
	// FieldSelector and LabelSelector select the pods of Namespace (all
	// namespaces when empty).
	FieldSelector, LabelSelector, Namespace string
	// WatchTimeout, if set, is the timeoutSeconds of each watch.
	WatchTimeout time.Duration
	// PerEvent, if set, is how long the handler takes for each watch event:
	// a client that reads its watch slowly.
	PerEvent time.Duration

	store        cache.Store
	reflector    *cache.Reflector
	lists        atomic.Int64
	gone         atomic.Int64
	watches      atomic.Int64
	watchStarted atomic.Int64 // unix nanos
}

// ForNode returns a kubelet's watcher: the pods bound to node.
func ForNode(node string) *Watcher {
	return &Watcher{Name: node, FieldSelector: "spec.nodeName=" + node}
}

// Start runs the reflector on client until ctx is done; done is closed
// when it has returned.
func (w *Watcher) Start(ctx context.Context, client kubernetes.Interface) (done <-chan struct{}) {
	w.store = cache.NewStore(cache.MetaNamespaceKeyFunc)
	var store cache.Store = w.store
	if w.PerEvent > 0 {
		store = slowHandler{w.store, w.PerEvent}
	}
	w.reflector = cache.NewReflectorWithOptions(w.listWatch(client), &corev1.Pod{}, store, cache.ReflectorOptions{Name: w.Name})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		w.reflector.RunWithContext(ctx)
	}()
	return stopped
}

func (w *Watcher) listWatch(client kubernetes.Interface) *cache.ListWatch {
	selected := func(o metav1.ListOptions) metav1.ListOptions {
		o.FieldSelector, o.LabelSelector = w.FieldSelector, w.LabelSelector
		return o
	}
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			w.lists.Add(1)
			return client.CoreV1().Pods(w.Namespace).List(ctx, selected(o))
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			// A streaming list (sendInitialEvents) is a relist too.
			if o.SendInitialEvents != nil && *o.SendInitialEvents {
				w.lists.Add(1)
			}
			o = selected(o)
			o.AllowWatchBookmarks = true
			if w.WatchTimeout > 0 {
				seconds := int64(w.WatchTimeout.Seconds())
				o.TimeoutSeconds = &seconds
			}
			wi, err := client.CoreV1().Pods(w.Namespace).Watch(ctx, o)
			if err != nil {
				return nil, err
			}
			w.watches.Add(1)
			w.watchStarted.Store(time.Now().UnixNano())
			// 410 Gone comes as an error event in a watch that started.
			return watch.Filter(wi, func(e watch.Event) (watch.Event, bool) {
				if status, ok := e.Object.(*metav1.Status); e.Type == watch.Error && ok && status.Code == http.StatusGone {
					w.gone.Add(1)
				}
				return e, true
			}), nil
		},
	}
}

// slowHandler is a store whose handling of each watch event takes a while,
// as an informer's with a slow event handler: the reflector reads its watch
// no faster than that.
type slowHandler struct {
	cache.Store
	perEvent time.Duration
}

func (s slowHandler) Add(obj any) error {
	time.Sleep(s.perEvent)
	return s.Store.Add(obj)
}

func (s slowHandler) Update(obj any) error {
	time.Sleep(s.perEvent)
	return s.Store.Update(obj)
}

func (s slowHandler) Delete(obj any) error {
	time.Sleep(s.perEvent)
	return s.Store.Delete(obj)
}

// Watches counts the watches the reflector started.
func (w *Watcher) Watches() int64 { return w.watches.Load() }

// Store holds the pods the reflector has.
func (w *Watcher) Store() cache.Store { return w.store }

// Lists counts the reflector's LISTs and streaming lists.
func (w *Watcher) Lists() int64 { return w.lists.Load() }

// Gone counts the 410 Gone errors its watches received.
func (w *Watcher) Gone() int64 { return w.gone.Load() }

// Synced tells whether the reflector has listed and watches.
func (w *Watcher) Synced() bool {
	return w.reflector != nil && w.reflector.LastSyncResourceVersion() != "" && w.watchStarted.Load() > 0
}

// WatchingSince counts the watchers whose watch started after since.
func WatchingSince(watchers []*Watcher, since time.Time) int {
	n := 0
	for _, w := range watchers {
		if w.watchStarted.Load() > since.UnixNano() {
			n++
		}
	}
	return n
}

// Totals adds up the watchers' LISTs and 410 Gone errors.
func Totals(watchers []*Watcher) (lists, gone int64) {
	for _, w := range watchers {
		lists += w.Lists()
		gone += w.Gone()
	}
	return lists, gone
}

// WatchStarted is when its last watch started; zero before the first.
func (w *Watcher) WatchStarted() time.Time {
	if n := w.watchStarted.Load(); n > 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

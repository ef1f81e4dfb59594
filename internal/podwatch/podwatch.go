// Package podwatch runs client-go reflectors on pods as kubelets and
// controllers run them — bookmarks allowed, a field or label selector — and
// counts what a restart of the apiserver costs them: their LISTs (and
// streaming lists), the 410 Gone errors they receive, and when each watch
// last started. The tests and the bench share it.
package podwatch

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilnet "k8s.io/apimachinery/pkg/util/net"
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

	mu sync.Mutex
	// lastEnd is how the last watch ended, if it makes the reflector list
	// again: client-go re-watches after a watch that closed normally, a
	// refused connection or 429, and lists again after anything else.
	lastEnd string
	// relists counts the lists after the first by the lastEnd before them.
	relists map[string]int64
}

// How a watch ended that makes the reflector list again.
const (
	endGone      = "410 Gone"
	endVeryShort = "watch closed within a second, no event"
)

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
			w.listed()
			return client.CoreV1().Pods(w.Namespace).List(ctx, selected(o))
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			// A streaming list (sendInitialEvents) is a relist too.
			if o.SendInitialEvents != nil && *o.SendInitialEvents {
				w.listed()
			}
			o = selected(o)
			o.AllowWatchBookmarks = true
			if w.WatchTimeout > 0 {
				seconds := int64(w.WatchTimeout.Seconds())
				o.TimeoutSeconds = &seconds
			}
			start := time.Now()
			wi, err := client.CoreV1().Pods(w.Namespace).Watch(ctx, o)
			if err != nil {
				if !utilnet.IsConnectionRefused(err) && !apierrors.IsTooManyRequests(err) {
					w.ended("watch refused: " + errorKind(err))
				}
				return nil, err
			}
			w.watches.Add(1)
			w.watchStarted.Store(time.Now().UnixNano())
			w.ended("")
			return w.observe(wi, start), nil
		},
	}
}

// observe passes a watch's events on, counting 410 Gone (an error event in
// a watch that started) and noting how the watch ended.
func (w *Watcher) observe(wi watch.Interface, start time.Time) watch.Interface {
	out := make(chan watch.Event)
	proxy := watch.NewProxyWatcher(out)
	go func() {
		defer close(out)
		defer wi.Stop()
		events := 0
		for {
			var e watch.Event
			var ok bool
			select {
			case e, ok = <-wi.ResultChan():
			case <-proxy.StopChan():
				return
			}
			if !ok {
				if events == 0 && time.Since(start) < time.Second {
					w.ended(endVeryShort)
				}
				return
			}
			events++
			if status, isStatus := e.Object.(*metav1.Status); e.Type == watch.Error && isStatus {
				switch status.Code {
				case http.StatusGone:
					w.gone.Add(1)
					w.ended(endGone)
				case http.StatusTooManyRequests:
				default:
					w.ended(fmt.Sprintf("watch ended with error %d %s", status.Code, status.Reason))
				}
			}
			select {
			case out <- e:
			case <-proxy.StopChan():
				return
			}
		}
	}()
	return proxy
}

// errorKind names an error by its class, not its text: a status code, or
// what broke the connection.
func errorKind(err error) string {
	var status apierrors.APIStatus
	switch {
	case errors.As(err, &status):
		return fmt.Sprintf("%d %s", status.Status().Code, status.Status().Reason)
	case utilnet.IsConnectionReset(err):
		return "connection reset"
	case utilnet.IsProbableEOF(err):
		return "connection closed"
	case utilnet.IsHTTP2ConnectionLost(err):
		return "HTTP/2 connection lost"
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
		return "context done"
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return "network timeout"
	}
	// The error itself, without the request's URL and with its numbers
	// (stream IDs, ports; not those of a name such as http2) as N, so that one
	// kind is one row.
	var urlErr *url.Error
	if errors.As(err, &urlErr) {
		err = urlErr.Err
	}
	msg := digits.ReplaceAllString(err.Error(), "N")
	if len(msg) > maxKindLength {
		msg = msg[:maxKindLength] + "…"
	}
	return "other: " + msg
}

var digits = regexp.MustCompile(`\b[0-9]+\b`)

// maxKindLength bounds the text of an error of no known kind.
const maxKindLength = 120

// ended notes how the last watch ended when the reflector lists again
// after it; "" when a watch started (the lists that follow a failed list
// keep the cause of the first).
func (w *Watcher) ended(how string) {
	w.mu.Lock()
	w.lastEnd = how
	w.mu.Unlock()
}

// listed counts a list and, after the first, what caused it.
func (w *Watcher) listed() {
	if w.lists.Add(1) == 1 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	cause := w.lastEnd
	if cause == "" {
		cause = "unknown"
	}
	if w.relists == nil {
		w.relists = map[string]int64{}
	}
	w.relists[cause]++
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

// RelistCauses adds up the watchers' lists after their first by how the
// watch before each ended ("unknown": as far as the watcher saw, the watch
// ended normally).
func RelistCauses(watchers []*Watcher) map[string]int64 {
	causes := map[string]int64{}
	for _, w := range watchers {
		w.mu.Lock()
		for cause, n := range w.relists {
			causes[cause] += n
		}
		w.mu.Unlock()
	}
	return causes
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

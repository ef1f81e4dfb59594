package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// restartStopGrace bounds the graceful stop of the restart scenario.
const restartStopGrace = 10 * time.Minute

// kubeletWatcher is a client-go reflector on the pods of one node, as a
// kubelet runs, counting its LISTs and when its watch last started.
type kubeletWatcher struct {
	lists        atomic.Int64
	watchStarted atomic.Int64 // unix nanos of the last successful watch start
}

func (w *kubeletWatcher) listWatch(client kubernetes.Interface, node string) *cache.ListWatch {
	selector := fields.OneTermEqualSelector("spec.nodeName", node).String()
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			w.lists.Add(1)
			o.FieldSelector = selector
			return client.CoreV1().Pods("").List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			// A streaming list (sendInitialEvents) is a relist too.
			if o.SendInitialEvents != nil && *o.SendInitialEvents {
				w.lists.Add(1)
			}
			o.FieldSelector = selector
			o.AllowWatchBookmarks = true
			wi, err := client.CoreV1().Pods("").Watch(ctx, o)
			if err == nil {
				w.watchStarted.Store(time.Now().UnixNano())
			}
			return wi, err
		},
	}
}

// restartScenario runs kubelet-style reflectors, restarts the apiserver
// gracefully, and measures what their recovery costs: relists, the time
// until every watch is back, and the apiserver's and etcd's work meanwhile.
func restartScenario(ctx context.Context, s *server, p Params) (*measurement, error) {
	n := min(p.RestartWatchers, p.Nodes)
	watchers := make([]*kubeletWatcher, n)
	const watchersPerConnection = 100
	var client kubernetes.Interface
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(ctx)
	// Stop the reflectors, then wait for them, on every return.
	defer wg.Wait()
	defer cancel()
	for i := range n {
		if i%watchersPerConnection == 0 {
			var err error
			if client, err = kubernetes.NewForConfig(ownConnection(s.cfg, "kubelet/v1.37.2 (linux/amd64) bench")); err != nil {
				return nil, err
			}
		}
		w := &kubeletWatcher{}
		watchers[i] = w
		r := cache.NewReflector(w.listWatch(client, nodeName(i)), &corev1.Pod{}, cache.NewStore(cache.MetaNamespaceKeyFunc), 0)
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.RunWithContext(ctx)
		}()
	}
	allWatching := func(since time.Time) bool { return countWatching(watchers, since) == n }
	if err := poll(ctx, 2*time.Minute, func() bool { return allWatching(time.Time{}) }); err != nil {
		return nil, fmt.Errorf("initial sync of %d watchers: %w", n, err)
	}
	// Let bookmarks and the watch cache settle as in a running cluster.
	time.Sleep(5 * time.Second)

	listsBefore := int64(0)
	for _, w := range watchers {
		listsBefore += w.lists.Load()
	}
	rangesBefore, err := etcdRangeCount(ctx, s.etcdURL)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	// Graceful stop is what is measured: with 10,000 open watches upstream
	// takes over two minutes, longer than the tests' StopGrace.
	if err := s.proc.StopWithin(restartStopGrace); err != nil {
		return nil, fmt.Errorf("graceful stop: %w", err)
	}
	stopped := time.Now()
	if err := s.proc.Start(); err != nil {
		return nil, err
	}
	ready := time.Now()
	// A watch started after the old process exited is a re-established
	// one; the new process serves watches a moment before /readyz says ok.
	if err := poll(ctx, 3*time.Minute, func() bool { return allWatching(stopped) }); err != nil {
		return nil, fmt.Errorf("watchers re-establishing: %d of %d watching: %w", countWatching(watchers, stopped), n, err)
	}
	var last int64
	for _, w := range watchers {
		last = max(last, w.watchStarted.Load())
	}
	// The new process's whole life so far is the recovery.
	u, err := processUsage(s.proc.Pid())
	if err != nil {
		return nil, err
	}
	rangesAfter, err := etcdRangeCount(ctx, s.etcdURL)
	if err != nil {
		return nil, err
	}
	relists := int64(0)
	for _, w := range watchers {
		relists += w.lists.Load()
	}
	relists -= listsBefore
	return &measurement{
		values: []namedValue{
			{"watchers", "count", float64(n)},
			{"relists after restart", "count", float64(relists)},
			{"graceful stop", "s", stopped.Sub(start).Seconds()},
			{"start to ready", "s", ready.Sub(stopped).Seconds()},
			{"start to all watches re-established", "s", time.Unix(0, last).Sub(stopped).Seconds()},
			{"etcd range requests during recovery", "count", rangesAfter - rangesBefore},
		},
		usage: &u,
	}, nil
}

func countWatching(watchers []*kubeletWatcher, since time.Time) int {
	n := 0
	for _, w := range watchers {
		if w.watchStarted.Load() >= since.UnixNano() {
			n++
		}
	}
	return n
}

func poll(ctx context.Context, timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not done within %s", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

// etcdRangeCount reads etcd's count of range (read) requests.
func etcdRangeCount(ctx context.Context, etcdURL string) (float64, error) {
	resp, err := get(ctx, http.DefaultClient, etcdURL+"/metrics", "text/plain", "")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, "etcd_mvcc_range_total "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("etcd /metrics has no etcd_mvcc_range_total")
}

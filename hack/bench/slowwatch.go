package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/bulwark-k8s/bulwark/internal/podwatch"
	"github.com/bulwark-k8s/bulwark/internal/seed"
)

const (
	// burstPods are the pods the burst updates, in benchNamespace.
	burstPods = 100
	// burstRate paces the burst: five times the slow watchers' pace, so
	// that each falls behind by more than the watch cache buffers for a
	// watcher (at most 1,000 events) within a few seconds.
	burstRate = 500
	// slowPerEvent is the slow watchers' handling time per event: they take
	// a hundred events a second, a fifth of the burst's pace, and fall far
	// behind it.
	slowPerEvent = 10 * time.Millisecond
	// burstLabel marks the burst pods; the slow watchers select it.
	burstLabel = "bench-burst"
)

// slowWatchersScenario runs kubelet-style reflectors, one per node, and in
// place of a tenth of them reflectors whose handler takes slowPerEvent per
// event, watching the burst pods as a controller's informer does. A burst
// of updates to those pods comes faster than the slow ones read. Upstream's
// watch cache closes their watches; each client-visible termination, relist
// and 410 is counted, and events lost (a pod the watcher does not have at
// its last version once the others are done).
func slowWatchersScenario(ctx context.Context, s *server, p Params) (*measurement, error) {
	n := min(p.SlowWatchers, p.Nodes)
	slow := n / 10
	// A server that could not complete the scenario before (an
	// *incomplete) may have left them.
	if err := deleteBurstPods(ctx, s); err != nil {
		return nil, err
	}
	for i := range burstPods {
		pod := fmt.Sprintf(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"burst-%d","labels":{%q:"true"}},"spec":{"containers":[{"name":"main","image":"registry.example/burst:v1"}]}}`, i, burstLabel)
		if _, _, err := timed(ctx, s.http, http.MethodPost, s.url+"/api/v1/namespaces/"+benchNamespace+"/pods", goodUserAgent, "application/json", []byte(pod)); err != nil {
			return nil, fmt.Errorf("create burst pods: %w", err)
		}
	}
	defer func() {
		if err := deleteBurstPods(context.Background(), s); err != nil {
			logf("%s: deleting the burst pods: %v", s.name, err)
		}
	}()

	watchers := make([]*podwatch.Watcher, n)
	for i := range watchers {
		if i < slow {
			watchers[i] = &podwatch.Watcher{Name: fmt.Sprintf("slow-%d", i), Namespace: benchNamespace, LabelSelector: burstLabel, PerEvent: slowPerEvent}
		} else {
			watchers[i] = podwatch.ForNode(seed.NodeName(i))
		}
	}
	stop, err := startWatchers(ctx, s, watchers, "bench-informer/1.0")
	if err != nil {
		return nil, err
	}
	defer stop()
	totals := func() (lists, gone, watches int64) {
		lists, gone = podwatch.Totals(watchers)
		for _, w := range watchers {
			watches += w.Watches()
		}
		return lists, gone, watches
	}
	listsBefore, goneBefore, watchesBefore := totals()
	causesBefore := podwatch.RelistCauses(watchers)
	closedByCache := func() (float64, error) {
		return scrapeCounter(ctx, s.cfg, "apiserver_terminated_watchers_total", map[string]string{"resource": "pods"})
	}
	closedBefore, err := closedByCache()
	if err != nil {
		return nil, err
	}

	start := time.Now()
	final, retried, err := burst(ctx, s, p.SlowBurst)
	if err != nil {
		return nil, err
	}
	burstTook := time.Since(start)
	behind := func() (pods int) {
		for _, w := range watchers[:slow] {
			for name, rv := range final {
				obj, ok, _ := w.Store().GetByKey(benchNamespace + "/" + name)
				if !ok || obj.(*corev1.Pod).ResourceVersion != rv {
					pods++
				}
			}
		}
		return pods
	}
	caughtUp := poll(ctx, 5*time.Minute, func() bool { return behind() == 0 })
	caughtUpAfter := time.Since(start)
	lost := behind()
	if caughtUp != nil && ctx.Err() != nil {
		return nil, ctx.Err()
	}
	// Count relists past client-go's backoff after a 410.
	if err := sleep(ctx, relistBackoff); err != nil {
		return nil, err
	}
	listsAfter, goneAfter, watchesAfter := totals()
	closedAfter, err := closedByCache()
	if err != nil {
		return nil, err
	}
	values := []namedValue{
		{"watchers (a tenth slow)", "count", float64(n)},
		{"burst updates", "count", float64(p.SlowBurst)},
		{"burst duration", "s", burstTook.Seconds()},
		{"burst writes told to retry (429)", "count", float64(retried)},
		{"watches the cache closed as too slow", "count", closedAfter - closedBefore},
		{"client-visible watch terminations", "count", float64(watchesAfter - watchesBefore)},
		{"relists", "count", float64(listsAfter - listsBefore)},
		{"410 Gone received by watchers", "count", float64(goneAfter - goneBefore)},
		{"events lost (pods not at their last version)", "count", float64(lost)},
		{"slow watchers caught up after", "s", caughtUpAfter.Seconds()},
	}
	if caughtUp != nil {
		values[len(values)-1].value = math.NaN()
	}
	values = append(values, relistCauseValues("relists", watchers, causesBefore)...)
	return &measurement{values: values}, nil
}

// deleteBurstPods deletes the burst pods and waits until they are gone.
func deleteBurstPods(ctx context.Context, s *server) error {
	selected := "/api/v1/namespaces/" + benchNamespace + "/pods?" + url.Values{"labelSelector": {burstLabel}}.Encode()
	if _, _, err := timed(ctx, s.http, http.MethodDelete, s.url+selected, goodUserAgent, "", nil); err != nil {
		return err
	}
	var listErr error
	err := poll(ctx, 2*time.Minute, func() bool {
		var body []byte
		if _, body, listErr = timed(ctx, s.http, http.MethodGet, s.url+selected, goodUserAgent, "", nil); listErr != nil {
			return false
		}
		list := &corev1.PodList{}
		if _, _, listErr = scheme.Codecs.UniversalDeserializer().Decode(body, nil, list); listErr != nil {
			return false
		}
		return len(list.Items) == 0
	})
	if err != nil && listErr != nil {
		return fmt.Errorf("%w (last LIST: %v)", err, listErr)
	}
	return err
}

// burst sends n updates to the burst pods, burstRate a second from 32
// writers, and returns each pod's last resourceVersion.
func burst(ctx context.Context, s *server, n int) (final map[string]string, retried int64, err error) {
	padding := strings.Repeat("x", 1024) // events of a realistic size
	var mu sync.Mutex
	var retries atomic.Int64
	last := map[string]uint64{}
	work := make(chan int)
	go func() {
		defer close(work)
		tick := time.NewTicker(time.Second / burstRate)
		defer tick.Stop()
		for i := range n {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			work <- i
		}
	}()
	_, _, err = parallel(ctx, n, 32, func(int) (time.Duration, error) {
		i, ok := <-work
		if !ok {
			return 0, ctx.Err()
		}
		name := fmt.Sprintf("burst-%d", i%burstPods)
		patch := fmt.Sprintf(`{"metadata":{"annotations":{"bench/burst":"%d-%s"}}}`, i, padding)
		d, body, err := timed(ctx, s.http, http.MethodPatch, s.url+"/api/v1/namespaces/"+benchNamespace+"/pods/"+name, goodUserAgent, "application/merge-patch+json", []byte(patch))
		// Told to retry (a server shedding load), the writer retries after
		// a second, as client-go does.
		for tries := 0; isTooManyRequests(err) && tries < 30; tries++ {
			retries.Add(1)
			if err := sleep(ctx, time.Second); err != nil {
				return d, err
			}
			d, body, err = timed(ctx, s.http, http.MethodPatch, s.url+"/api/v1/namespaces/"+benchNamespace+"/pods/"+name, goodUserAgent, "application/merge-patch+json", []byte(patch))
		}
		if err != nil {
			return d, err
		}
		pod := &corev1.Pod{}
		if _, _, err := scheme.Codecs.UniversalDeserializer().Decode(body, nil, pod); err != nil {
			return d, err
		}
		rv, err := strconv.ParseUint(pod.ResourceVersion, 10, 64)
		mu.Lock()
		last[name] = max(last[name], rv)
		mu.Unlock()
		return d, err
	})
	final = map[string]string{}
	for name, rv := range last {
		final[name] = strconv.FormatUint(rv, 10)
	}
	return final, retries.Load(), err
}

func isTooManyRequests(err error) bool {
	var status *statusError
	return errors.As(err, &status) && status.code == http.StatusTooManyRequests
}

// startWatchers starts watchers, each group of 100 on its own connection
// (protobuf, as kubelets and controllers talk), and waits until all have
// synced and watch. stop stops them and waits for them.
func startWatchers(ctx context.Context, s *server, watchers []*podwatch.Watcher, userAgent string) (stop func(), err error) {
	ctx, cancel := context.WithCancel(ctx)
	var running []<-chan struct{}
	stop = func() {
		cancel()
		for _, done := range running {
			<-done
		}
	}
	const watchersPerConnection = 100
	var client kubernetes.Interface
	for i, w := range watchers {
		if i%watchersPerConnection == 0 {
			cfg := ownConnection(s.cfg, userAgent)
			cfg.ContentType = protobufAccept
			if client, err = kubernetes.NewForConfig(cfg); err != nil {
				stop()
				return nil, err
			}
		}
		running = append(running, w.Start(ctx, client))
	}
	// Synced, not only watching: a streaming list's watch starts before the
	// server has sent its initial events.
	logged := time.Now()
	synced := func() bool {
		n := 0
		for _, w := range watchers {
			if w.Synced() {
				n++
			}
		}
		if time.Since(logged) > time.Minute {
			logf("%s: %d of %d watchers synced", s.name, n, len(watchers))
			logged = time.Now()
		}
		return n == len(watchers)
	}
	if err := pollServing(ctx, s, watchersTimeout(len(watchers)), synced); err != nil {
		stop()
		return nil, fmt.Errorf("initial sync of %d watchers: %w", len(watchers), err)
	}
	return stop, nil
}

// watchersTimeout bounds the time n watchers take to sync or to watch
// again after a restart: minutes at 10,000 on this machine, where each of
// their streaming lists is filtered from every pod of the cache.
func watchersTimeout(n int) time.Duration {
	return 5*time.Minute + time.Duration(n)*150*time.Millisecond
}

package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/bulwark-k8s/bulwark/internal/podwatch"
	"github.com/bulwark-k8s/bulwark/internal/seed"
)

// restartStopGrace bounds the graceful stop of the restart scenario.
const restartStopGrace = 10 * time.Minute

// relistBackoff is past client-go's backoff between a watch that failed
// (410 Gone) and the reflector's LIST: 800 ms at first, with jitter.
const relistBackoff = 3 * time.Second

// startKubeletWatchers starts a kubelet-style reflector per node (at most
// p.RestartWatchers) and waits until all have synced and watch. stop stops
// them and waits for them.
func startKubeletWatchers(ctx context.Context, s *server, p Params) (watchers []*podwatch.Watcher, stop func(), err error) {
	watchers = make([]*podwatch.Watcher, min(p.RestartWatchers, p.Nodes))
	for i := range watchers {
		watchers[i] = podwatch.ForNode(seed.NodeName(i))
	}
	stop, err = startWatchers(ctx, s, watchers, "kubelet/v1.37.2 (linux/amd64) bench")
	return watchers, stop, err
}

// churnPeriod paces the pod changes during the restart scenario: each
// changes one pod, so one watcher's node.
const churnPeriod = 50 * time.Millisecond

// churn annotates one pod after another until ctx is done, as pods of a
// running cluster change: each change is an event for one node's watcher
// only. It returns the pods it changed, for unchurn.
func churn(ctx context.Context, s *server, p Params) []int {
	var changed []int
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return changed
		case <-time.After(churnPeriod):
		}
		j := i * 7919 % p.Pods // spread over the nodes
		patch := fmt.Sprintf(`{"metadata":{"annotations":{"bench/churn":"%d"}}}`, i)
		path := s.url + "/api/v1/namespaces/" + seed.NamespaceName(p.PodNamespace(j)) + "/pods/" + p.PodName(j)
		if _, _, err := timed(ctx, s.http, http.MethodPatch, path, goodUserAgent, "application/merge-patch+json", []byte(patch)); err == nil {
			changed = append(changed, j)
		}
	}
}

// unchurn removes the annotations churn added, so that the next server
// sees the same data.
func unchurn(ctx context.Context, s *server, p Params, changed []int) error {
	for _, j := range changed {
		path := s.url + "/api/v1/namespaces/" + seed.NamespaceName(p.PodNamespace(j)) + "/pods/" + p.PodName(j)
		if _, _, err := timed(ctx, s.http, http.MethodPatch, path, goodUserAgent, "application/merge-patch+json", []byte(`{"metadata":{"annotations":{"bench/churn":null}}}`)); err != nil {
			return err
		}
	}
	return nil
}

// restartSettle is how long the watchers run, while pods change, before the
// restart: one bookmark interval of ours (10 s), well within
// upstream's (a minute), as a restart meets watchers at any point of it.
// The apiserver's CPU meanwhile is what idle watchers cost: bookmarks and
// the few events each gets.
const restartSettle = 10 * time.Second

// restartScenario runs kubelet-style reflectors while pods change,
// restarts the apiserver gracefully, and measures what the watchers cost
// while they idle and what their recovery costs: relists, the time until
// every watch is back, and the apiserver's and etcd's work meanwhile.
func restartScenario(ctx context.Context, s *server, p Params) (*measurement, error) {
	began := time.Now()
	watchers, stop, err := startKubeletWatchers(ctx, s, p)
	if err != nil {
		return nil, err
	}
	defer stop()
	initialSync := time.Since(began)
	n := len(watchers)
	allWatching := func(since time.Time) bool { return podwatch.WatchingSince(watchers, since) == n }
	idleBefore, err := processUsage(s.proc.Pid())
	if err != nil {
		return nil, err
	}
	churnCtx, stopChurn := context.WithTimeout(ctx, restartSettle)
	changed := churn(churnCtx, s, p)
	stopChurn()
	idleAfter, err := processUsage(s.proc.Pid())
	if err != nil {
		return nil, err
	}

	listsBefore, goneBefore := podwatch.Totals(watchers)
	causesBefore := podwatch.RelistCauses(watchers)
	rangesBefore, err := etcdRangeCount(ctx, s.etcdURL)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	// While this replica is down, the cluster goes on: other replicas write
	// (Leases, Events), so etcd's revision moves past every watcher's.
	othersCtx, stopOthers := context.WithCancel(ctx)
	othersDone := make(chan error, 1)
	go func() { othersDone <- otherReplicasWrite(othersCtx, s.etcdURL) }()
	// Graceful stop is what is measured: with 10,000 open watches upstream
	// takes over two minutes, longer than the tests' StopGrace.
	if err := s.proc.StopWithin(restartStopGrace); err != nil {
		stopOthers()
		return nil, fmt.Errorf("graceful stop: %w", err)
	}
	stopped := time.Now()
	// Its n watchers reconnect while it starts: bounded as their sync is.
	err = s.proc.StartWithin(watchersTimeout(n))
	stopOthers()
	if othersErr := <-othersDone; err != nil {
		return nil, &incomplete{why: "restarted server not ready", after: time.Since(stopped), detail: err.Error()}
	} else if othersErr != nil {
		return nil, othersErr
	}
	ready := time.Now()
	// A watch started after the old process exited is a re-established
	// one; the new process serves watches a moment before /readyz says ok.
	if err := pollServing(ctx, s, watchersTimeout(n), func() bool { return allWatching(stopped) }); err != nil {
		return nil, fmt.Errorf("watchers re-establishing: %d of %d watching: %w", podwatch.WatchingSince(watchers, stopped), n, err)
	}
	var last time.Time
	for _, w := range watchers {
		if w.WatchStarted().After(last) {
			last = w.WatchStarted()
		}
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
	if err := unchurn(ctx, s, p, changed); err != nil {
		return nil, err
	}
	// A reflector that got 410 Gone lists after client-go's backoff (under
	// a second at first): count past it.
	if err := sleep(ctx, relistBackoff); err != nil {
		return nil, err
	}
	listsAfter, goneAfter := podwatch.Totals(watchers)
	relists, gone := listsAfter-listsBefore, goneAfter-goneBefore
	m := &measurement{
		values: []namedValue{
			{"watchers", "count", float64(n)},
			{"initial sync of every watcher", "s", initialSync.Seconds()},
			{"pods changed before the restart", "count", float64(len(changed))},
			{"apiserver CPU per minute while watching", "s", (idleAfter.CPUSeconds - idleBefore.CPUSeconds) * float64(time.Minute) / float64(restartSettle)},
			{"410 Gone received by watchers", "count", float64(gone)},
			{"relists after restart", "count", float64(relists)},
			{"graceful stop", "s", stopped.Sub(start).Seconds()},
			{"start to ready", "s", ready.Sub(stopped).Seconds()},
			{"start to all watches re-established", "s", last.Sub(stopped).Seconds()},
			{"etcd range requests during recovery", "count", rangesAfter - rangesBefore},
		},
		usage: &u,
	}
	m.values = append(m.values, relistCauseValues("relists after restart", watchers, causesBefore)...)
	return m, nil
}

// relistCauseValues are the rows of the watchers' relists since before, by
// how the watch before each ended.
func relistCauseValues(metric string, watchers []*podwatch.Watcher, before map[string]int64) []namedValue {
	var values []namedValue
	causes := podwatch.RelistCauses(watchers)
	for _, cause := range slices.Sorted(maps.Keys(causes)) {
		if n := causes[cause] - before[cause]; n > 0 {
			values = append(values, namedValue{metric + ": " + cause, "count", float64(n)})
		}
	}
	return values
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
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

// availableMemoryFloor is the share of the machine's memory below which
// a scenario's wait for a server is given up: the server cannot hold what
// the scenario asks of it on this machine (with no swap, the next step is
// the kernel's OOM killer, which may pick etcd or the bench).
const availableMemoryFloor = 0.1

// incomplete is a scenario a server could not complete on this machine:
// a figure of the run, not a failure of the bench.
type incomplete struct {
	// why: "timed out", "machine out of memory", "server exited" or
	// "restarted server not ready".
	why    string
	after  time.Duration
	detail string
}

func (e *incomplete) Error() string {
	return fmt.Sprintf("%s after %s: %s", e.why, e.after.Round(time.Second), e.detail)
}

// pollServing polls as poll does, and gives up (an *incomplete) as soon as
// the server's process has exited or the machine is short of memory.
func pollServing(ctx context.Context, s *server, timeout time.Duration, cond func() bool) error {
	start := time.Now()
	exited := s.proc.Exited()
	var gaveUp *incomplete
	err := poll(ctx, timeout, func() bool {
		select {
		case <-exited:
			gaveUp = &incomplete{why: "server exited", detail: fmt.Sprint(s.proc.ExitError())}
			return true
		default:
		}
		if available, total, err := memoryAvailable(); err == nil && available < availableMemoryFloor*total {
			rss, _ := rssMiB(s.proc.Pid())
			gaveUp = &incomplete{why: "machine out of memory", detail: fmt.Sprintf("%.0f of %.0f MiB available, %s's RSS %.0f MiB", available, total, s.name, rss)}
			return true
		}
		return cond()
	})
	switch {
	case gaveUp != nil:
		gaveUp.after = time.Since(start)
		return gaveUp
	case err != nil && ctx.Err() == nil:
		return &incomplete{why: "timed out", after: time.Since(start), detail: err.Error()}
	}
	return err
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

// otherReplicasWrite writes a key to etcd, as other apiserver replicas
// write while one restarts, until ctx is done.
func otherReplicasWrite(ctx context.Context, etcdURL string) error {
	client, err := clientv3.New(clientv3.Config{Endpoints: []string{etcdURL}, DialTimeout: 10 * time.Second})
	if err != nil {
		return err
	}
	defer client.Close()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(100 * time.Millisecond):
		}
		if _, err := client.Put(ctx, "/registry/bench/other-replicas", strconv.Itoa(i)); err != nil && ctx.Err() == nil {
			return err
		}
	}
}

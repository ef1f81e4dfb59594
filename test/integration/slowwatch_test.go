package integration

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"github.com/bulwark-k8s/bulwark/internal/seed"
	"github.com/bulwark-k8s/bulwark/test/integration/framework"
)

// TestSlowWatchersResume: a watcher that reads one event every few
// milliseconds while a burst of large writes comes falls behind the watch
// cache, which closes its watch. On upstream's binary (same etcd, same
// reader) the client sees its watch end and must watch again; on Bulwark's
// it gets every event once, in order, on the one watch it opened.
func TestSlowWatchersResume(t *testing.T) {
	const namespace = "slow"
	burst := sized(2000, 5000)
	// Events large enough that what the connection buffers (HTTP/2's 4 MiB
	// stream window, the sockets) holds a few hundred of them: the server,
	// not the network, has to keep the rest.
	const size = 20 << 10
	etcd := framework.StartEtcd(t, framework.EtcdOptions{})
	bulwark := framework.StartAPIServer(t, framework.APIServerOptions{Etcd: etcd, Name: "bulwark"})
	upstream := framework.StartAPIServer(t, framework.APIServerOptions{Etcd: etcd, Name: "upstream", Binary: framework.Bins(t).Upstream, PKI: bulwark.PKI})
	createNamespace(t, unthrottledClient(t, bulwark), namespace)

	type reader struct {
		name   string
		server *framework.APIServer
		done   chan slowWatch
	}
	readers := []*reader{{name: "bulwark", server: bulwark}, {name: "upstream", server: upstream}}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, r := range readers {
		client := unthrottledClient(t, r.server)
		list, err := client.CoreV1().ConfigMaps(namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		r.done = make(chan slowWatch, 1)
		go func() { r.done <- watchSlowly(ctx, client, namespace, list.ResourceVersion, burst, 2*time.Millisecond) }()
	}
	time.Sleep(time.Second) // both watches established
	start := time.Now()
	if err := seed.PutOneRevisionEach(ctx, etcd.ClientURL, seed.ConfigMaps(namespace, "burst", burst, size, seed.Now())); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d ConfigMaps of %d KiB written in %v", burst, size>>10, time.Since(start).Round(time.Millisecond))

	want := make([]string, burst)
	for i := range want {
		want[i] = fmt.Sprintf("burst-%d", i)
	}
	slices.Sort(want)
	for _, r := range readers {
		got := <-r.done
		t.Logf("%s: %d events in %v, watch ended %d times, 410 Gone %d, error %v", r.name, len(got.names), time.Since(start).Round(time.Millisecond), got.ends, got.gone, got.err)
		figure(t, "slow watcher under a burst, "+r.name+": client-visible watch terminations", float64(got.ends), "terminations")
		if r.name == "upstream" {
			// The test tells the two apart: upstream ends this watch.
			if got.ends == 0 {
				t.Errorf("upstream: the watch never ended; the burst no longer makes the cache close a slow watcher")
			}
			continue
		}
		names := slices.Clone(got.names)
		slices.Sort(names)
		if got.ends != 0 || got.gone != 0 || got.err != nil || !slices.Equal(names, want) || !got.ordered {
			t.Errorf("bulwark: the watch ended %d times, 410 Gone %d times, error %v; %d events of %d once each: %v; in resourceVersion order: %v",
				got.ends, got.gone, got.err, len(got.names), burst, slices.Equal(names, want), got.ordered)
		}
		m := metrics(t, bulwark)
		resumed := metricSum(t, m, `bulwark_watch_slow_watchers_total{group="",outcome="resumed",resource="configmaps"}`)
		figure(t, "slow watcher under a burst, bulwark: watches the cache closed, resumed", resumed, "resumptions")
		if resumed == 0 {
			t.Error("bulwark_watch_slow_watchers_total{outcome=\"resumed\"} is 0: the watch was not resumed")
		}
	}
	if closed := metricSum(t, metrics(t, upstream), `apiserver_terminated_watchers_total{group="",resource="configmaps"}`); closed == 0 {
		t.Error("upstream's apiserver_terminated_watchers_total is 0")
	}
}

// slowWatch is what a slow watcher saw.
type slowWatch struct {
	names   []string // the objects of the events, in the order received
	ordered bool     // resourceVersions strictly increased
	ends    int      // watches that ended before the watcher was done
	gone    int      // 410 Gone received
	err     error
}

// watchSlowly watches the ConfigMaps of namespace from rv, as a reflector
// does (bookmarks allowed; after its watch ends it watches again from the
// last resourceVersion it received), taking perEvent for every event, until
// it has received n events.
func watchSlowly(ctx context.Context, client kubernetes.Interface, namespace, rv string, n int, perEvent time.Duration) (got slowWatch) {
	got.ordered = true
	var last uint64
	for ctx.Err() == nil {
		w, err := client.CoreV1().ConfigMaps(namespace).Watch(ctx, metav1.ListOptions{ResourceVersion: rv, AllowWatchBookmarks: true})
		if err != nil {
			got.err = err
			return got
		}
		for event := range w.ResultChan() {
			if event.Type == watch.Error {
				w.Stop()
				if err := apierrors.FromObject(event.Object); apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
					got.gone++ // a reflector would relist here
				} else {
					got.err = err
				}
				return got
			}
			o, err := meta.Accessor(event.Object)
			if err != nil {
				got.err = err
				w.Stop()
				return got
			}
			rv = o.GetResourceVersion()
			if event.Type == watch.Bookmark {
				continue
			}
			v, _ := strconv.ParseUint(rv, 10, 64)
			got.ordered = got.ordered && v > last
			last = v
			got.names = append(got.names, o.GetName())
			if len(got.names) == n {
				w.Stop()
				return got
			}
			time.Sleep(perEvent)
		}
		if ctx.Err() == nil {
			got.ends++
		}
	}
	got.err = ctx.Err()
	return got
}

package integration

import (
	"bytes"
	"context"
	"fmt"
	"iter"
	"slices"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
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

// TestWatcherBehindTheWindowGetsGone: a watcher that stops reading while
// writes go on, until the watch cache no longer holds the events it has
// not taken, gets what upstream gives it: its watch ends or is answered
// 410 Gone, and so is watching again from its resourceVersion (a client
// relists). Bulwark resumes only what the cache still holds. The cache
// keeps events at least 75 s, so the test takes about a minute and a half.
func TestWatcherBehindTheWindowGetsGone(t *testing.T) {
	const namespace = "stalled"
	etcd := framework.StartEtcd(t, framework.EtcdOptions{})
	bulwark := framework.StartAPIServer(t, framework.APIServerOptions{Etcd: etcd, Name: "bulwark"})
	upstream := framework.StartAPIServer(t, framework.APIServerOptions{Etcd: etcd, Name: "upstream", Binary: framework.Bins(t).Upstream, PKI: bulwark.PKI})
	createNamespace(t, unthrottledClient(t, bulwark), namespace)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	type stalled struct {
		name   string
		server *framework.APIServer
		client kubernetes.Interface
		watch  watch.Interface
		rv     string // the last resourceVersion the client took
	}
	servers := []*stalled{{name: "bulwark", server: bulwark}, {name: "upstream", server: upstream}}
	for _, s := range servers {
		s.client = unthrottledClient(t, s.server)
		list, err := s.client.CoreV1().Secrets(namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if s.watch, err = s.client.CoreV1().Secrets(namespace).Watch(ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion, AllowWatchBookmarks: true}); err != nil {
			t.Fatal(err)
		}
		defer s.watch.Stop()
		s.rv = list.ResourceVersion
	}
	// Ten Secrets of 128 KiB a second: what the connection buffers fills in
	// seconds, and the cache's window (which grows while its oldest event
	// is younger than 75 s) stops growing at 800 events.
	writing, stopWriting := context.WithCancel(ctx)
	defer stopWriting()
	written := make(chan error, 1)
	go func() {
		written <- seed.PutOneRevisionEach(writing, etcd.ClientURL, pacedSecrets(writing, namespace, 128<<10, 100*time.Millisecond))
	}()

	// The clients take nothing while the server fills what the connection
	// buffers; after that, nothing the server hands them is newer than
	// behind.
	time.Sleep(15 * time.Second)
	behind := currentRV(t, ctx, upstream)
	waitUntil(t, 3*time.Minute, "the watch caches no longer hold resourceVersion "+behind, func() bool {
		return goneFrom(ctx, unthrottledClient(t, upstream), namespace, behind) && goneFrom(ctx, unthrottledClient(t, bulwark), namespace, behind)
	})

	for _, s := range servers {
		// The client reads again: what the connection holds, then the end
		// of its watch or 410; watching again from what it took, 410.
		got := slowWatch{}
		for event := range s.watch.ResultChan() {
			if event.Type == watch.Error {
				if err := apierrors.FromObject(event.Object); apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
					got.gone++
				}
				break
			}
			if o, err := meta.Accessor(event.Object); err == nil {
				s.rv = o.GetResourceVersion()
				got.names = append(got.names, o.GetName())
			}
		}
		if got.gone == 0 {
			got.ends++
			if goneFrom(ctx, s.client, namespace, s.rv) {
				got.gone++
			}
		}
		t.Logf("%s: %d events taken after the stall, then watch ended %d times, 410 Gone %d", s.name, len(got.names), got.ends, got.gone)
		if got.gone != 1 {
			t.Errorf("%s: a watcher behind the cache's window got no 410 Gone", s.name)
		}
	}
	m := metrics(t, bulwark)
	gone, ended := metricSum(t, m, `bulwark_watch_slow_watchers_total{group="",outcome="gone",resource="secrets"}`),
		metricSum(t, m, `bulwark_watch_slow_watchers_total{group="",outcome="ended",resource="secrets"}`)
	t.Logf("bulwark_watch_slow_watchers_total for secrets: gone %v, ended %v", gone, ended)
	if gone+ended == 0 {
		t.Error("bulwark_watch_slow_watchers_total counted neither gone nor ended for secrets")
	}
	stopWriting()
	if err := <-written; err != nil && writing.Err() == nil {
		t.Fatal(err)
	}
}

// pacedSecrets are Secrets of size bytes in namespace, one every period
// until ctx is done.
func pacedSecrets(ctx context.Context, namespace string, size int, period time.Duration) iter.Seq[seed.Object] {
	payload := bytes.Repeat([]byte("x"), size)
	now := seed.Now()
	return func(yield func(seed.Object) bool) {
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-time.After(period):
			}
			secret := &corev1.Secret{
				TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("s-%d", i), Namespace: namespace, UID: types.UID(fmt.Sprintf("s-%d", i)), CreationTimestamp: now},
				Data:       map[string][]byte{"payload": payload},
			}
			if !yield(seed.Object{Key: "/registry/secrets/" + namespace + "/" + secret.Name, Object: secret}) {
				return
			}
		}
	}
}

// goneFrom tells whether a watch of namespace's Secrets from rv is
// answered 410 Gone.
func goneFrom(ctx context.Context, client kubernetes.Interface, namespace, rv string) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	w, err := client.CoreV1().Secrets(namespace).Watch(ctx, metav1.ListOptions{ResourceVersion: rv})
	if err != nil {
		return apierrors.IsResourceExpired(err) || apierrors.IsGone(err)
	}
	defer w.Stop()
	for event := range w.ResultChan() {
		if event.Type == watch.Error {
			err := apierrors.FromObject(event.Object)
			return apierrors.IsResourceExpired(err) || apierrors.IsGone(err)
		}
	}
	return false
}

// currentRV is the resourceVersion a LIST of s answers now.
func currentRV(t *testing.T, ctx context.Context, s *framework.APIServer) string {
	t.Helper()
	list, err := unthrottledClient(t, s).CoreV1().Namespaces().List(ctx, metav1.ListOptions{Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	return list.ResourceVersion
}

package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/bulwark-k8s/bulwark/internal/podwatch"
	"github.com/bulwark-k8s/bulwark/internal/seed"
	"github.com/bulwark-k8s/bulwark/test/integration/framework"
)

// historyNamespace holds the pods of seed.Data{Namespaces: 1}.
var historyNamespace = seed.NamespaceName(0)

// gracefulStopArg bounds a graceful stop: the server waits for open
// watches up to its request timeout (60 s by default) before it exits.
const gracefulStopArg = "--request-timeout=10s"

// TestWatchesResumeWhileTheStartHistoryIsRead is a failover as an operator
// meets it: an etcd whose history holds every pod's creation (no
// compaction since), label-selected reflectors with bookmarks, a second
// apiserver writing pods to the same etcd throughout, and the apiserver the
// reflectors watch restarted, gracefully and then with SIGKILL. The
// reflectors reconnect at once, as client-go does, from resourceVersions
// older than the new watch cache, while the new process still reads its
// start history: none may get 410 Gone or relist (a watch waits for the
// history, or is told to retry with 429). Upstream's binary, on the same
// etcd, shows the 410s and relists the history prevents.
func TestWatchesResumeWhileTheStartHistoryIsRead(t *testing.T) {
	pods := sized(20000, 60000)
	watchers := sized(20, 100)
	etcd := framework.StartEtcd(t, framework.EtcdOptions{})
	start := time.Now()
	// One revision each, as pods created through the API are: the history
	// the new process reads.
	data := seed.Data{Pods: pods, Nodes: 100, Namespaces: 1, Apps: watchers}
	if err := seed.PutOneRevisionEach(context.Background(), etcd.ClientURL, data.PodObjects(seed.Now())); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d pods written, one revision each, in %v", pods, time.Since(start).Round(time.Millisecond))

	bulwark := framework.StartAPIServer(t, framework.APIServerOptions{Etcd: etcd, Name: "bulwark", Args: []string{"--watch-bookmark-interval=2s", gracefulStopArg}})
	createNamespace(t, unthrottledClient(t, bulwark), historyNamespace)
	other := framework.StartAPIServer(t, framework.APIServerOptions{Etcd: etcd, Name: "other-replica", Binary: framework.Bins(t).Upstream, PKI: bulwark.PKI})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go relabelPods(ctx, unthrottledClient(t, other), data)

	for _, run := range []struct {
		name   string
		server *framework.APIServer
	}{
		{"bulwark", bulwark},
		{"upstream", nil},
	} {
		t.Run(run.name, func(t *testing.T) {
			server := run.server
			if server == nil {
				bulwark.Stop()
				server = framework.StartAPIServer(t, framework.APIServerOptions{Etcd: etcd, Name: "upstream", Binary: framework.Bins(t).Upstream, PKI: bulwark.PKI, Args: []string{gracefulStopArg}})
			}
			watchCtx, stopWatching := context.WithCancel(ctx)
			defer stopWatching()
			client := unthrottledClient(t, server)
			ws := make([]*podwatch.Watcher, watchers)
			for i := range ws {
				ws[i] = &podwatch.Watcher{Name: fmt.Sprintf("watcher-%d", i), LabelSelector: "app=" + seed.AppName(i)}
				defer func(done <-chan struct{}) { <-done }(ws[i].Start(watchCtx, client))
			}
			defer stopWatching()
			waitUntil(t, 2*time.Minute, "reflectors synced", func() bool {
				return allSynced(ws)
			})
			var gone, relists int64
			for _, restart := range []string{"graceful", "SIGKILL"} {
				time.Sleep(resumeSettle) // bookmarks carry the other replica's writes to the reflectors
				listsBefore, goneBefore := podwatch.Totals(ws)
				stopped := time.Now()
				if restart == "graceful" {
					server.Restart(t)
				} else {
					server.Process.Kill()
					if err := server.Start(); err != nil {
						t.Fatal(err)
					}
				}
				waitUntil(t, 2*time.Minute, restart+": reflectors watching again", func() bool { return podwatch.WatchingSince(ws, stopped) == watchers })
				time.Sleep(relistBackoff)
				lists, gones := podwatch.Totals(ws)
				relists, gone = relists+lists-listsBefore, gone+gones-goneBefore
				figure(t, fmt.Sprintf("history being read, %s restart, %s: 410 Gone received by %d reflectors", restart, run.name, watchers), float64(gones-goneBefore), "errors")
				figure(t, fmt.Sprintf("history being read, %s restart, %s: relists", restart, run.name), float64(lists-listsBefore), "lists")
				if run.name != "bulwark" {
					continue
				}
				t.Logf("%s restart: reflectors watching again %v after the stop; %s", restart, time.Since(stopped).Round(time.Millisecond),
					lastLogLine(t, server, `"Read the start history" resource="pods"`))
				m := metrics(t, server)
				figure(t, fmt.Sprintf("history being read, %s restart: watches told to retry (429) while the history was read", restart),
					metricSum(t, m, "bulwark_watch_start_history_not_read_total"), "watches")
				if lists != listsBefore || gones != goneBefore {
					t.Errorf("%s: the reflectors listed %d times and got 410 Gone %d times; want none", restart, lists-listsBefore, gones-goneBefore)
				}
				if n := metricSum(t, m, "bulwark_watch_gone_total"); n != 0 {
					t.Errorf("%s: bulwark_watch_gone_total %v, want 0", restart, n)
				}
			}
			// The test tells the two apart: upstream relists here.
			if run.name == "upstream" && (gone == 0 || relists == 0) {
				t.Errorf("upstream: %d 410 Gone and %d relists over two restarts; the scenario no longer shows what the history prevents", gone, relists)
			}
		})
	}
}

func allSynced(ws []*podwatch.Watcher) bool {
	for _, w := range ws {
		if !w.Synced() {
			return false
		}
	}
	return true
}

// relabelPods changes one of data's pods after another through client, as
// other replicas serve writes while one restarts, until ctx is done.
func relabelPods(ctx context.Context, client kubernetes.Interface, data seed.Data) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; ctx.Err() == nil; i++ {
		j := rng.IntN(data.Pods)
		patch := fmt.Sprintf(`{"metadata":{"annotations":{"written":"%d"},"labels":{"app":%q}}}`, i, seed.AppName(j%data.Apps))
		_, _ = client.CoreV1().Pods(historyNamespace).Patch(ctx, data.PodName(j), types.MergePatchType, []byte(patch), metav1.PatchOptions{})
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// lastLogLine returns the last line of the server's log that contains text.
func lastLogLine(t *testing.T, s *framework.APIServer, text string) string {
	t.Helper()
	data, err := os.ReadFile(s.Process.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	var last string
	for _, line := range strings.Split(string(data), "\n") {
		if strings.Contains(line, text) {
			last = line
		}
	}
	return last
}

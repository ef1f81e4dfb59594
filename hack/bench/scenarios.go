package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/bulwark-k8s/bulwark/internal/seed"
)

// benchNamespace holds the objects scenarios create; seeded with the data.
const benchNamespace = "bench"

// Params size the scenarios.
type Params struct {
	seed.Data
	ListSamples       int
	GetSamples        int
	Writes            int
	WriteConcurrency  int
	Watchers          int
	FanoutUpdates     int
	HeartbeatDuration time.Duration
	FloodDuration     time.Duration
	FloodConcurrency  int
	GoodClients       int
	CostRequests      int
	RestartWatchers   int
	StormClients      int
	SlowWatchers      int
	SlowBurst         int
	// NamespacedInformers is how many informers of one namespace's
	// ConfigMaps start at once (the scenario runs with -configmaps).
	NamespacedInformers int
	// KwokNodes and KwokPods size the kwok cluster scenario (0 pods: not run).
	KwokNodes, KwokPods int
}

// measurement is what one scenario measured on one server.
type measurement struct {
	// latencies by metric name; each gives client-side p50/p90/p99.
	latencies map[string]Latencies
	// serverKey selects apiserver_request_duration_seconds ("LIST pods").
	serverKey string
	// values are further metrics: name -> value.
	values []namedValue
	// usage overrides the runner's sampling (restart measures a new process).
	usage *Usage
	// cleanup, if set, undoes the scenario's writes after the measurement,
	// so that the next scenario and the next server see the data as seeded.
	cleanup func(context.Context) error
}

type namedValue struct {
	name  string
	unit  string
	value float64
}

// scenario measures one thing on one server.
type scenario struct {
	name string
	run  func(ctx context.Context, s *server, p Params) (*measurement, error)
}

func scenarios(p Params) []scenario {
	var out []scenario
	for _, rv := range []string{"", "0"} {
		suffix := fmt.Sprintf(" rv=%q", rv)
		q := func(v url.Values) string {
			if rv != "" {
				v.Set("resourceVersion", rv)
			}
			return v.Encode()
		}
		out = append(out,
			listScenario("list label cluster-wide"+suffix, "pods", p.ListSamples, func(i int) string {
				return "/api/v1/pods?" + q(url.Values{"labelSelector": {"app=" + seed.AppName(i*7%p.Apps)}})
			}),
			listScenario("list label namespaced"+suffix, "pods", p.ListSamples, func(i int) string {
				return "/api/v1/namespaces/" + seed.NamespaceName(i%p.Namespaces) + "/pods?" + q(url.Values{"labelSelector": {"app=" + seed.AppName(i*7%p.Apps)}})
			}),
			listScenario("list spec.nodeName"+suffix, "pods", p.ListSamples, func(i int) string {
				return "/api/v1/pods?" + q(url.Values{"fieldSelector": {"spec.nodeName=" + seed.NodeName(i*13%p.Nodes)}})
			}),
			pagedListScenario("list namespace limit=500"+suffix, rv, max(p.ListSamples/10, 5), p),
		)
	}
	if p.ConfigMaps > 0 {
		out = append(out, scenario{name: "namespaced informers", run: namespacedInformersScenario})
	}
	if p.Widgets > 0 {
		out = append(out, listScenario("list widgets label cluster-wide rv=\"\"", seed.WidgetResource, p.ListSamples, func(i int) string {
			return widgetsPath + "?" + url.Values{"labelSelector": {"app=" + seed.AppName(i*7%p.Apps)}}.Encode()
		}))
	}
	return append(out,
		listScenario("list label set cluster-wide rv=\"\"", "pods", p.ListSamples, func(i int) string {
			set := "app in (" + seed.AppName(i*7%p.Apps) + "," + seed.AppName((i*7+1)%p.Apps) + "," + seed.AppName((i*7+2)%p.Apps) + ")"
			return "/api/v1/pods?" + url.Values{"labelSelector": {set}}.Encode()
		}),
		scenario{name: "get pod", run: getScenario},
		scenario{name: "create pods", run: createScenario},
		scenario{name: "update pods", run: updateScenario},
		scenario{name: "watch fan-out", run: fanoutScenario},
		scenario{name: "heartbeats", run: func(ctx context.Context, s *server, p Params) (*measurement, error) {
			return heartbeatScenario(ctx, s, p, false)
		}},
		scenario{name: "heartbeats under LIST flood", run: func(ctx context.Context, s *server, p Params) (*measurement, error) {
			return heartbeatScenario(ctx, s, p, true)
		}},
		scenario{name: "flood", run: floodScenario},
		scenario{name: "reconnect storm", run: stormScenario},
		scenario{name: "cost: flooder LISTs", run: costScenario(asFlooder, floodUserAgent)},
		scenario{name: "cost: failed authentication", run: costScenario(withBadToken, goodUserAgent)},
		scenario{name: "restart", run: restartScenario},
		scenario{name: "slow watchers", run: slowWatchersScenario},
	)
}

// widgetsPath lists the custom resource of seed.Data.Widgets.
const widgetsPath = "/apis/" + seed.WidgetGroup + "/v1/" + seed.WidgetResource

// listScenario GETs the paths one after the other; resource names the
// server-side latency in apiserver_request_duration_seconds.
func listScenario(name, resource string, samples int, path func(i int) string) scenario {
	return scenario{name: name, run: func(ctx context.Context, s *server, p Params) (*measurement, error) {
		var l Latencies
		objects := 0
		for i := range samples {
			d, body, err := timed(ctx, s.http, http.MethodGet, s.url+path(i), goodUserAgent, "", nil)
			if err != nil {
				return nil, err
			}
			l = append(l, d)
			n, err := countItems(body)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", path(i), err)
			}
			objects += n
		}
		return &measurement{
			latencies: map[string]Latencies{"latency": l},
			serverKey: "LIST " + resource,
			// The same on both servers, and not 0: both served the data.
			values: []namedValue{{"objects per LIST", "count", float64(objects) / float64(samples)}},
		}, nil
	}}
}

// countItems counts the items of a list, protobuf (built-in resources) or
// JSON (custom resources).
func countItems(body []byte) (int, error) {
	if bytes.HasPrefix(body, []byte("k8s\x00")) {
		list, _, err := scheme.Codecs.UniversalDeserializer().Decode(body, nil, nil)
		if err != nil {
			return 0, err
		}
		return meta.LenList(list), nil
	}
	var list struct{ Items []json.RawMessage }
	err := json.Unmarshal(body, &list)
	return len(list.Items), err
}

// pagedListScenario reads a whole namespace in pages of 500, as informers
// and kubectl do; a sample is the time for all pages.
func pagedListScenario(name, rv string, samples int, p Params) scenario {
	return scenario{name: name, run: func(ctx context.Context, s *server, _ Params) (*measurement, error) {
		var l Latencies
		for i := range samples {
			start := time.Now()
			v := url.Values{"limit": {"500"}}
			if rv != "" {
				v.Set("resourceVersion", rv)
			}
			for {
				_, body, err := timed(ctx, s.http, http.MethodGet, s.url+"/api/v1/namespaces/"+seed.NamespaceName(i%p.Namespaces)+"/pods?"+v.Encode(), goodUserAgent, "", nil)
				if err != nil {
					return nil, err
				}
				list := &corev1.PodList{}
				if _, _, err := scheme.Codecs.UniversalDeserializer().Decode(body, nil, list); err != nil {
					return nil, err
				}
				if list.Continue == "" {
					break
				}
				v = url.Values{"limit": {"500"}, "continue": {list.Continue}}
			}
			l = append(l, time.Since(start))
		}
		return &measurement{latencies: map[string]Latencies{"latency": l}, serverKey: "LIST pods"}, nil
	}}
}

func getScenario(ctx context.Context, s *server, p Params) (*measurement, error) {
	var l Latencies
	for i := range p.GetSamples {
		j := i * 7919 % p.Pods
		d, _, err := timed(ctx, s.http, http.MethodGet, s.url+"/api/v1/namespaces/"+seed.NamespaceName(p.PodNamespace(j))+"/pods/"+p.PodName(j), goodUserAgent, "", nil)
		if err != nil {
			return nil, err
		}
		l = append(l, d)
	}
	return &measurement{latencies: map[string]Latencies{"latency": l}, serverKey: "GET pods"}, nil
}

// parallel runs n operations on workers goroutines and returns their
// latencies and the wall time.
func parallel(ctx context.Context, n, workers int, op func(i int) (time.Duration, error)) (Latencies, time.Duration, error) {
	lat := make(Latencies, n)
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				d, err := op(i)
				if err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				lat[i] = d
			}
		}()
	}
	wg.Wait()
	return lat, time.Since(start), firstErr
}

func writtenPodName(s *server, i int) string { return fmt.Sprintf("write-%s-%d", s.name, i) }

func createScenario(ctx context.Context, s *server, p Params) (*measurement, error) {
	lat, wall, err := parallel(ctx, p.Writes, p.WriteConcurrency, func(i int) (time.Duration, error) {
		pod := fmt.Sprintf(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":%q,"labels":{"app":"writer"}},"spec":{"containers":[{"name":"main","image":"registry.example/writer:v1"}]}}`, writtenPodName(s, i))
		d, _, err := timed(ctx, s.http, http.MethodPost, s.url+"/api/v1/namespaces/"+benchNamespace+"/pods", goodUserAgent, "application/json", []byte(pod))
		return d, err
	})
	if err != nil {
		return nil, err
	}
	return &measurement{
		latencies: map[string]Latencies{"latency": lat},
		serverKey: "POST pods",
		values:    []namedValue{{"throughput", "req/s", float64(p.Writes) / wall.Seconds()}},
	}, nil
}

func updateScenario(ctx context.Context, s *server, p Params) (*measurement, error) {
	lat, wall, err := parallel(ctx, p.Writes, p.WriteConcurrency, func(i int) (time.Duration, error) {
		patch := fmt.Sprintf(`{"metadata":{"labels":{"revision":"r%d"}}}`, i)
		d, _, err := timed(ctx, s.http, http.MethodPatch, s.url+"/api/v1/namespaces/"+benchNamespace+"/pods/"+writtenPodName(s, i), goodUserAgent, "application/merge-patch+json", []byte(patch))
		return d, err
	})
	if err != nil {
		return nil, err
	}
	return &measurement{
		latencies: map[string]Latencies{"latency": lat},
		serverKey: "PATCH pods",
		values:    []namedValue{{"throughput", "req/s", float64(p.Writes) / wall.Seconds()}},
		cleanup: func(ctx context.Context) error {
			_, _, err := parallel(ctx, p.Writes, p.WriteConcurrency, func(i int) (time.Duration, error) {
				d, _, err := timed(ctx, s.http, http.MethodDelete, s.url+"/api/v1/namespaces/"+benchNamespace+"/pods/"+writtenPodName(s, i), goodUserAgent, "", nil)
				return d, err
			})
			return err
		},
	}, nil
}

// fanoutScenario opens N cluster-wide pod watches, each on its own
// connection, updates one pod repeatedly and measures how long each update
// takes to reach every watcher.
func fanoutScenario(ctx context.Context, s *server, p Params) (*measurement, error) {
	name := "fanout-" + s.name
	pod := fmt.Sprintf(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":%q},"spec":{"containers":[{"name":"main","image":"registry.example/fanout:v1"}]}}`, name)
	_, body, err := timed(ctx, s.http, http.MethodPost, s.url+"/api/v1/namespaces/"+benchNamespace+"/pods", goodUserAgent, "application/json", []byte(pod))
	if err != nil {
		return nil, err
	}
	created := &corev1.Pod{}
	if _, _, err := scheme.Codecs.UniversalDeserializer().Decode(body, nil, created); err != nil {
		return nil, err
	}
	defer timed(context.Background(), s.http, http.MethodDelete, s.url+"/api/v1/namespaces/"+benchNamespace+"/pods/"+name, goodUserAgent, "", nil)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// received[w][seq] is when watcher w saw update seq.
	received := make([][]time.Time, p.Watchers)
	var ready, done sync.WaitGroup
	errs := make(chan error, p.Watchers)
	const watchersPerConnection = 50
	var client *http.Client
	for w := range p.Watchers {
		if w%watchersPerConnection == 0 {
			if client, err = httpClient(s.cfg, goodUserAgent); err != nil {
				return nil, err
			}
		}
		received[w] = make([]time.Time, p.FanoutUpdates)
		ready.Add(1)
		done.Add(1)
		go func(w int, client *http.Client) {
			defer done.Done()
			q := url.Values{"watch": {"1"}, "allowWatchBookmarks": {"true"}, "resourceVersion": {created.ResourceVersion}}
			resp, err := get(ctx, client, s.url+"/api/v1/pods?"+q.Encode(), "application/json", goodUserAgent)
			ready.Done()
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			dec := json.NewDecoder(resp.Body)
			seen := 0
			for seen < p.FanoutUpdates {
				var ev struct {
					Type   string
					Object struct {
						Metadata metav1.ObjectMeta
					}
				}
				if err := dec.Decode(&ev); err != nil {
					if ctx.Err() == nil {
						errs <- err
					}
					return
				}
				if ev.Object.Metadata.Name != name {
					continue
				}
				var seq int
				if _, err := fmt.Sscanf(ev.Object.Metadata.Annotations["bench/seq"], "%d", &seq); err == nil && seq < p.FanoutUpdates {
					received[w][seq] = time.Now()
					seen++
				}
			}
		}(w, client)
	}
	ready.Wait()
	sent := make([]time.Time, p.FanoutUpdates)
	for seq := range p.FanoutUpdates {
		patch := fmt.Sprintf(`{"metadata":{"annotations":{"bench/seq":"%d"}}}`, seq)
		sent[seq] = time.Now()
		if _, _, err := timed(ctx, s.http, http.MethodPatch, s.url+"/api/v1/namespaces/"+benchNamespace+"/pods/"+name, goodUserAgent, "application/merge-patch+json", []byte(patch)); err != nil {
			return nil, err
		}
		time.Sleep(200 * time.Millisecond)
	}
	waitCh := make(chan struct{})
	go func() { done.Wait(); close(waitCh) }()
	select {
	case <-waitCh:
	case err := <-errs:
		return nil, fmt.Errorf("watcher: %w", err)
	case <-time.After(time.Minute):
		return nil, errors.New("watchers did not receive every update within a minute")
	}
	var all, each Latencies
	for seq := range p.FanoutUpdates {
		var last time.Duration
		for w := range received {
			d := received[w][seq].Sub(sent[seq])
			each = append(each, d)
			last = max(last, d)
		}
		all = append(all, last)
	}
	return &measurement{latencies: map[string]Latencies{
		"time to reach all watchers": all,
		"delivery per watcher":       each,
	}, serverKey: "PATCH pods"}, nil
}

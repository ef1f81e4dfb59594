package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/bulwark-k8s/bulwark/internal/seed"
	"github.com/bulwark-k8s/bulwark/test/integration/framework"
)

// The representations a client asks for: JSON and protobuf (every
// client-go client), metadata only (controller-runtime's metadata
// informers, the garbage collector: no spec, no status), a table (kubectl).
var representations = map[string]string{
	"json":     "application/json",
	"protobuf": "application/vnd.kubernetes.protobuf",
	"metadata": "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1", // of one object: PartialObjectMetadata
	"table":    "application/json;as=Table;g=meta.k8s.io;v=v1",
}

// TestResponsesAreUpstreams runs upstream's binary and ours on one etcd
// holding pods as a cluster writes them, and checks that GETs, LISTs (from
// the watch cache, consistent, by label and field selectors our indexes
// serve, paged) and WATCHes (initial events; streaming lists by namespace,
// node and label, of pods and of ConfigMaps, which have no index; the
// events of a write) answer byte for byte what upstream answers, in every
// representation: what Bulwark does to hold its objects (shared values,
// indexes) and serve its watches changes no byte a client reads.
func TestResponsesAreUpstreams(t *testing.T) {
	bins := framework.Bins(t)
	etcd := framework.StartEtcd(t, framework.EtcdOptions{})
	data := seed.Data{Pods: 600, Nodes: 12, Namespaces: 3, Apps: 10, Workloads: true, ConfigMaps: 30}
	// Tables show each object's age, rendered when served: objects created
	// 30 days and 12 hours ago show "30d" on both servers for 12 hours, so
	// two answers a second apart cannot differ by it.
	created := metav1.NewTime(seed.Now().Add(-(30*24 + 12) * time.Hour))
	if err := seed.Put(context.Background(), etcd.ClientURL, data.Objects(created)); err != nil {
		t.Fatal(err)
	}
	args := []string{"--service-cluster-ip-range=" + seed.ServiceCIDR}
	upstream := framework.StartAPIServer(t, framework.APIServerOptions{Binary: bins.Upstream, Etcd: etcd, Args: args, Name: "upstream"})
	ours := framework.StartAPIServer(t, framework.APIServerOptions{Etcd: etcd, PKI: upstream.PKI, Args: args, Name: "ours"})
	servers := []*framework.APIServer{upstream, ours}

	// The pod every watch below selects, and that a write changes: in
	// ns-0, app-3, on node-3.
	const target = 123
	ns, pod := seed.NamespaceName(data.PodNamespace(target)), data.PodName(target)
	paths := []string{
		"/api/v1/namespaces/" + ns + "/pods/" + pod + "?resourceVersion=0",
		"/api/v1/namespaces/" + ns + "/pods/" + pod,
		"/api/v1/pods?resourceVersion=0",
		"/api/v1/pods",
		"/api/v1/namespaces/" + ns + "/pods?labelSelector=" + url.QueryEscape("app=app-3"),
		"/api/v1/pods?labelSelector=" + url.QueryEscape("app in (app-1,app-7),tier!=cache") + "&resourceVersion=0",
		"/api/v1/pods?fieldSelector=" + url.QueryEscape("spec.nodeName="+seed.NodeName(5)),
		"/api/v1/pods?limit=70",
		"/api/v1/nodes?resourceVersion=0",
		"/apis/apps/v1/replicasets?resourceVersion=0",
		"/apis/discovery.k8s.io/v1/endpointslices",
	}
	for _, path := range paths {
		for name, accept := range representations {
			if name == "metadata" && strings.Contains(path, "/pods/") {
				accept = strings.Replace(accept, "PartialObjectMetadataList", "PartialObjectMetadata", 1)
			}
			got := requestAll(t, servers, path, accept)
			if strings.Contains(path, "resourceVersion=0") && !strings.Contains(path, "/pods/") {
				// Any resourceVersion may answer: each cache's own.
				for i := range got {
					got[i] = withoutListResourceVersion(t, got[i], name == "protobuf")
				}
			}
			if !bytes.Equal(got[0], got[1]) {
				t.Errorf("GET %s as %s: ours differs from upstream's:\n%s", path, name, firstDifference(got[0], got[1]))
			}
		}
	}
	// The next page of a paged LIST, by the token of each server's first.
	for name, accept := range representations {
		if name == "table" {
			continue
		}
		next := requestAll(t, servers, "/api/v1/pods?limit=70", "application/json")
		token := continueToken(t, next[0])
		got := requestAll(t, servers, "/api/v1/pods?limit=70&continue="+url.QueryEscape(token), accept)
		if !bytes.Equal(got[0], got[1]) {
			t.Errorf("second page as %s: ours differs:\n%s", name, firstDifference(got[0], got[1]))
		}
	}

	// Watches: their initial events up to the bookmark that ends them, then
	// the events of one write, into the pod or into a ConfigMap of its
	// namespace (a resource without Bulwark's indexes).
	const streamingList = "watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true"
	writePod := func(patch []byte) error {
		_, err := upstream.Client.CoreV1().Pods(ns).Patch(context.Background(), pod, types.MergePatchType, patch, metav1.PatchOptions{})
		return err
	}
	configMaps, err := upstream.Client.CoreV1().ConfigMaps(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil || len(configMaps.Items) < 2 {
		t.Fatalf("the ConfigMaps of %s: %v, %v", ns, configMaps, err)
	}
	writeConfigMap := func(patch []byte) error {
		_, err := upstream.Client.CoreV1().ConfigMaps(ns).Patch(context.Background(), configMaps.Items[1].Name, types.MergePatchType, patch, metav1.PatchOptions{})
		return err
	}
	watches := []struct {
		path  string
		write func(patch []byte) error
	}{
		{"/api/v1/namespaces/" + ns + "/pods?" + streamingList, writePod},
		{"/api/v1/pods?" + streamingList + "&fieldSelector=" + url.QueryEscape("spec.nodeName="+seed.NodeName(3)), writePod},
		{"/api/v1/pods?" + streamingList + "&labelSelector=" + url.QueryEscape("app=app-3"), writePod},
		{"/api/v1/namespaces/" + ns + "/configmaps?" + streamingList, writeConfigMap},
	}
	const listedConfigMaps = `bulwark_watch_cache_listed_streaming_lists_total{group="",resource="configmaps",selection="namespace"}`
	listedBefore := metricSum(t, metrics(t, ours), listedConfigMaps)
	for _, watch := range watches {
		path := watch.path
		for _, name := range []string{"json", "protobuf"} {
			streams := make([]*watchStream, len(servers))
			for i, s := range servers {
				streams[i] = openWatch(t, s, path, representations[name])
			}
			initial := make([][]byte, len(servers))
			for i, w := range streams {
				initial[i] = w.untilInitialEventsEnd(t)
			}
			if !bytes.Equal(initial[0], initial[1]) {
				t.Errorf("watch %s as %s: initial events differ:\n%s", path, name, firstDifference(initial[0], initial[1]))
			}
			patch := fmt.Sprintf(`{"metadata":{"annotations":{"written":"%d"}}}`, time.Now().UnixNano())
			if err := watch.write([]byte(patch)); err != nil {
				t.Fatal(err)
			}
			events := make([][]byte, len(servers))
			for i, w := range streams {
				events[i] = w.nextEvent(t)
			}
			if !bytes.Equal(events[0], events[1]) {
				t.Errorf("watch %s as %s: the write's event differs:\n%s", path, name, firstDifference(events[0], events[1]))
			}
			for _, w := range streams {
				w.close()
			}
		}
	}
	// Ours served the ConfigMaps' two (JSON, protobuf) by LISTs of the
	// namespace, not by upstream's filter of every ConfigMap.
	if n := metricSum(t, metrics(t, ours), listedConfigMaps) - listedBefore; n != 2 {
		t.Errorf("%s grew by %v, want 2", listedConfigMaps, n)
	}
}

// requestAll GETs path from every server, and fails unless every answer is 200.
func requestAll(t *testing.T, servers []*framework.APIServer, path, accept string) [][]byte {
	t.Helper()
	var bodies [][]byte
	for _, s := range servers {
		resp := get(t, s, path, accept)
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s from %s: %d %s", path, s.Process.Name, resp.StatusCode, body)
		}
		bodies = append(bodies, body)
	}
	return bodies
}

func get(t *testing.T, s *framework.APIServer, path, accept string) *http.Response {
	t.Helper()
	client, err := rest.HTTPClientFor(s.Config)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodGet, s.Config.Host+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", accept)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

var listResourceVersion = regexp.MustCompile(`^(\{"kind":"[A-Za-z]+","apiVersion":"[a-z0-9./]+","metadata":\{"resourceVersion":")[0-9]+"`)

// withoutListResourceVersion blanks a LIST's own resourceVersion (not its
// items'), in JSON or in protobuf (there: the list's metadata, inside the
// envelope's raw object, loses its resourceVersion field).
func withoutListResourceVersion(t *testing.T, body []byte, protobuf bool) []byte {
	t.Helper()
	if !protobuf {
		if !listResourceVersion.Match(body) {
			t.Fatalf("not a JSON list: %.100s", body)
		}
		return listResourceVersion.ReplaceAll(body, []byte(`$1"`))
	}
	prefix := []byte("k8s\x00")
	envelope, ok := bytes.CutPrefix(body, prefix)
	if !ok {
		t.Fatalf("not a protobuf object: %.20q", body)
	}
	// runtime.Unknown: 1 typeMeta, 2 raw; the list in raw: 1 metadata; in
	// the metadata: 2 resourceVersion.
	out := append([]byte(nil), prefix...)
	for _, f := range protoFields(t, envelope) {
		if f.number != 2 {
			out = append(out, f.bytes...)
			continue
		}
		var list []byte
		for _, lf := range protoFields(t, f.value) {
			if lf.number != 1 {
				list = append(list, lf.bytes...)
				continue
			}
			var meta []byte
			for _, mf := range protoFields(t, lf.value) {
				if mf.number != 2 {
					meta = append(meta, mf.bytes...)
				}
			}
			list = protowire.AppendBytes(protowire.AppendTag(list, 1, protowire.BytesType), meta)
		}
		out = protowire.AppendBytes(protowire.AppendTag(out, 2, protowire.BytesType), list)
	}
	return out
}

type protoField struct {
	number       protowire.Number
	bytes, value []byte // the whole field; a length-delimited field's contents
}

func protoFields(t *testing.T, b []byte) []protoField {
	t.Helper()
	var fields []protoField
	for len(b) > 0 {
		number, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			t.Fatalf("protobuf: %v", protowire.ParseError(n))
		}
		m := protowire.ConsumeFieldValue(number, typ, b[n:])
		if m < 0 {
			t.Fatalf("protobuf: %v", protowire.ParseError(m))
		}
		f := protoField{number: number, bytes: b[:n+m]}
		if typ == protowire.BytesType {
			f.value, _ = protowire.ConsumeBytes(b[n:])
		}
		fields = append(fields, f)
		b = b[n+m:]
	}
	return fields
}

func continueToken(t *testing.T, list []byte) string {
	t.Helper()
	_, rest, ok := bytes.Cut(list, []byte(`"continue":"`))
	token, _, ok2 := bytes.Cut(rest, []byte(`"`))
	if !ok || !ok2 {
		t.Fatalf("a LIST of limit 70 has no continue token: %.200s", list)
	}
	return string(token)
}

// firstDifference shows where two answers part.
func firstDifference(a, b []byte) string {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	from := max(0, i-150)
	return fmt.Sprintf("at byte %d of %d/%d:\nupstream: %q\nours:     %q", i, len(a), len(b), a[from:min(len(a), i+150)], b[from:min(len(b), i+150)])
}

// watchStream reads a watch's events, each as its bytes on the wire.
type watchStream struct {
	resp     *http.Response
	reader   *bufio.Reader
	protobuf bool
}

func openWatch(t *testing.T, s *framework.APIServer, path, accept string) *watchStream {
	t.Helper()
	resp := get(t, s, path, accept)
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("WATCH %s from %s: %d %s", path, s.Process.Name, resp.StatusCode, body)
	}
	return &watchStream{resp: resp, reader: bufio.NewReader(resp.Body), protobuf: strings.Contains(accept, "protobuf")}
}

// next returns the next event (a JSON line, or a length-prefixed protobuf
// frame), failing after 30 s.
func (w *watchStream) next(t *testing.T) []byte {
	t.Helper()
	type result struct {
		event []byte
		err   error
	}
	done := make(chan result, 1)
	go func() {
		if !w.protobuf {
			line, err := w.reader.ReadBytes('\n')
			done <- result{line, err}
			return
		}
		var size [4]byte
		if _, err := io.ReadFull(w.reader, size[:]); err != nil {
			done <- result{nil, err}
			return
		}
		frame := make([]byte, binary.BigEndian.Uint32(size[:]))
		_, err := io.ReadFull(w.reader, frame)
		done <- result{frame, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatalf("watch: %v", r.err)
		}
		return r.event
	case <-time.After(30 * time.Second):
		t.Fatal("watch: no event in 30s")
		return nil
	}
}

// untilInitialEventsEnd returns the initial events and the bookmark that
// ends them; other bookmarks (their timing is each server's) are left out.
func (w *watchStream) untilInitialEventsEnd(t *testing.T) []byte {
	t.Helper()
	var events []byte
	for {
		e := w.next(t)
		bookmark := bytes.Contains(e, []byte("BOOKMARK"))
		if !bookmark {
			events = append(events, e...)
			continue
		}
		if bytes.Contains(e, []byte("k8s.io/initial-events-end")) {
			return append(events, e...)
		}
	}
}

// nextEvent returns the next event that is not a bookmark.
func (w *watchStream) nextEvent(t *testing.T) []byte {
	t.Helper()
	for {
		if e := w.next(t); !bytes.Contains(e, []byte("BOOKMARK")) {
			return e
		}
	}
}

func (w *watchStream) close() { w.resp.Body.Close() }

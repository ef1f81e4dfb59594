package cacher

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/apis/example"
	"k8s.io/component-base/metrics/legacyregistry"
)

// TestIndexCensus counts the indexes of a watch cache (labels foo and app,
// field status.phase) holding pods some of which lack a label, and checks
// the counts, the estimate and the metrics against what was stored.
func TestIndexCensus(t *testing.T) {
	RegisterMetrics()
	s := newIndexedStorage(t)
	indexed := s.(*indexedStorage)
	ctx := context.Background()
	wantApps := map[string]bool{}
	withApp := 0
	for i := range 30 {
		pod := &example.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: fmt.Sprintf("ns-%d", i%3), Name: fmt.Sprintf("pod-%d", i)}}
		if i%4 != 0 {
			pod.Labels = map[string]string{"app": fmt.Sprintf("a%d", i%7)}
			wantApps[pod.Labels["app"]] = true
			withApp++
		}
		if i%2 == 0 {
			pod.Status.Phase = example.PodPhase("Running")
		}
		key, _ := indexed.keyFunc(pod)
		if err := s.Create(ctx, key, pod, &example.Pod{}, 0); err != nil {
			t.Fatal(err)
		}
	}

	var c *indexCensus
	deadline := time.Now().Add(10 * time.Second)
	for {
		var err error
		if c, err = indexed.takeCensus(ctx); err != nil {
			t.Fatal(err)
		}
		if c.entries[1] == withApp || time.Now().After(deadline) { // the cache catches up with the creates
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	want := []struct {
		name            string
		entries, values int
	}{
		{"label:foo", 0, 0},
		{"label:app", withApp, len(wantApps)},
		{"field:status.phase", 30, 2}, // "Running" and ""
	}
	for i, w := range want {
		if c.name(i) != w.name || c.entries[i] != w.entries || len(c.values[i]) != w.values {
			t.Errorf("index %d: %s, %d objects, %d values; want %s, %d, %d", i, c.name(i), c.entries[i], len(c.values[i]), w.name, w.entries, w.values)
		}
		if got, want := c.bytes(i), w.entries*indexBytesPerEntry+w.values*indexBytesPerValue; got != want {
			t.Errorf("%s: %d bytes, want %d", w.name, got, want)
		}
	}

	reportCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		indexed.reportIndexSizes(reportCtx, 10*time.Millisecond)
	}()
	series := fmt.Sprintf(`bulwark_watch_cache_index_entries{group="",index="label:app",resource="pods"} %d`, withApp)
	gather := func() string {
		var b strings.Builder
		mfs, err := legacyregistry.DefaultGatherer.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if strings.HasPrefix(mf.GetName(), "bulwark_watch_cache_index_") {
				for _, m := range mf.GetMetric() {
					fmt.Fprintf(&b, "%s%s %v\n", mf.GetName(), labelsOf(m), m.GetGauge().GetValue())
				}
			}
		}
		return b.String()
	}
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(gather(), series); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("metrics without %q:\n%s", series, gather())
		}
	}
	stop()
	<-done
	if got := gather(); got != "" {
		t.Errorf("series left after the storage was destroyed:\n%s", got)
	}
}

// labelsOf renders a series' labels as the text format does.
func labelsOf(m *dto.Metric) string {
	var parts []string
	for _, l := range m.GetLabel() {
		parts = append(parts, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
	}
	return "{" + strings.Join(parts, ",") + "}"
}

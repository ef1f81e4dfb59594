package cacher

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apiserver/pkg/apis/example"
	"k8s.io/apiserver/pkg/storage"
	cachermetrics "k8s.io/apiserver/pkg/storage/cacher/metrics"
	storagemetrics "k8s.io/apiserver/pkg/storage/metrics"
	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"
	"k8s.io/component-base/metrics/testutil"
)

// TestSetSelectors compares LISTs with set selectors on indexed labels,
// served by one index lookup per value, with upstream's scan of the same
// storage: same items in the same order, same resourceVersion, pages that
// continue where they should.
func TestSetSelectors(t *testing.T) {
	RegisterMetrics()
	storagemetrics.Register()
	s := newIndexedStorage(t)
	indexed := s.(*indexedStorage)
	ctx := context.Background()
	for i := range 60 {
		pod := &example.Pod{ObjectMeta: metav1.ObjectMeta{
			Namespace: fmt.Sprintf("ns-%d", i%3),
			Name:      fmt.Sprintf("pod-%02d", i),
			Labels:    map[string]string{"app": fmt.Sprintf("a%d", i%5), "tier": fmt.Sprintf("t%d", i%2)},
		}}
		if i%3 == 0 {
			pod.Status.Phase = example.PodPhase("Running")
		}
		if i%7 == 0 {
			delete(pod.Labels, "app")
		}
		key, _ := indexed.keyFunc(pod)
		if err := s.Create(ctx, key, pod, &example.Pod{}, 0); err != nil {
			t.Fatal(err)
		}
	}

	tests := []struct {
		name, key, selector, resourceVersion string
		match                                metav1.ResourceVersionMatch
		limit                                int64
		indexed                              bool
	}{
		{name: "consistent", key: "/pods/", selector: "app in (a1,a3)", indexed: true},
		{name: "with other requirements", key: "/pods/", selector: "app in (a0,a1,a2),tier=t1", indexed: true},
		{name: "namespaced", key: "/pods/ns-1", selector: "app in (a1,a2)", indexed: true},
		{name: "pages", key: "/pods/", selector: "app in (a1,a3,a4)", limit: 5, indexed: true},
		{name: "pages of a namespace", key: "/pods/ns-2", selector: "app in (a0,a4)", limit: 2, indexed: true},
		{name: "any cached version", key: "/pods/", selector: "app in (a1,a3)", resourceVersion: "0", limit: 3, indexed: true},
		{name: "value without pods", key: "/pods/", selector: "app in (a2,nothing)", indexed: true},
		{name: "single value: upstream's lookup", key: "/pods/", selector: "app in (a2)"},
		{name: "equality beside", key: "/pods/", selector: "app in (a1,a2),app=a1", indexed: true},
		{name: "unindexed key", key: "/pods/", selector: "tier in (t0,t1)"},
		{name: "notin", key: "/pods/", selector: "app notin (a1,a2)"},
		{name: "legacy exact page", key: "/pods/", selector: "app in (a1,a3)", resourceVersion: "current", limit: 4},
		{name: "exact", key: "/pods/", selector: "app in (a1,a3)", resourceVersion: "current", match: metav1.ResourceVersionMatchExact},
		{name: "not older than", key: "/pods/", selector: "app in (a1,a3)", resourceVersion: "current", match: metav1.ResourceVersionMatchNotOlderThan, indexed: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			selector, err := labels.Parse(tt.selector)
			if err != nil {
				t.Fatal(err)
			}
			opts := storage.ListOptions{
				ResourceVersion:      tt.resourceVersion,
				ResourceVersionMatch: tt.match,
				Recursive:            true,
				Predicate:            storage.SelectionPredicate{Label: selector, Field: fields.Everything(), GetAttrs: examplePodAttrs, Limit: tt.limit},
			}
			if opts.ResourceVersion == "current" {
				current, err := s.GetCurrentResourceVersion(ctx)
				if err != nil {
					t.Fatal(err)
				}
				opts.ResourceVersion = fmt.Sprint(current)
			}
			servedByIndex := func() float64 {
				v, err := testutil.GetCounterMetricValue(setSelectorLists.WithLabelValues("", "pods", "index"))
				if err != nil {
					t.Fatal(err)
				}
				return v
			}
			before := servedByIndex()
			got := listPages(t, indexed, tt.key, opts)
			if lookups := servedByIndex() - before; (lookups == 1) != tt.indexed {
				t.Errorf("LISTs served by index lookups: %v, want indexed %v", lookups, tt.indexed)
			}
			opts.ResourceVersion, opts.ResourceVersionMatch = fmt.Sprint(got.resourceVersion), metav1.ResourceVersionMatchExact
			if tt.resourceVersion == "0" {
				opts.Predicate.Limit = 0 // upstream ignores it
			}
			want := listPages(t, indexed.Interface, tt.key, opts)
			if !slices.Equal(got.names, want.names) {
				t.Errorf("items %v, upstream's scan at resourceVersion %d: %v", got.names, got.resourceVersion, want.names)
			}
			if len(got.names) == 0 {
				t.Errorf("selector %q matched no pod; the case tests nothing", tt.selector)
			}
			if tt.limit > 0 && tt.resourceVersion != "0" && len(got.names) > int(tt.limit) && got.pages < 2 {
				t.Errorf("%d items in %d page(s) of limit %d", len(got.names), got.pages, tt.limit)
			}
		})
	}

	// A configured field index serves its equality selector, with the same answer as the scan.
	phase, _ := fields.ParseSelector("status.phase=Running")
	opts := storage.ListOptions{Recursive: true, Predicate: storage.SelectionPredicate{Label: labels.Everything(), Field: phase, GetAttrs: examplePodAttrs}}
	got := listPages(t, indexed, "/pods/", opts)
	opts.ResourceVersion, opts.ResourceVersionMatch = fmt.Sprint(got.resourceVersion), metav1.ResourceVersionMatchExact
	if want := listPages(t, indexed.Interface, "/pods/", opts); len(got.names) == 0 || !slices.Equal(got.names, want.names) {
		t.Errorf("status.phase=Running: %v, upstream's scan: %v", got.names, want.names)
	}
	if n := indexLists(t, "f:status.phase"); n == 0 {
		t.Errorf("no LIST of pods used the index f:status.phase")
	}

	// An equality on an indexed label is upstream's own index lookup: the
	// decorator names the indexed labels in every LIST's predicate.
	selector := labels.SelectorFromSet(labels.Set{"app": "a1"})
	listPages(t, indexed, "/pods/", storage.ListOptions{Recursive: true, Predicate: storage.SelectionPredicate{Label: selector, Field: fields.Everything(), GetAttrs: examplePodAttrs}})
	if n := indexLists(t, "l:app"); n == 0 {
		t.Errorf("no LIST of pods used the index l:app")
	}
}

// pages is what a LIST returned, all pages together.
type pages struct {
	names           []string
	resourceVersion uint64
	pages           int
}

func listPages(t *testing.T, s storage.Interface, key string, opts storage.ListOptions) pages {
	t.Helper()
	var p pages
	for {
		list := &example.PodList{}
		if err := s.GetList(context.Background(), key, opts, list); err != nil {
			t.Fatalf("%+v: %v", opts, err)
		}
		p.pages++
		for _, pod := range list.Items {
			p.names = append(p.names, pod.Namespace+"/"+pod.Name)
		}
		listMeta, _ := meta.ListAccessor(list)
		rv, err := s.Versioner().ParseResourceVersion(listMeta.GetResourceVersion())
		if err != nil {
			t.Fatal(err)
		}
		if p.pages == 1 {
			p.resourceVersion = rv
		} else if rv != p.resourceVersion {
			t.Fatalf("page %d at resourceVersion %d, first page at %d", p.pages, rv, p.resourceVersion)
		}
		if listMeta.GetContinue() == "" {
			return p
		}
		opts.ResourceVersion, opts.ResourceVersionMatch = "", ""
		opts.Predicate.Continue = listMeta.GetContinue()
	}
}

// indexLists reads how many LISTs of pods the watch cache served through index.
func indexLists(t *testing.T, index string) float64 {
	t.Helper()
	families, err := legacyregistry.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var total float64
	for _, family := range families {
		if family.GetName() != "apiserver_storage_list_total" {
			continue
		}
		for _, m := range family.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "index" && l.GetValue() == index {
					total += m.GetCounter().GetValue()
				}
			}
		}
	}
	return total
}

// writeAfterFirstList is the watch cache's storage with a write made, and
// seen by the cache, right after the first LIST: it races the lookups of a
// set selector.
type writeAfterFirstList struct {
	storage.Interface
	lists int
	write func()
}

func (s *writeAfterFirstList) GetList(ctx context.Context, key string, opts storage.ListOptions, listObj runtime.Object) error {
	err := s.Interface.GetList(ctx, key, opts, listObj)
	if s.lists++; s.lists == 1 {
		s.write()
	}
	return err
}

// TestSetSelectorRacingAWrite checks the scan a consistent set lookup falls
// back to when a write lands between its lookups: its answer is consistent
// (it sees the write) and it is still one consistent read, not two.
func TestSetSelectorRacingAWrite(t *testing.T) {
	RegisterMetrics()
	cachermetrics.Register()
	s := newIndexedStorage(t)
	indexed := s.(*indexedStorage)
	ctx := context.Background()
	create := func(name, app string) uint64 {
		pod := &example.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, Labels: map[string]string{"app": app}}}
		key, _ := indexed.keyFunc(pod)
		out := &example.Pod{}
		if err := s.Create(ctx, key, pod, out, 0); err != nil {
			t.Fatal(err)
		}
		rv, err := s.Versioner().ObjectResourceVersion(out)
		if err != nil {
			t.Fatal(err)
		}
		return rv
	}
	for i := range 6 {
		create(fmt.Sprintf("pod-%d", i), fmt.Sprintf("a%d", i%3))
	}
	racing := *indexed
	racing.Interface = &writeAfterFirstList{Interface: indexed.Interface, write: func() {
		rv := create("late", "a2")
		// Wait for the cache to hold it, so that the next lookup answers a newer resourceVersion.
		opts := storage.ListOptions{ResourceVersion: fmt.Sprint(rv), ResourceVersionMatch: metav1.ResourceVersionMatchNotOlderThan, Recursive: true, Predicate: storage.Everything}
		if err := indexed.Interface.GetList(ctx, "/pods/", opts, &example.PodList{}); err != nil {
			t.Fatal(err)
		}
	}}

	counter := func(c metrics.CounterMetric) float64 {
		v, err := testutil.GetCounterMetricValue(c)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	consistentReads := cachermetrics.ConsistentReadTotal.WithLabelValues("", "pods", "true", "false")
	scans := setSelectorLists.WithLabelValues("", "pods", "scan")
	readsBefore, scansBefore := counter(consistentReads), counter(scans)
	selector, _ := labels.Parse("app in (a1,a2)")
	opts := storage.ListOptions{Recursive: true, Predicate: storage.SelectionPredicate{Label: selector, Field: fields.Everything(), GetAttrs: examplePodAttrs}}
	got := listPages(t, &racing, "/pods/", opts)

	if n := counter(scans) - scansBefore; n != 1 {
		t.Fatalf("%v set lookups fell back to the scan; the write did not race the lookups", n)
	}
	if n := counter(consistentReads) - readsBefore; n != 1 {
		t.Errorf("one consistent LIST made %v consistent reads", n)
	}
	if !slices.Contains(got.names, "ns/late") {
		t.Errorf("the scan at resourceVersion %d does not see the write made during the request: %v", got.resourceVersion, got.names)
	}
	opts.ResourceVersion, opts.ResourceVersionMatch = fmt.Sprint(got.resourceVersion), metav1.ResourceVersionMatchExact
	if want := listPages(t, indexed.Interface, "/pods/", opts); !slices.Equal(got.names, want.names) {
		t.Errorf("items %v, upstream's scan at resourceVersion %d: %v", got.names, got.resourceVersion, want.names)
	}
}

package cacher

import (
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/apis/example"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/apiserver/pkg/storage/storagebackend"
	"k8s.io/apiserver/pkg/storage/storagebackend/factory"
	"k8s.io/client-go/tools/cache"
)

func TestParseIndexes(t *testing.T) {
	pods, deployments := schema.GroupResource{Resource: "pods"}, schema.GroupResource{Group: "apps", Resource: "deployments"}
	tests := []struct {
		labels, fields []string
		want           Indexes
		wantErr        bool
	}{
		{want: Indexes{Labels: map[schema.GroupResource][]string{}, Fields: map[schema.GroupResource][]string{}}},
		{
			labels: []string{"pods:app", "pods:app.kubernetes.io/name", "deployments.apps:app", "pods:app"},
			fields: []string{"pods:status.phase", "pods:spec.schedulerName", "pods:status.phase"},
			want: Indexes{
				Labels: map[schema.GroupResource][]string{pods: {"app", "app.kubernetes.io/name"}, deployments: {"app"}},
				Fields: map[schema.GroupResource][]string{pods: {"status.phase", "spec.schedulerName"}},
			},
		},
		{labels: []string{"pods"}, wantErr: true},
		{labels: []string{":app"}, wantErr: true},
		{labels: []string{"pods:"}, wantErr: true},
		{labels: []string{"pods:bad key"}, wantErr: true},
		{labels: []string{"pods:a/b/c"}, wantErr: true},
		{fields: []string{"pods:status..phase"}, wantErr: true},
		{fields: []string{"pods:status.phase=Running"}, wantErr: true},
		{fields: []string{"status.phase"}, wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseIndexes(tt.labels, tt.fields)
		if (err != nil) != tt.wantErr {
			t.Errorf("%q %q: error %v, want error %v", tt.labels, tt.fields, err, tt.wantErr)
			continue
		}
		if !tt.wantErr && !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%q %q: %v, want %v", tt.labels, tt.fields, got, tt.want)
		}
	}
	if _, err := ParseIndexes(DefaultLabelIndexes, nil); err != nil {
		t.Errorf("defaults: %v", err)
	}
}

func TestIndexesDecorate(t *testing.T) {
	nodeIndex := func(any) ([]string, error) { return nil, nil }
	upstreamIndexers := &cache.Indexers{storage.FieldIndex("spec.nodeName"): nodeIndex}
	var got cache.Indexers
	// Without a watch cache (upstream's decorator returned etcd's storage)
	// there is nothing to look up by index: the storage is passed through.
	uncached := &struct{ storage.Interface }{}
	pods := schema.GroupResource{Resource: "pods"}
	decorate := Indexes{Labels: map[schema.GroupResource][]string{pods: {"app", "tier"}}}.Decorate(
		func(_ *storagebackend.ConfigForResource, _ string, _ func(runtime.Object) (string, error), _, _ func() runtime.Object, _ storage.AttrFunc, _ storage.IndexerFuncs, indexers *cache.Indexers) (storage.Interface, factory.DestroyFunc, error) {
			got = *indexers
			return uncached, func() {}, nil
		})

	s, _, err := decorate(&storagebackend.ConfigForResource{GroupResource: schema.GroupResource{Resource: "pods"}}, "", nil, nil, nil, nil, nil, upstreamIndexers)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[storage.FieldIndex("spec.nodeName")] == nil {
		t.Fatalf("indexers: %v; want upstream's spec.nodeName and two label indexes", got)
	}
	if len(*upstreamIndexers) != 1 {
		t.Errorf("upstream's indexers were changed: %v", *upstreamIndexers)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}}}
	for key, want := range map[string][]string{"app": {"web"}, "tier": nil} {
		if values, err := got[storage.LabelIndex(key)](pod); err != nil || !reflect.DeepEqual(values, want) {
			t.Errorf("index %s of a pod labelled app=web: %v, %v; want %v", key, values, err, want)
		}
	}
	if s != uncached {
		t.Errorf("pods without a watch cache: storage %T, want etcd's", s)
	}

	// A resource without label indexes is passed through untouched.
	s, _, _ = decorate(&storagebackend.ConfigForResource{GroupResource: schema.GroupResource{Resource: "secrets"}}, "", nil, nil, nil, nil, nil, upstreamIndexers)
	if s != uncached || len(got) != 1 {
		t.Errorf("secrets: storage %T, indexers %v", s, got)
	}
}

func TestFieldIndexes(t *testing.T) {
	pods := schema.GroupResource{Resource: "pods"}
	var got cache.Indexers
	decorate := func(fields ...string) error {
		_, _, err := Indexes{Fields: map[schema.GroupResource][]string{pods: fields}}.Decorate(
			func(_ *storagebackend.ConfigForResource, _ string, _ func(runtime.Object) (string, error), _, _ func() runtime.Object, _ storage.AttrFunc, _ storage.IndexerFuncs, indexers *cache.Indexers) (storage.Interface, factory.DestroyFunc, error) {
				got = *indexers
				return &struct{ storage.Interface }{}, func() {}, nil
			})(&storagebackend.ConfigForResource{GroupResource: pods}, "", nil, func() runtime.Object { return &example.Pod{} }, nil, examplePodAttrs, nil, nil)
		return err
	}
	if err := decorate("status.phase"); err != nil {
		t.Fatal(err)
	}
	running := &example.Pod{Status: example.PodStatus{Phase: example.PodPhase("Running")}}
	if values, err := got[storage.FieldIndex("status.phase")](running); err != nil || !reflect.DeepEqual(values, []string{"Running"}) {
		t.Errorf("status.phase index of a running pod: %v, %v", values, err)
	}
	if err := decorate("status.nothing"); err == nil || !strings.Contains(err.Error(), `no field selector "status.nothing"`) {
		t.Errorf("a field pods cannot be selected by: %v", err)
	}
}

package cacher

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/apiserver/pkg/storage/storagebackend"
	"k8s.io/apiserver/pkg/storage/storagebackend/factory"
	"k8s.io/client-go/tools/cache"
)

func TestParseLabelIndexes(t *testing.T) {
	tests := []struct {
		entries []string
		want    LabelIndexes
		wantErr bool
	}{
		{entries: nil, want: LabelIndexes{}},
		{
			entries: []string{"pods:app", "pods:app.kubernetes.io/name", "deployments.apps:app", "pods:app"},
			want: LabelIndexes{
				{Resource: "pods"}:                       {"app", "app.kubernetes.io/name"},
				{Group: "apps", Resource: "deployments"}: {"app"},
			},
		},
		{entries: []string{"pods"}, wantErr: true},
		{entries: []string{":app"}, wantErr: true},
		{entries: []string{"pods:"}, wantErr: true},
		{entries: []string{"pods:bad key"}, wantErr: true},
		{entries: []string{"pods:a/b/c"}, wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseLabelIndexes(tt.entries)
		if (err != nil) != tt.wantErr {
			t.Errorf("%q: error %v, want error %v", tt.entries, err, tt.wantErr)
			continue
		}
		if !tt.wantErr && !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%q: %v, want %v", tt.entries, got, tt.want)
		}
	}
	if _, err := ParseLabelIndexes(DefaultLabelIndexes); err != nil {
		t.Errorf("defaults: %v", err)
	}
}

func TestLabelIndexesDecorate(t *testing.T) {
	nodeIndex := func(any) ([]string, error) { return nil, nil }
	upstreamIndexers := &cache.Indexers{storage.FieldIndex("spec.nodeName"): nodeIndex}
	var got cache.Indexers
	// Without a watch cache (upstream's decorator returned etcd's storage)
	// there is nothing to look up by index: the storage is passed through.
	uncached := &struct{ storage.Interface }{}
	decorate := LabelIndexes{{Resource: "pods"}: {"app", "tier"}}.Decorate(
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

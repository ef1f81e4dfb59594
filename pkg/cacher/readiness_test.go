package cacher

import (
	"errors"
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/registry/generic"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/apiserver/pkg/storage/storagebackend"
	"k8s.io/apiserver/pkg/storage/storagebackend/factory"
	"k8s.io/client-go/tools/cache"
)

// fakeStorage is a storage whose readiness the test sets; nothing else of
// it is used.
type fakeStorage struct {
	storage.Interface
	ready bool
}

func (f *fakeStorage) ReadinessCheck() error {
	if !f.ready {
		return storage.ErrStorageNotReady
	}
	return nil
}

type fakeGetter struct{ next *fakeStorage }

func (g *fakeGetter) GetRESTOptions(gr schema.GroupResource, _ runtime.Object) (generic.RESTOptions, error) {
	if gr.Resource == "broken" {
		return generic.RESTOptions{}, errors.New("no storage")
	}
	return generic.RESTOptions{
		StorageConfig: &storagebackend.ConfigForResource{GroupResource: gr},
		Decorator: func(*storagebackend.ConfigForResource, string, func(runtime.Object) (string, error), func() runtime.Object, func() runtime.Object, storage.AttrFunc, storage.IndexerFuncs, *cache.Indexers) (storage.Interface, factory.DestroyFunc, error) {
			return g.next, func() {}, nil
		},
	}, nil
}

func create(t *testing.T, getter generic.RESTOptionsGetter, gr schema.GroupResource) factory.DestroyFunc {
	t.Helper()
	opts, err := getter.GetRESTOptions(gr, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, destroy, err := opts.Decorator(opts.StorageConfig, "", nil, nil, nil, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return destroy
}

func TestReadiness(t *testing.T) {
	r := NewReadiness()
	fake := &fakeGetter{}
	getter := WithStorageDecorator(fake, r.Decorate)
	pods := schema.GroupResource{Resource: "pods"}
	widgets := schema.GroupResource{Group: "example.com", Resource: "widgets"}

	if known, _ := r.Ready(pods); known {
		t.Fatal("pods known before their storage exists")
	}
	podStorage := &fakeStorage{}
	fake.next = podStorage
	create(t, getter, pods)
	if known, ready := r.Ready(pods); !known || ready {
		t.Fatalf("filling cache: known=%v ready=%v, want known and not ready", known, ready)
	}
	podStorage.ready = true
	if _, ready := r.Ready(pods); !ready {
		t.Fatal("filled cache not ready")
	}

	// Two storages of one resource (a CRD's versions): ready only when both are.
	v1 := &fakeStorage{ready: true}
	fake.next = v1
	create(t, getter, widgets)
	v2 := &fakeStorage{}
	fake.next = v2
	destroyV2 := create(t, getter, widgets)
	if _, ready := r.Ready(widgets); ready {
		t.Fatal("ready while one of two storages fills")
	}
	// A destroyed storage (a deleted CRD version) no longer counts.
	destroyV2()
	if known, ready := r.Ready(widgets); !known || !ready {
		t.Fatalf("after destroy: known=%v ready=%v", known, ready)
	}

	if _, err := getter.GetRESTOptions(schema.GroupResource{Resource: "broken"}, nil); err == nil {
		t.Error("getter error was swallowed")
	}
}

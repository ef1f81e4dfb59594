package cacher

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/apis/example"
	examplev1 "k8s.io/apiserver/pkg/apis/example/v1"
	"k8s.io/apiserver/pkg/registry/generic"
	genericregistry "k8s.io/apiserver/pkg/registry/generic/registry"
	"k8s.io/apiserver/pkg/storage"
	cacherstorage "k8s.io/apiserver/pkg/storage/cacher"
	etcd3testing "k8s.io/apiserver/pkg/storage/etcd3/testing"
)

// newIndexedStorage builds the storage the apiserver builds for a
// resource with label indexes (newPodStorage, decorated by Indexes).
func newIndexedStorage(t *testing.T) storage.Interface {
	s := newPodStorage(t, testIndexes.Decorate)
	if _, ok := s.(*indexedStorage); !ok {
		t.Fatalf("storage %T is not label-indexed", s)
	}
	return s
}

// testIndexes are the tests' indexes of example Pods.
var testIndexes = Indexes{
	Labels: map[schema.GroupResource][]string{{Resource: "pods"}: {"foo", "app"}},
	Fields: map[schema.GroupResource][]string{{Resource: "pods"}: {"status.phase"}},
}

// newPodStorage builds upstream's StorageWithCacher (etcd3 storage, watch
// cache, cache delegator) over a real etcd, decorated by decorate, for
// upstream's example Pods (the type upstream's storage tests use), and
// returns it once its cache is filled.
func newPodStorage(t *testing.T, decorate func(generic.StorageDecorator) generic.StorageDecorator) storage.Interface {
	return newPodStorageOn(t, genericregistry.StorageWithCacher(), decorate)
}

// newPodStorageOn is newPodStorage with another storage than upstream's
// StorageWithCacher under decorate.
func newPodStorageOn(t *testing.T, cached generic.StorageDecorator, decorate func(generic.StorageDecorator) generic.StorageDecorator) storage.Interface {
	scheme := runtime.NewScheme()
	metav1.AddToGroupVersion(scheme, metav1.SchemeGroupVersion)
	utilruntime.Must(example.AddToScheme(scheme))
	utilruntime.Must(examplev1.AddToScheme(scheme))
	pb := protobuf.NewSerializer(scheme, scheme)
	codec := serializer.NewCodecFactory(scheme).CodecForVersions(pb, pb, schema.GroupVersions{examplev1.SchemeGroupVersion}, nil)

	server, config := etcd3testing.NewUnsecuredEtcd3TestClientServer(t)
	t.Cleanup(func() { server.Terminate(t) })
	config.Codec = codec
	resourceConfig := config.ForResource(schema.GroupResource{Resource: "pods"})
	resourceConfig.EventsHistoryWindow = cacherstorage.DefaultEventFreshDuration
	s, destroy, err := decorate(cached)(resourceConfig, podsPrefix, podKey,
		func() runtime.Object { return &example.Pod{} },
		func() runtime.Object { return &example.PodList{} },
		examplePodAttrs, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(destroy)
	// The tests expect a storage that serves; the cache fills first.
	if err := wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		return s.ReadinessCheck() == nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	return s
}

// podsPrefix is where the tests' storages keep example Pods.
const podsPrefix = "/pods/"

func podKey(obj runtime.Object) (string, error) { return storage.NamespaceKeyFunc(podsPrefix, obj) }

func examplePodAttrs(obj runtime.Object) (labels.Set, fields.Set, error) {
	pod := obj.(*example.Pod)
	return labels.Set(pod.Labels), fields.Set{
		"metadata.name":      pod.Name,
		"metadata.namespace": pod.Namespace,
		"spec.nodeName":      pod.Spec.NodeName,
		"spec.restartPolicy": string(pod.Spec.RestartPolicy),
		"status.phase":       string(pod.Status.Phase),
	}, nil
}

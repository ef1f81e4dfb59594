package cacher

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/generic"
	genericregistry "k8s.io/apiserver/pkg/registry/generic/registry"
	"k8s.io/apiserver/pkg/registry/rest"
	cacherstorage "k8s.io/apiserver/pkg/storage/cacher"
	"k8s.io/kubernetes/pkg/api/legacyscheme"
	api "k8s.io/kubernetes/pkg/apis/core"
	podstore "k8s.io/kubernetes/pkg/registry/core/pod/storage"
	"k8s.io/kubernetes/pkg/registry/registrytest"

	"github.com/bulwark-k8s/bulwark/internal/seed"
)

// TestSharedValuesStayUnchanged runs upstream's pod registry (its
// strategies, binding and status subresources) over a watch cache whose
// pods share their values, with readers serializing the cache's pods all
// along, and a workload of creates, bindings (which set labels on the pod
// they read), status and label updates and deletes. Afterwards every pod
// the workload did not write is deep-equal to what it was before, and
// every pod in the cache is what etcd holds. Run with the race detector
// (make test-unit does), a write into a shared value while a reader
// serializes it fails the test even when it wrote the same value.
func TestSharedValuesStayUnchanged(t *testing.T) {
	RegisterMetrics()
	etcdStorage, _ := registrytest.NewEtcdStorage(t, "")
	etcdStorage.EventsHistoryWindow = cacherstorage.DefaultEventFreshDuration
	storage, err := podstore.NewStorage(generic.RESTOptions{
		StorageConfig: etcdStorage, Decorator: ShareValues(genericregistry.StorageWithCacher()),
		DeleteCollectionWorkers: 1, ResourcePrefix: "pods",
	}, nil, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(storage.Pod.DestroyFunc)

	d := seed.Data{Pods: 80, Nodes: 8, Namespaces: 2, Apps: 4, Workloads: true}
	now := seed.Now()
	internal := func(v1 *corev1.Pod) *api.Pod {
		var p api.Pod
		legacyscheme.Scheme.Default(v1) // as the API decodes it
		if err := legacyscheme.Scheme.Convert(v1, &p, nil); err != nil {
			t.Fatal(err)
		}
		return &p
	}
	for i := range d.Pods {
		w := d.PodWrites(i, now)
		ctx := inNamespace(w.Create.Namespace)
		if _, err := storage.Pod.Create(ctx, internal(w.Create), rest.ValidateAllObjectFunc, &metav1.CreateOptions{}); err != nil {
			t.Fatalf("create %s: %v", w.Create.Name, err)
		}
		if i%2 == 0 { // half of them running before the snapshot
			bind(t, storage, i, d, now)
		}
	}

	// The cache's pods, as every reader gets them; a copy to compare with.
	cached := func() map[string]*api.Pod {
		t.Helper()
		var pods map[string]*api.Pod
		// A consistent LIST from the cache: it has caught up with etcd.
		err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
			list, err := storage.Pod.List(inNamespace(metav1.NamespaceAll), &metainternalversion.ListOptions{})
			if err != nil {
				return false, err
			}
			pods = map[string]*api.Pod{}
			for _, p := range list.(*api.PodList).Items {
				pods[p.Namespace+"/"+p.Name] = &p
			}
			return true, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return pods
	}
	before := map[string]*api.Pod{}
	for key, p := range cached() {
		before[key] = p.DeepCopy()
	}
	if len(before) != d.Pods {
		t.Fatalf("%d pods in the cache, want %d", len(before), d.Pods)
	}
	// Pods 1, 9, 17... are one ReplicaSet's: their containers' resources
	// are one map in the cache.
	if c := cached(); !same(c[key(d, 9)].Spec.Containers[0].Resources.Requests, c[key(d, 17)].Spec.Containers[0].Resources.Requests) {
		t.Fatalf("%s and %s do not share their resources: values are not shared, the test proves nothing", key(d, 9), key(d, 17))
	}

	// Readers: serialize every pod of the cache, and every watch event.
	ctx, stop := context.WithCancel(context.Background())
	var readers sync.WaitGroup
	encoder := legacyscheme.Codecs.LegacyCodec(corev1.SchemeGroupVersion)
	readers.Go(func() {
		for ctx.Err() == nil {
			list, err := storage.Pod.List(inNamespace(metav1.NamespaceAll), &metainternalversion.ListOptions{ResourceVersion: "0"})
			if err != nil {
				t.Error(err)
				return
			}
			if _, err := runtime.Encode(encoder, list); err != nil {
				t.Error(err)
				return
			}
		}
	})
	w, err := storage.Pod.Watch(inNamespace(metav1.NamespaceAll), &metainternalversion.ListOptions{ResourceVersion: "0"})
	if err != nil {
		t.Fatal(err)
	}
	readers.Go(func() {
		for e := range w.ResultChan() {
			if _, err := runtime.Encode(encoder, e.Object); err != nil {
				t.Error(err)
			}
		}
	})

	// The workload: what kube-scheduler, the kubelets and controllers do.
	written := map[string]bool{}
	for i := range d.Pods {
		k := key(d, i)
		switch {
		case i%2 == 1 && i%3 == 0: // scheduled and reported running
			bind(t, storage, i, d, now)
			written[k] = true
		case i%4 == 0: // relabelled, as a controller adopting it would
			ctx := inNamespace(d.PodWrites(i, now).Create.Namespace)
			obj, err := storage.Pod.Get(ctx, before[k].Name, &metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			p := obj.(*api.Pod).DeepCopy()
			p.Labels["relabelled"] = "true"
			if _, _, err := storage.Pod.Update(ctx, p.Name, rest.DefaultUpdatedObjectInfo(p), rest.ValidateAllObjectFunc, rest.ValidateAllObjectUpdateFunc, false, &metav1.UpdateOptions{}); err != nil {
				t.Fatalf("relabel %s: %v", k, err)
			}
			written[k] = true
		case i%10 == 5:
			ctx := inNamespace(d.PodWrites(i, now).Create.Namespace)
			if _, _, err := storage.Pod.Delete(ctx, before[k].Name, rest.ValidateAllObjectFunc, metav1.NewDeleteOptions(0)); err != nil {
				t.Fatalf("delete %s: %v", k, err)
			}
			written[k] = true
		}
	}
	after := cached()
	stop()
	w.Stop()
	readers.Wait()

	for k, p := range before {
		if !written[k] && !reflect.DeepEqual(after[k], p) {
			t.Errorf("pod %s changed though nothing wrote it", k)
		}
	}
	for k, p := range after {
		ctx := inNamespace(p.Namespace)
		stored, err := storage.Pod.Get(ctx, p.Name, &metav1.GetOptions{}) // from etcd
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(stored, p) {
			t.Errorf("the cache's pod %s is not what etcd holds", k)
		}
	}
	if n := len(written); n < d.Pods/3 {
		t.Errorf("the workload wrote %d pods", n)
	}
}

// inNamespace is the context of a request for pods in namespace ns.
func inNamespace(ns string) context.Context {
	ctx := genericapirequest.WithNamespace(genericapirequest.NewContext(), ns)
	return genericapirequest.WithRequestInfo(ctx, &genericapirequest.RequestInfo{IsResourceRequest: true, APIVersion: "v1", Resource: "pods", Namespace: ns})
}

func key(d seed.Data, i int) string {
	return seed.NamespaceName(d.PodNamespace(i)) + "/" + d.PodName(i)
}

// bind binds pod i to its node and writes its status, as kube-scheduler
// and the kubelet do.
func bind(t *testing.T, storage podstore.PodStorage, i int, d seed.Data, now metav1.Time) {
	t.Helper()
	w := d.PodWrites(i, now)
	ctx := inNamespace(w.Create.Namespace)
	var binding api.Binding
	if err := legacyscheme.Scheme.Convert(w.Binding, &binding, nil); err != nil {
		t.Fatal(err)
	}
	// What the PodTopologyLabels admission plugin adds: the binding sets
	// them into the labels of the pod it read.
	binding.Labels = map[string]string{"topology.kubernetes.io/zone": fmt.Sprintf("zone-%d", i%3)}
	if _, err := storage.Binding.Create(ctx, binding.Name, &binding, rest.ValidateAllObjectFunc, &metav1.CreateOptions{}); err != nil {
		t.Fatalf("bind %s: %v", binding.Name, err)
	}
	obj, err := storage.Pod.Get(ctx, binding.Name, &metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p := obj.(*api.Pod).DeepCopy()
	if err := legacyscheme.Scheme.Convert(&w.Status, &p.Status, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := storage.Status.Update(ctx, p.Name, rest.DefaultUpdatedObjectInfo(p), rest.ValidateAllObjectFunc, rest.ValidateAllObjectUpdateFunc, false, &metav1.UpdateOptions{}); err != nil {
		t.Fatalf("status of %s: %v", p.Name, err)
	}
}

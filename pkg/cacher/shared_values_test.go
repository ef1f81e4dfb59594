package cacher

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/kubernetes/pkg/api/legacyscheme"
	api "k8s.io/kubernetes/pkg/apis/core"
	_ "k8s.io/kubernetes/pkg/apis/core/install"

	"github.com/bulwark-k8s/bulwark/internal/seed"
)

// internalDecoder decodes stored objects as the apiserver's storage does:
// into the internal version.
var internalDecoder = legacyscheme.Codecs.UniversalDecoder(schema.GroupVersion{Version: runtime.APIVersionInternal})

// seededPods are n pods of a cluster's shape as stored in etcd.
func seededPods(t testing.TB, n int) [][]byte {
	t.Helper()
	d := seed.Data{Pods: n, Nodes: 10, Namespaces: 2, Apps: 5, Workloads: true}
	now := seed.Now()
	var stored [][]byte
	for i := range n {
		b, err := seed.Encode(d.Pod(i, now))
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, b)
	}
	return stored
}

func decodeAll(t testing.TB, decoder runtime.Decoder, stored [][]byte) []runtime.Object {
	t.Helper()
	var objs []runtime.Object
	for _, b := range stored {
		obj, err := runtime.Decode(decoder, b)
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, obj)
	}
	return objs
}

// TestShareValues: shared objects are equal to the same objects decoded
// apart, and share what they have in common, as the watch cache holds them
// (internal types) and as an informer does (v1).
func TestShareValues(t *testing.T) {
	stored := seededPods(t, 40)
	for name, decoder := range map[string]runtime.Decoder{"internal": internalDecoder, "v1": seed.Codec} {
		t.Run(name, func(t *testing.T) {
			s := NewValueSharer(schema.GroupResource{Resource: "pods"})
			shared, apart := decodeAll(t, decoder, stored), decodeAll(t, decoder, stored)
			for _, obj := range shared {
				s.Share(obj)
			}
			for i := range shared {
				if !reflect.DeepEqual(shared[i], apart[i]) {
					t.Fatalf("pod %d changed by sharing", i)
				}
			}
			// Pods 0, 10, 20, 30 are one ReplicaSet's: the first keeps its
			// values, the second's become the shared ones.
			requests := func(i int) any {
				switch p := shared[i].(type) {
				case *api.Pod:
					return p.Spec.Containers[0].Resources.Requests
				case *corev1.Pod:
					return p.Spec.Containers[0].Resources.Requests
				}
				return nil
			}
			owners := func(i int) any { return reflect.ValueOf(shared[i]).Elem().FieldByName("OwnerReferences").Interface() }
			// kube-controller-manager's managed fields name the owner.
			createdFields := func(i int) any {
				return reflect.ValueOf(shared[i]).Elem().FieldByName("ManagedFields").Index(0).FieldByName("FieldsV1").Interface()
			}
			for _, v := range []func(int) any{requests, owners, createdFields} {
				if !same(v(10), v(20)) || !same(v(10), v(30)) {
					t.Errorf("pods of one ReplicaSet do not share %T", v(10))
				}
				if same(v(0), v(10)) {
					t.Errorf("the first pod's %T is shared; the first keeps its own", v(0))
				}
			}
		})
	}
}

// same tells whether two maps or slices are the same value in memory.
func same(a, b any) bool {
	return reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
}

// BenchmarkShareValues: the CPU a watch cache spends sharing the values
// of one pod it takes in, against decoding it.
func BenchmarkShareValues(b *testing.B) {
	stored := seededPods(b, 1000)
	for _, share := range []bool{false, true} {
		name := map[bool]string{false: "decode", true: "decode+share"}[share]
		b.Run(name, func(b *testing.B) {
			s := NewValueSharer(schema.GroupResource{Resource: "pods"})
			for i := 0; b.Loop(); i++ {
				obj, err := runtime.Decode(internalDecoder, stored[i%len(stored)])
				if err != nil {
					b.Fatal(err)
				}
				if share {
					s.Share(obj)
				}
			}
		})
	}
}

package seed

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// TestEncoding: built-in objects are stored as the apiserver stores them,
// protobuf in its envelope, and decode to what was built; custom objects
// as JSON; a pod is about 750 bytes.
func TestEncoding(t *testing.T) {
	d := Data{Pods: 10, Nodes: 3, Namespaces: 2, Apps: 5}
	now := Now()
	n := 0
	for o := range d.Objects(now) {
		n++
		data, err := Encode(o.Object)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(data, []byte("k8s\x00")) {
			t.Fatalf("%s: not the apiserver's protobuf encoding", o.Key)
		}
		decoded, err := runtime.Decode(Codec, data)
		if err != nil {
			t.Fatalf("%s: %v", o.Key, err)
		}
		if pod, ok := decoded.(*corev1.Pod); ok {
			if want := d.Pod(0, now); pod.Name == want.Name && pod.Spec.NodeName != want.Spec.NodeName {
				t.Errorf("decoded %s differs", pod.Name)
			}
			if len(data) < 3000 || len(data) > 4200 {
				t.Errorf("pod %s is %d bytes in storage, want about 3.5 KiB", pod.Name, len(data))
			}
		}
	}
	if want := 2*2 + 3*2 + 10; n != want {
		t.Errorf("%d objects, want %d", n, want)
	}
	gvk := schema.GroupVersionKind{Group: "example.com", Version: "v1", Kind: "Widget"}
	for o := range CustomObjects(gvk, "widgets", "default", 1, map[string]any{"size": "large"}, now) {
		data, err := Encode(o.Object)
		if err != nil {
			t.Fatal(err)
		}
		if o.Key != "/registry/example.com/widgets/default/w-0" || !bytes.HasPrefix(data, []byte(`{"apiVersion":"example.com/v1","kind":"Widget"`)) {
			t.Errorf("custom object %s: %s", o.Key, data)
		}
	}
}

// TestLargeClusterData: every kind a large cluster holds is stored in its
// encoding, Count counts what Objects yields, a pod is owned by its app's
// current ReplicaSet and listed in its Service's EndpointSlice.
func TestLargeClusterData(t *testing.T) {
	d := Data{Pods: 250, Nodes: 7, Namespaces: 2, Apps: 1, Workloads: true, ConfigMaps: 3, Secrets: 4, Events: 9, Widgets: 5}
	now := Now()
	kinds := map[string]int{}
	for o := range d.Objects(now) {
		data, err := Encode(o.Object)
		if err != nil {
			t.Fatal(err)
		}
		kind := o.Object.GetObjectKind().GroupVersionKind().Kind
		kinds[kind]++
		if _, ok := o.Object.(*unstructured.Unstructured); ok {
			if !bytes.HasPrefix(data, []byte(`{"apiVersion":`)) {
				t.Errorf("%s: not JSON", o.Key)
			}
			continue
		}
		if _, err := runtime.Decode(Codec, data); err != nil {
			t.Errorf("%s: %v", o.Key, err)
		}
	}
	want := map[string]int{
		"Namespace": 2, "ServiceAccount": 2, "Node": 7, "Lease": 7, "Pod": 250,
		"Deployment": 2, "ReplicaSet": 4, "Service": 2, "IPAddress": 2, "EndpointSlice": 4, // 125 pods a namespace: two slices
		"ConfigMap": 3, "Secret": 4, "Event": 9, "CustomResourceDefinition": 1, "Widget": 5,
	}
	total := 0
	for kind, n := range want {
		total += n
		if kinds[kind] != n {
			t.Errorf("%d %s, want %d", kinds[kind], kind, n)
		}
	}
	if got := d.Count(); got != total {
		t.Errorf("Count() = %d, Objects yields %d", got, total)
	}

	pod := d.Pod(3, now)
	rs := ReplicaSet(d.Deployment(d.PodNamespace(3), 0, now), replicaSetName(0), 125, now)
	if len(pod.OwnerReferences) != 1 || pod.OwnerReferences[0].UID != rs.UID || pod.Labels["pod-template-hash"] != rs.Labels["pod-template-hash"] {
		t.Errorf("pod owned by %+v, want ReplicaSet %s", pod.OwnerReferences, rs.UID)
	}
	found := false
	for _, s := range d.EndpointSlices(d.PodNamespace(3), 0, now) {
		for _, e := range s.Endpoints {
			found = found || (e.TargetRef.UID == pod.UID && e.Addresses[0] == pod.Status.PodIP && *e.NodeName == pod.Spec.NodeName)
		}
	}
	if !found {
		t.Errorf("pod %s is in no EndpointSlice of its Service", pod.Name)
	}
}

// TestPodNames: pods are named as the ReplicaSet controller names them,
// each its own name, so that a namespace's pods lie in key order by
// ReplicaSet, as a cluster's do.
func TestPodNames(t *testing.T) {
	d := Data{Pods: 20000, Nodes: 10, Namespaces: 4, Apps: 50}
	seen := map[string]bool{}
	keys := make([]string, d.Pods)
	for i := range d.Pods {
		name, rs := d.PodName(i), replicaSetName(i%d.Apps)
		if !strings.HasPrefix(name, rs+"-") || len(name) != len(rs)+6 {
			t.Fatalf("pod %d is %q, want its ReplicaSet's name %q and five characters", i, name, rs)
		}
		if seen[name] {
			t.Fatalf("pod %d is %q, as another pod", i, name)
		}
		seen[name] = true
		keys[i] = NamespaceName(d.PodNamespace(i)) + "/" + name
	}
	slices.Sort(keys)
	// A run: the pods of one ReplicaSet (namespace/name) side by side.
	owner := func(key string) string { return key[:strings.LastIndex(key, "-")] }
	runs := 0
	for k, key := range keys {
		if k == 0 || owner(key) != owner(keys[k-1]) {
			runs++
		}
	}
	if want := d.Namespaces * d.Apps; runs != want {
		t.Errorf("the pods lie in %d runs of one ReplicaSet's in key order, want %d", runs, want)
	}
}

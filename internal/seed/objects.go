package seed

import (
	"fmt"
	"iter"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
)

// Data is the shape of a seeded cluster: pods spread over namespaces, nodes
// and apps (each app's pods in every namespace, so that a namespaced label
// LIST returns a slice of what the cluster-wide one returns), nodes with
// their Leases; optionally what else a large cluster holds.
type Data struct {
	Pods, Nodes, Namespaces, Apps int
	// PodAnnotationBytes, if set, adds an annotation of that size to every
	// pod (as a last-applied-configuration would).
	PodAnnotationBytes int
	// Workloads makes each app's pods in a namespace a Deployment's: the
	// Deployment, its ReplicaSet owning the pods and an older one scaled to
	// zero, a Service selecting them (in ServiceCIDR) and its EndpointSlice.
	Workloads bool
	// ConfigMaps, Secrets and Events, spread over the namespaces; the
	// Events are those pods' starts leave.
	ConfigMaps, Secrets, Events int
	// Widgets are objects of a custom resource (WidgetCRD, stored with
	// them), spread over the namespaces, labelled by app as pods are.
	Widgets int
}

// Count is the number of objects Objects yields.
func (d Data) Count() int {
	n := 2*d.Namespaces + 2*d.Nodes + d.Pods + d.ConfigMaps + d.Secrets + d.Events + d.Widgets
	if d.Widgets > 0 {
		n++
	}
	if d.Workloads {
		for ns := range d.Namespaces {
			for a := range d.Apps {
				n += 5 + max(1, (len(d.podsOf(ns, a))+endpointsPerSlice-1)/endpointsPerSlice)
			}
		}
	}
	return n
}

// The names every object of Data is derived from.
func NamespaceName(i int) string { return fmt.Sprintf("ns-%d", i) }
func NodeName(i int) string      { return fmt.Sprintf("node-%d", i) }
func AppName(i int) string       { return fmt.Sprintf("app-%d", i) }

// PodName is pod i's name as the ReplicaSet controller gives it: its
// ReplicaSet's name and five random characters (generateName). So, as in a
// cluster, a namespace's pods lie in etcd and in a watch cache's key order
// by workload, the pods of one ReplicaSet side by side; what a page of a
// LIST reads in turn depends on it.
func (d Data) PodName(i int) string {
	apps := max(1, d.Apps)
	// The five characters of the app's k-th pod are those of k times a
	// number prime to 27 (so every k up to 27⁵ has its own), not in k's order.
	return replicaSetName(i%apps) + "-" + randomSuffix(uint64(i/apps)*7919)
}

// randomSuffix are the five characters the apiserver draws for a
// generated name (k8s.io/apimachinery's rand.String), made of n: its last
// five digits in base 27.
func randomSuffix(n uint64) string {
	const alphabet = "bcdfghjklmnpqrstvwxz2456789"
	var b [5]byte
	for k := range b {
		b[k] = alphabet[n%uint64(len(alphabet))]
		n /= uint64(len(alphabet))
	}
	return string(b[:])
}

// PodNamespace is the index of pod i's namespace.
func (d Data) PodNamespace(i int) int { return (i / max(1, d.Apps)) % d.Namespaces }

// Objects are the namespaces (with their default service accounts), the
// nodes with their Leases, the workloads, the pods and the other objects
// Data asks for, at creation time now.
func (d Data) Objects(now metav1.Time) iter.Seq[Object] {
	return func(yield func(Object) bool) {
		if d.Widgets > 0 && !yield(Object{"/registry/apiextensions.k8s.io/customresourcedefinitions/" + WidgetResource + "." + WidgetGroup, WidgetCRD(now)}) {
			return
		}
		for i := range d.Namespaces {
			name := NamespaceName(i)
			if !yield(Object{"/registry/namespaces/" + name, Namespace(name, now)}) ||
				!yield(Object{"/registry/serviceaccounts/" + name + "/default", ServiceAccount(name, now)}) {
				return
			}
		}
		for i := range d.Nodes {
			if !yield(Object{"/registry/minions/" + NodeName(i), Node(i, now)}) ||
				!yield(Object{"/registry/leases/kube-node-lease/" + NodeName(i), Lease(i, now)}) {
				return
			}
		}
		if d.Workloads {
			for o := range d.workloadObjects(now) {
				if !yield(o) {
					return
				}
			}
		}
		for p := range d.PodObjects(now) {
			if !yield(p) {
				return
			}
		}
		payload := strings.Repeat("x", 1024)
		for i := range d.ConfigMaps {
			cm := configMap(fmt.Sprintf("config-%d", i), NamespaceName(i%d.Namespaces), payload, now)
			if !yield(Object{"/registry/configmaps/" + cm.Namespace + "/" + cm.Name, cm}) {
				return
			}
		}
		for i := range d.Secrets {
			s := d.Secret(i, now)
			if !yield(Object{"/registry/secrets/" + s.Namespace + "/" + s.Name, s}) {
				return
			}
		}
		for i := range d.Events {
			e := d.Event(i, now)
			if !yield(Object{"/registry/events/" + e.Namespace + "/" + e.Name, e}) {
				return
			}
		}
		for i := range d.Widgets {
			w := d.Widget(i, now)
			if !yield(Object{fmt.Sprintf("/registry/%s/%s/%s/%s", WidgetGroup, WidgetResource, w.GetNamespace(), w.GetName()), w}) {
				return
			}
		}
	}
}

// PodObjects are the pods alone.
func (d Data) PodObjects(now metav1.Time) iter.Seq[Object] {
	return func(yield func(Object) bool) {
		for i := range d.Pods {
			p := d.Pod(i, now)
			if !yield(Object{"/registry/pods/" + p.Namespace + "/" + p.Name, p}) {
				return
			}
		}
	}
}

// Now is a creation time as the apiserver writes it: whole seconds.
func Now() metav1.Time { return metav1.NewTime(time.Now().Truncate(time.Second)) }

// ConfigMaps are n ConfigMaps <prefix>-<i> in namespace, each with a
// payload of size bytes.
func ConfigMaps(namespace, prefix string, n, size int, now metav1.Time) iter.Seq[Object] {
	payload := strings.Repeat("x", size)
	return func(yield func(Object) bool) {
		for i := range n {
			name := fmt.Sprintf("%s-%d", prefix, i)
			if !yield(Object{"/registry/configmaps/" + namespace + "/" + name, configMap(name, namespace, payload, now)}) {
				return
			}
		}
	}
}

// CustomObjects are n objects <resource's first letter>-<i> of a custom
// resource in namespace, with spec, stored as the apiserver stores custom
// resources: JSON under /registry/<group>/<resource>.
func CustomObjects(gvk schema.GroupVersionKind, resource, namespace string, n int, spec map[string]any, now metav1.Time) iter.Seq[Object] {
	return func(yield func(Object) bool) {
		for i := range n {
			name := fmt.Sprintf("%c-%d", resource[0], i)
			u := &unstructured.Unstructured{Object: map[string]any{"spec": spec}}
			u.SetGroupVersionKind(gvk)
			u.SetName(name)
			u.SetNamespace(namespace)
			u.SetUID(types.UID(fmt.Sprintf("00000000-0000-4000-8000-%012x", hash(namespace+"/"+name))))
			u.SetCreationTimestamp(now)
			if !yield(Object{fmt.Sprintf("/registry/%s/%s/%s/%s", gvk.Group, resource, namespace, name), u}) {
				return
			}
		}
	}
}

func configMap(name, namespace, payload string, now metav1.Time) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: objectMeta(name, namespace, now),
		Data:       map[string]string{"payload": payload},
	}
}

func objectMeta(name, namespace string, now metav1.Time) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name: name, Namespace: namespace, CreationTimestamp: now,
		UID: types.UID(fmt.Sprintf("00000000-0000-4000-8000-%012x", hash(namespace+"/"+name))),
	}
}

func hash(s string) uint64 {
	var h uint64 = 14695981039346656037
	for i := 0; i < len(s); i++ {
		h = (h ^ uint64(s[i])) * 1099511628211
	}
	return h & 0xffffffffffff
}

// Namespace is an active namespace.
func Namespace(name string, now metav1.Time) *corev1.Namespace {
	return &corev1.Namespace{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
		ObjectMeta: objectMeta(name, "", now),
		Spec:       corev1.NamespaceSpec{Finalizers: []corev1.FinalizerName{corev1.FinalizerKubernetes}},
		Status:     corev1.NamespaceStatus{Phase: corev1.NamespaceActive},
	}
}

// ServiceAccount is the default service account of a namespace, which
// kube-controller-manager would create; pod admission needs it.
func ServiceAccount(namespace string, now metav1.Time) *corev1.ServiceAccount {
	return &corev1.ServiceAccount{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
		ObjectMeta: objectMeta("default", namespace, now),
	}
}

// Node is a ready node of 32 CPUs, the i-th.
func Node(i int, now metav1.Time) *corev1.Node {
	n := &corev1.Node{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Node"},
		ObjectMeta: objectMeta(NodeName(i), "", now),
		Spec:       corev1.NodeSpec{PodCIDR: fmt.Sprintf("10.%d.%d.0/24", 64+i/256, i%256)},
		Status: corev1.NodeStatus{
			Capacity:    corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("32"), corev1.ResourceMemory: resource.MustParse("128Gi"), corev1.ResourcePods: resource.MustParse("110")},
			Allocatable: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("31"), corev1.ResourceMemory: resource.MustParse("120Gi"), corev1.ResourcePods: resource.MustParse("110")},
			Conditions:  []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", LastHeartbeatTime: now, LastTransitionTime: now}},
			Addresses:   []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("192.0.%d.%d", i/256, i%256)}, {Type: corev1.NodeHostName, Address: NodeName(i)}},
			NodeInfo:    corev1.NodeSystemInfo{KubeletVersion: "v1.37.2", OperatingSystem: "linux", Architecture: "amd64", ContainerRuntimeVersion: "containerd://2.1.0"},
		},
	}
	n.Labels = map[string]string{"kubernetes.io/hostname": n.Name, "kubernetes.io/os": "linux", "topology.kubernetes.io/zone": nodeZone(i)}
	return n
}

// nodeZone is the i-th node's zone.
func nodeZone(i int) string { return fmt.Sprintf("zone-%d", i%3) }

// Lease is the i-th node's Lease in kube-node-lease.
func Lease(i int, now metav1.Time) *coordinationv1.Lease {
	return &coordinationv1.Lease{
		TypeMeta:   metav1.TypeMeta{APIVersion: "coordination.k8s.io/v1", Kind: "Lease"},
		ObjectMeta: objectMeta(NodeName(i), "kube-node-lease", now),
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity:       ptr.To(NodeName(i)),
			LeaseDurationSeconds: ptr.To[int32](40),
			RenewTime:            &metav1.MicroTime{Time: now.Time},
		},
	}
}

package main

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
)

// Data is the shape of the seeded cluster.
type Data struct {
	Pods, Nodes, Namespaces, Apps int
}

// The names every scenario derives its requests from.
func nsName(i int) string   { return fmt.Sprintf("ns-%d", i) }
func nodeName(i int) string { return fmt.Sprintf("node-%d", i) }
func appName(i int) string  { return fmt.Sprintf("app-%d", i) }
func podName(i int) string  { return fmt.Sprintf("pod-%d", i) }

// podNamespace spreads each app over all namespaces, so a namespaced label
// LIST returns a slice of what the cluster-wide one returns.
func (d Data) podNamespace(i int) int { return (i / d.Apps) % d.Namespaces }

// seed writes the data set straight into etcd in the apiserver's storage
// encoding (protobuf under /registry), an order of magnitude faster than
// creating it through an apiserver. Both servers then read the same etcd.
func seed(ctx context.Context, etcdURL string, d Data) (time.Duration, error) {
	start := time.Now()
	client, err := clientv3.New(clientv3.Config{Endpoints: []string{etcdURL}, DialTimeout: 10 * time.Second})
	if err != nil {
		return 0, err
	}
	defer client.Close()
	codec := protobuf.NewSerializer(scheme.Scheme, scheme.Scheme)
	now := metav1.NewTime(time.Now().Truncate(time.Second))

	type kv struct{ key, value string }
	work := make(chan kv, 1024)
	g, ctx := errgroup.WithContext(ctx)
	for range 16 {
		g.Go(func() error {
			// etcd's default --max-txn-ops is 128.
			batch := make([]clientv3.Op, 0, 128)
			flush := func() error {
				if len(batch) == 0 {
					return nil
				}
				_, err := client.Txn(ctx).Then(batch...).Commit()
				batch = batch[:0]
				return err
			}
			for item := range work {
				batch = append(batch, clientv3.OpPut(item.key, item.value))
				if len(batch) == cap(batch) {
					if err := flush(); err != nil {
						return err
					}
				}
			}
			return flush()
		})
	}
	put := func(key string, obj runtime.Object) error {
		data, err := runtime.Encode(codec, obj)
		if err != nil {
			return err
		}
		select {
		case work <- kv{key, string(data)}:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	g.Go(func() error {
		defer close(work)
		names := []string{benchNamespace}
		for i := range d.Namespaces {
			names = append(names, nsName(i))
		}
		for _, name := range names {
			if err := put("/registry/namespaces/"+name, namespace(name, now)); err != nil {
				return err
			}
			// What kube-controller-manager would create; pod admission needs it.
			if err := put("/registry/serviceaccounts/"+name+"/default", serviceAccount(name, now)); err != nil {
				return err
			}
		}
		for i := range d.Nodes {
			if err := put("/registry/minions/"+nodeName(i), node(i, now)); err != nil {
				return err
			}
			if err := put("/registry/leases/kube-node-lease/"+nodeName(i), lease(i, now)); err != nil {
				return err
			}
		}
		for i := range d.Pods {
			p := d.pod(i, now)
			if err := put("/registry/pods/"+p.Namespace+"/"+p.Name, p); err != nil {
				return err
			}
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return 0, err
	}
	// A running cluster's etcd keeps minutes of history: the apiserver
	// compacts it every 5 minutes. Seeding is not history.
	resp, err := client.Get(context.Background(), "/registry/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, err
	}
	if _, err := client.Compact(context.Background(), resp.Header.Revision); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

func meta(name, namespace string, now metav1.Time) metav1.ObjectMeta {
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

func namespace(name string, now metav1.Time) *corev1.Namespace {
	return &corev1.Namespace{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
		ObjectMeta: meta(name, "", now),
		Spec:       corev1.NamespaceSpec{Finalizers: []corev1.FinalizerName{corev1.FinalizerKubernetes}},
		Status:     corev1.NamespaceStatus{Phase: corev1.NamespaceActive},
	}
}

func serviceAccount(namespace string, now metav1.Time) *corev1.ServiceAccount {
	return &corev1.ServiceAccount{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
		ObjectMeta: meta("default", namespace, now),
	}
}

func node(i int, now metav1.Time) *corev1.Node {
	n := &corev1.Node{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Node"},
		ObjectMeta: meta(nodeName(i), "", now),
		Spec:       corev1.NodeSpec{PodCIDR: fmt.Sprintf("10.%d.%d.0/24", 64+i/256, i%256)},
		Status: corev1.NodeStatus{
			Capacity:    corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("32"), corev1.ResourceMemory: resource.MustParse("128Gi"), corev1.ResourcePods: resource.MustParse("110")},
			Allocatable: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("31"), corev1.ResourceMemory: resource.MustParse("120Gi"), corev1.ResourcePods: resource.MustParse("110")},
			Conditions:  []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", LastHeartbeatTime: now, LastTransitionTime: now}},
			Addresses:   []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("192.0.%d.%d", i/256, i%256)}, {Type: corev1.NodeHostName, Address: nodeName(i)}},
			NodeInfo:    corev1.NodeSystemInfo{KubeletVersion: "v1.37.2", OperatingSystem: "linux", Architecture: "amd64", ContainerRuntimeVersion: "containerd://2.1.0"},
		},
	}
	n.Labels = map[string]string{"kubernetes.io/hostname": n.Name, "kubernetes.io/os": "linux", "topology.kubernetes.io/zone": fmt.Sprintf("zone-%d", i%3)}
	return n
}

func lease(i int, now metav1.Time) *coordinationv1.Lease {
	return &coordinationv1.Lease{
		TypeMeta:   metav1.TypeMeta{APIVersion: "coordination.k8s.io/v1", Kind: "Lease"},
		ObjectMeta: meta(nodeName(i), "kube-node-lease", now),
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity:       ptr.To(nodeName(i)),
			LeaseDurationSeconds: ptr.To[int32](40),
			RenewTime:            &metav1.MicroTime{Time: now.Time},
		},
	}
}

// pod is a typical Deployment pod, about 1.5 KiB in storage.
func (d Data) pod(i int, now metav1.Time) *corev1.Pod {
	app := appName(i % d.Apps)
	p := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: meta(podName(i), nsName(d.podNamespace(i)), now),
		Spec: corev1.PodSpec{
			NodeName: nodeName(i % d.Nodes),
			Containers: []corev1.Container{{
				Name:  "main",
				Image: "registry.example/" + app + ":v1",
				Ports: []corev1.ContainerPort{{ContainerPort: 8080, Protocol: corev1.ProtocolTCP}},
				Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
				},
				Env:                      []corev1.EnvVar{{Name: "APP", Value: app}},
				TerminationMessagePath:   "/dev/termination-log",
				TerminationMessagePolicy: corev1.TerminationMessageReadFile,
				ImagePullPolicy:          corev1.PullIfNotPresent,
			}},
			RestartPolicy:                 corev1.RestartPolicyAlways,
			DNSPolicy:                     corev1.DNSClusterFirst,
			SchedulerName:                 corev1.DefaultSchedulerName,
			TerminationGracePeriodSeconds: ptr.To[int64](30),
			ServiceAccountName:            "default",
		},
		Status: corev1.PodStatus{
			Phase:     corev1.PodRunning,
			HostIP:    fmt.Sprintf("192.0.%d.%d", (i%d.Nodes)/256, (i%d.Nodes)%256),
			PodIP:     fmt.Sprintf("10.%d.%d.%d", 64+(i/65536)%64, (i/256)%256, i%256),
			StartTime: &now,
			Conditions: []corev1.PodCondition{
				{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
				{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
				{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
			},
			ContainerStatuses: []corev1.ContainerStatus{{
				Name: "main", Ready: true, Image: "registry.example/" + app + ":v1",
				ImageID: "registry.example/" + app + "@sha256:0000", ContainerID: fmt.Sprintf("containerd://%064x", i),
				State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
			}},
			QOSClass: corev1.PodQOSBurstable,
		},
	}
	p.Labels = map[string]string{"app": app, "pod-template-hash": fmt.Sprintf("%08x", hash(app)), "tier": []string{"frontend", "backend", "cache"}[i%3]}
	return p
}

package integration

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/bulwark-k8s/bulwark/internal/seed"
	"github.com/bulwark-k8s/bulwark/test/integration/framework"
)

// TestSeededPodsAreWhatTheAPIStores makes pods through the API as a
// cluster does (the ReplicaSet controller creates, the scheduler binds,
// the kubelet reports status, each under its own User-Agent) and checks
// that etcd then holds, byte for byte, what the bench and the tests seed
// straight into etcd: the seeded data is what a real cluster's is, managed
// fields, admission and defaults included. Only what the apiserver
// generates (UID, times, the token volume's random suffix) is set to the
// seeded values before comparing.
func TestSeededPodsAreWhatTheAPIStores(t *testing.T) {
	etcd := framework.StartEtcd(t, framework.EtcdOptions{})
	shapes := []seed.Data{
		{Pods: 6, Nodes: 4, Namespaces: 2, Apps: 3, Workloads: true, PodAnnotationBytes: 20},
		{Pods: 6, Nodes: 4, Namespaces: 2, Apps: 3},
	}
	now := seed.Now()
	// The namespaces, service accounts, nodes and workloads of the first
	// shape; the second's are a subset.
	if err := seed.Put(context.Background(), etcd.ClientURL, func(yield func(seed.Object) bool) {
		for o := range shapes[0].Objects(now) {
			if _, pod := o.Object.(*corev1.Pod); !pod && !yield(o) {
				return
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	server := framework.StartAPIServer(t, framework.APIServerOptions{Etcd: etcd})
	as := func(component string) kubernetes.Interface {
		c := rest.CopyConfig(server.Config)
		c.UserAgent = component + "/v1.37.2 (linux/amd64) kubernetes/0000000"
		return kubernetes.NewForConfigOrDie(c)
	}
	controllers, scheduler, kubelet := as("kube-controller-manager"), as("kube-scheduler"), as("kubelet")
	etcdClient, err := clientv3.New(clientv3.Config{Endpoints: []string{etcd.ClientURL}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer etcdClient.Close()
	ctx := context.Background()

	first := 0 // each shape's pods named after the previous shape's
	for s, d := range shapes {
		for i := first; i < first+d.Pods; i++ {
			w := d.PodWrites(i, now)
			ns, name := w.Create.Namespace, w.Create.Name
			if _, err := controllers.CoreV1().Pods(ns).Create(ctx, w.Create, metav1.CreateOptions{}); err != nil {
				t.Fatalf("create %s: %v", name, err)
			}
			if err := scheduler.CoreV1().Pods(ns).Bind(ctx, w.Binding, metav1.CreateOptions{}); err != nil {
				t.Fatalf("bind %s: %v", name, err)
			}
			pod, err := kubelet.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			pod.Status = w.Status
			if _, err := kubelet.CoreV1().Pods(ns).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
				t.Fatalf("status of %s: %v", name, err)
			}

			resp, err := etcdClient.Get(ctx, "/registry/pods/"+ns+"/"+name)
			if err != nil || len(resp.Kvs) != 1 {
				t.Fatalf("etcd holds no %s/%s: %v", ns, name, err)
			}
			stored := resp.Kvs[0].Value
			obj, err := runtime.Decode(seed.Codec, stored)
			if err != nil {
				t.Fatal(err)
			}
			if again, err := seed.Encode(obj); err != nil || !bytes.Equal(again, stored) {
				t.Fatalf("%s: the stored pod does not encode back to its bytes (%v)", name, err)
			}
			want := d.Pod(i, now)
			got := obj.(*corev1.Pod)
			setGenerated(got, want)
			gotBytes, err := seed.Encode(got)
			if err != nil {
				t.Fatal(err)
			}
			wantBytes, err := seed.Encode(want)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(gotBytes, wantBytes) {
				t.Errorf("shape %d pod %s: seeded bytes differ from the API's (-API +seeded):\n%s", s, name, cmp.Diff(got, want))
			}
		}
		first += d.Pods
	}
}

// setGenerated sets in got what the apiserver generates to want's.
func setGenerated(got, want *corev1.Pod) {
	got.UID, got.CreationTimestamp = want.UID, want.CreationTimestamp
	for k := range got.ManagedFields {
		got.ManagedFields[k].Time = want.ManagedFields[0].Time
	}
	random := got.Spec.Volumes[len(got.Spec.Volumes)-1].Name
	seeded := want.Spec.Volumes[len(want.Spec.Volumes)-1].Name
	got.Spec.Volumes[len(got.Spec.Volumes)-1].Name = seeded
	for c := range got.Spec.Containers {
		for m := range got.Spec.Containers[c].VolumeMounts {
			if got.Spec.Containers[c].VolumeMounts[m].Name == random {
				got.Spec.Containers[c].VolumeMounts[m].Name = seeded
			}
		}
	}
}

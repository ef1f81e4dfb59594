package kwokcluster

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// Workload is what a platform team runs on a cluster before a swap:
// Deployments created at half their size, scaled up, rolled (every pod
// replaced) and deleted.
type Workload struct {
	Namespace   string
	Deployments int
	// Pods is the number of pods of all Deployments at full size.
	Pods int
	// PhaseTimeout bounds each phase.
	PhaseTimeout time.Duration
}

// Phase is one step of a workload and how long it took.
type Phase struct {
	Name string
	Took time.Duration
}

// Result is what a workload measured.
type Result struct {
	Phases []Phase
	// PodStartup is, for each pod, the time from its creation to Running
	// and Ready, as a watch of the namespace saw both.
	PodStartup []time.Duration
}

// Run runs the workload with client and waits for each phase to complete.
func (w Workload) Run(ctx context.Context, client kubernetes.Interface) (*Result, error) {
	if w.Deployments <= 0 || w.Pods < 2*w.Deployments {
		return nil, fmt.Errorf("workload: %d pods in %d Deployments; at least two pods per Deployment", w.Pods, w.Deployments)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: w.Namespace}}
	if _, err := client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	startup := newStartupTracker()
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	if err := startup.run(watchCtx, client, w.Namespace); err != nil {
		return nil, err
	}

	result := &Result{}
	phase := func(name string, act func() error, done func(context.Context) (bool, error)) error {
		start := time.Now()
		if err := act(); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if err := wait.PollUntilContextTimeout(ctx, time.Second, w.PhaseTimeout, true, done); err != nil {
			return fmt.Errorf("%s: not done within %s: %w", name, w.PhaseTimeout, err)
		}
		result.Phases = append(result.Phases, Phase{Name: name, Took: time.Since(start)})
		return nil
	}
	deployments := client.AppsV1().Deployments(w.Namespace)
	size := func(i int) int32 {
		n := w.Pods / w.Deployments
		if i < w.Pods%w.Deployments {
			n++
		}
		return int32(n)
	}
	rolledOut := func(ctx context.Context) (bool, error) { return w.rolledOut(ctx, client) }

	if err := phase("create", func() error {
		for i := range w.Deployments {
			if _, err := deployments.Create(ctx, deployment(i, size(i)/2), metav1.CreateOptions{}); err != nil {
				return err
			}
		}
		return nil
	}, rolledOut); err != nil {
		return result, err
	}
	if err := phase("scale up", func() error {
		for i := range w.Deployments {
			patch := fmt.Sprintf(`{"spec":{"replicas":%d}}`, size(i))
			if _, err := deployments.Patch(ctx, deploymentName(i), types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
				return err
			}
		}
		return nil
	}, rolledOut); err != nil {
		return result, err
	}
	if err := phase("rolling update", func() error {
		for i := range w.Deployments {
			patch := `{"spec":{"template":{"metadata":{"annotations":{"workload.bulwark.dev/revision":"2"}}}}}`
			if _, err := deployments.Patch(ctx, deploymentName(i), types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
				return err
			}
		}
		return nil
	}, rolledOut); err != nil {
		return result, err
	}
	if err := phase("delete", func() error {
		return deployments.DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{})
	}, func(ctx context.Context) (bool, error) {
		pods, err := client.CoreV1().Pods(w.Namespace).List(ctx, metav1.ListOptions{ResourceVersion: "0"})
		return err == nil && len(pods.Items) == 0, nil
	}); err != nil {
		return result, err
	}
	result.PodStartup = startup.latencies()
	return result, nil
}

// rolledOut tells whether every Deployment runs its full size, all pods
// of its latest template available, none of an older one left.
func (w Workload) rolledOut(ctx context.Context, client kubernetes.Interface) (bool, error) {
	list, err := client.AppsV1().Deployments(w.Namespace).List(ctx, metav1.ListOptions{ResourceVersion: "0"})
	if err != nil {
		return false, nil // the next poll asks again
	}
	for _, d := range list.Items {
		want := *d.Spec.Replicas
		if d.Status.ObservedGeneration < d.Generation || d.Status.UpdatedReplicas != want || d.Status.AvailableReplicas != want || d.Status.Replicas != want {
			return false, nil
		}
	}
	return len(list.Items) == w.Deployments, nil
}

func deploymentName(i int) string { return fmt.Sprintf("workload-%d", i) }

func deployment(i int, replicas int32) *appsv1.Deployment {
	labels := map[string]string{"app": deploymentName(i)}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: deploymentName(i), Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					NodeSelector: map[string]string{"type": "kwok"},
					Containers: []corev1.Container{{
						Name:  "app",
						Image: "registry.k8s.io/pause:3.10",
						Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
							corev1.ResourceCPU:    resource.MustParse("10m"),
							corev1.ResourceMemory: resource.MustParse("16Mi"),
						}},
					}},
				},
			},
		},
	}
}

// startupTracker records when each pod was first seen and when it was
// first seen Running and Ready.
type startupTracker struct {
	mu      sync.Mutex
	created map[types.UID]time.Time
	started map[types.UID]time.Duration
}

func newStartupTracker() *startupTracker {
	return &startupTracker{created: map[types.UID]time.Time{}, started: map[types.UID]time.Duration{}}
}

func (s *startupTracker) run(ctx context.Context, client kubernetes.Interface, namespace string) error {
	lw := cache.NewListWatchFromClient(client.CoreV1().RESTClient(), "pods", namespace, fields.Everything())
	observe := func(obj any) {
		pod, ok := obj.(*corev1.Pod)
		if !ok {
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		first, seen := s.created[pod.UID]
		if !seen {
			first = time.Now()
			s.created[pod.UID] = first
		}
		if _, done := s.started[pod.UID]; !done && pod.Status.Phase == corev1.PodRunning && podReady(pod) {
			s.started[pod.UID] = time.Since(first)
		}
	}
	_, informer := cache.NewInformerWithOptions(cache.InformerOptions{
		ListerWatcher: lw,
		ObjectType:    &corev1.Pod{},
		Handler: cache.ResourceEventHandlerFuncs{
			AddFunc:    observe,
			UpdateFunc: func(_, obj any) { observe(obj) },
		},
	})
	go informer.RunWithContext(ctx)
	if !cache.WaitForCacheSync(ctx.Done(), informer.HasSynced) {
		return fmt.Errorf("the workload's pod watch did not sync")
	}
	return nil
}

func podReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// latencies are the startup latencies of the pods that started, sorted.
func (s *startupTracker) latencies() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []time.Duration
	for _, d := range s.started {
		out = append(out, d)
	}
	slices.Sort(out)
	return out
}

// Package kwokcluster runs a whole simulated control plane around a running
// kube-apiserver: kube-scheduler and kube-controller-manager built from the
// same module graph as the apiserver, with the identities kubeadm gives
// them, and kwok (sigs.k8s.io/kwok) simulating the nodes: their Leases and
// status, and their pods' lifecycle. The scheduler binds pods; the
// controller manager runs Deployments, ReplicaSets, garbage collection and
// node lifecycle; no container runs. It is what a platform team tries a new
// apiserver on before a swap: `make kwok-cluster`, the bench's kwok-cluster
// scenario and the integration test use it.
package kwokcluster

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/bulwark-k8s/bulwark/internal/localcluster"
)

// stages are kwok's node and pod lifecycles.
//
//go:embed stages.yaml
var stages []byte

// Binaries are the executables of the components around the apiserver.
type Binaries struct {
	Scheduler, ControllerManager, Kwok string
}

// Config configures Start.
type Config struct {
	Binaries
	// Dir holds the components' kubeconfigs and logs.
	Dir string
	// APIServer is the server the cluster runs on; its PKI signs the
	// components' client certificates.
	APIServer *localcluster.APIServer
	// Nodes is how many nodes kwok simulates.
	Nodes int
}

// nodeLeaseSeconds is the Lease duration of kwok's nodes, as the kubelet's
// default: each Lease is renewed every quarter of it (10 s).
const nodeLeaseSeconds = 40

// kwokUser is kwok's identity: an agent bound to cluster-admin, not in
// system:masters, so that APF does not exempt it, as kwok runs in a real
// cluster (a service account bound to its ClusterRole).
const kwokUser = "kwok-controller"

// Cluster is the running components and the nodes kwok simulates.
type Cluster struct {
	Config
	processes []*localcluster.Process
}

// Start starts kube-controller-manager, kube-scheduler and kwok, creates the
// nodes and waits until kwok reports them Ready.
func Start(ctx context.Context, c Config) (*Cluster, error) {
	if c.Nodes <= 0 {
		return nil, fmt.Errorf("kwokcluster: %d nodes; at least one is needed", c.Nodes)
	}
	for _, bin := range []string{c.Scheduler, c.ControllerManager, c.Kwok} {
		if _, err := os.Stat(bin); err != nil {
			return nil, fmt.Errorf("kwokcluster: %w (build it with `make cluster-binaries`)", err)
		}
	}
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return nil, err
	}
	cluster := &Cluster{Config: c}
	if err := cluster.start(ctx); err != nil {
		cluster.Stop()
		return nil, err
	}
	return cluster, nil
}

func (c *Cluster) start(ctx context.Context) error {
	s := c.APIServer
	kubeconfig := func(name, user string) (string, error) {
		cert, err := s.PKI.EnsureClient(name, user)
		if err != nil {
			return "", err
		}
		path := filepath.Join(c.Dir, name+".kubeconfig")
		return path, s.PKI.WriteKubeconfig(path, s.URL, name, cert)
	}
	schedulerConfig, err := kubeconfig("kube-scheduler", "system:kube-scheduler")
	if err != nil {
		return err
	}
	controllerManagerConfig, err := kubeconfig("kube-controller-manager", "system:kube-controller-manager")
	if err != nil {
		return err
	}
	kwokConfig, err := kubeconfig("kwok", kwokUser)
	if err != nil {
		return err
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: kwokUser},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cluster-admin"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: kwokUser}},
	}
	if _, err := s.Client.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	stagesPath := filepath.Join(c.Dir, "kwok-stages.yaml")
	if err := os.WriteFile(stagesPath, stages, 0o644); err != nil {
		return err
	}

	// Flags as kubeadm sets them, but without leader election (one replica)
	// and without serving (ports would collide between clusters); client
	// rates as Kubernetes' own scale tests raise them (100 a second, not 20
	// and 50), so that the apiserver, not the clients, sets the pace.
	if err := c.run("kube-controller-manager", c.ControllerManager,
		"--kubeconfig="+controllerManagerConfig,
		"--authentication-kubeconfig="+controllerManagerConfig,
		"--authorization-kubeconfig="+controllerManagerConfig,
		"--leader-elect=false",
		"--secure-port=0",
		"--use-service-account-credentials=true",
		"--service-account-private-key-file="+s.PKI.ServiceAccountKey,
		"--root-ca-file="+s.PKI.CA.Cert,
		"--cluster-signing-cert-file="+s.PKI.CA.Cert,
		"--cluster-signing-key-file="+s.PKI.CA.Key,
		"--controllers=*,bootstrapsigner,tokencleaner",
		"--kube-api-qps=100",
		"--kube-api-burst=200",
	); err != nil {
		return err
	}
	schedulerConfiguration := filepath.Join(c.Dir, "kube-scheduler.yaml")
	if err := os.WriteFile(schedulerConfiguration, fmt.Appendf(nil, `apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: %q
  qps: 100
  burst: 200
leaderElection:
  leaderElect: false
`, schedulerConfig), 0o644); err != nil {
		return err
	}
	if err := c.run("kube-scheduler", c.Scheduler,
		"--config="+schedulerConfiguration,
		"--authentication-kubeconfig="+schedulerConfig,
		"--authorization-kubeconfig="+schedulerConfig,
		"--secure-port=0",
	); err != nil {
		return err
	}
	if err := c.run("kwok", c.Kwok,
		"--kubeconfig="+kwokConfig,
		"--config="+stagesPath,
		"--manage-all-nodes=true",
		"--node-lease-duration-seconds="+strconv.Itoa(nodeLeaseSeconds),
		"--cidr=10.64.0.0/10",
	); err != nil {
		return err
	}
	if err := c.createNodes(ctx); err != nil {
		return err
	}
	return c.waitForReadyNodes(ctx)
}

// run starts one component, its output in Dir/<name>.log.
func (c *Cluster) run(name, bin string, args ...string) error {
	p, err := localcluster.StartProcess(name, filepath.Join(c.Dir, name+".log"), bin, args...)
	if err != nil {
		return err
	}
	c.processes = append(c.processes, p)
	return nil
}

// NodeName is the name of simulated node i.
func NodeName(i int) string { return fmt.Sprintf("kwok-node-%d", i) }

// createNodes registers the nodes as kubelets would, with the capacity of
// a large machine; kwok fills in their status.
func (c *Cluster) createNodes(ctx context.Context) error {
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("64"),
		corev1.ResourceMemory: resource.MustParse("256Gi"),
		corev1.ResourcePods:   resource.MustParse("110"),
	}
	for i := range c.Nodes {
		node := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{
				Name:        NodeName(i),
				Labels:      map[string]string{corev1.LabelHostname: NodeName(i), corev1.LabelOSStable: "linux", corev1.LabelArchStable: "amd64", "type": "kwok"},
				Annotations: map[string]string{"kwok.x-k8s.io/node": "fake"},
			},
			Status: corev1.NodeStatus{Capacity: capacity, Allocatable: capacity},
		}
		if _, err := c.APIServer.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
	return nil
}

// nodesReadyTimeout bounds the wait for kwok's first status of every node.
const nodesReadyTimeout = 3 * time.Minute

func (c *Cluster) waitForReadyNodes(ctx context.Context) error {
	ready := 0
	err := wait.PollUntilContextTimeout(ctx, time.Second, nodesReadyTimeout, true, func(ctx context.Context) (bool, error) {
		if err := c.Healthy(); err != nil {
			return false, err
		}
		nodes, err := c.APIServer.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: "type=kwok"})
		if err != nil {
			return false, nil
		}
		ready = 0
		for _, n := range nodes.Items {
			for _, cond := range n.Status.Conditions {
				if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
					ready++
				}
			}
		}
		return ready == c.Nodes, nil
	})
	if err != nil {
		return fmt.Errorf("kwokcluster: %d of %d nodes Ready: %w", ready, c.Nodes, err)
	}
	return nil
}

// Healthy returns an error naming a component that has exited.
func (c *Cluster) Healthy() error {
	for _, p := range c.processes {
		select {
		case <-p.Exited():
			return fmt.Errorf("%s exited; its log %s ends:\n%s", p.Name, p.LogPath, p.LogTail(20))
		default:
		}
	}
	return nil
}

// Stop stops the components, kwok first.
func (c *Cluster) Stop() error {
	var errs []error
	for i := len(c.processes) - 1; i >= 0; i-- {
		if err := c.processes[i].StopWithin(10 * time.Second); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", c.processes[i].Name, err))
		}
	}
	return errors.Join(errs...)
}

package integration

import (
	"context"
	"strconv"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubeadmapi "k8s.io/kubernetes/cmd/kubeadm/app/apis/kubeadm"
	"k8s.io/kubernetes/cmd/kubeadm/app/phases/controlplane"
	kubeadmconfig "k8s.io/kubernetes/cmd/kubeadm/app/util/config"

	"github.com/bulwark-k8s/bulwark/internal/pki"
	"github.com/bulwark-k8s/bulwark/test/integration/framework"
)

// TestKubeadmFlags runs the binary with the command line kubeadm's own code
// writes into its kube-apiserver static-pod manifest, against an external
// etcd secured with client certificates as in a kubeadm cluster.
func TestKubeadmFlags(t *testing.T) {
	bundle, err := pki.Ensure(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	etcd := framework.StartEtcd(t, framework.EtcdOptions{TLS: bundle})

	cfg, err := kubeadmconfig.DefaultedStaticInitConfiguration()
	if err != nil {
		t.Fatal(err)
	}
	cfg.CertificatesDir = bundle.Dir
	cfg.Etcd.Local = nil
	cfg.Etcd.External = &kubeadmapi.ExternalEtcd{
		Endpoints: []string{etcd.ClientURL},
		CAFile:    bundle.EtcdCA.Cert,
		CertFile:  bundle.EtcdClient.Cert,
		KeyFile:   bundle.EtcdClient.Key,
	}
	// Tests listen on loopback only, where the kubernetes service cannot
	// have endpoints; kubeadm's extraArgs is how an operator adds flags.
	cfg.APIServer.ExtraArgs = append(cfg.APIServer.ExtraArgs,
		kubeadmapi.Arg{Name: "bind-address", Value: "127.0.0.1"},
		kubeadmapi.Arg{Name: "endpoint-reconciler-type", Value: "none"})
	port := framework.FreePort(t)
	endpoint := &kubeadmapi.APIEndpoint{AdvertiseAddress: "127.0.0.1", BindPort: int32(port)}

	pod := controlplane.GetStaticPodSpecs(&cfg.ClusterConfiguration, endpoint, nil)["kube-apiserver"]
	command := pod.Spec.Containers[0].Command
	if len(command) < 20 || command[0] != "kube-apiserver" {
		t.Fatalf("unexpected kubeadm command: %q", command)
	}
	t.Logf("kubeadm command line: %q", command)

	s := framework.StartAPIServer(t, framework.APIServerOptions{PKI: bundle, Port: port, Args: command[1:], Replace: true})
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kubeadm-" + strconv.Itoa(port)}}
	if _, err := s.Client.CoreV1().Namespaces().Create(context.Background(), ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

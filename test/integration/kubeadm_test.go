package integration

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubeadmapi "k8s.io/kubernetes/cmd/kubeadm/app/apis/kubeadm"
	certsphase "k8s.io/kubernetes/cmd/kubeadm/app/phases/certs"
	"k8s.io/kubernetes/cmd/kubeadm/app/phases/controlplane"
	kubeadmconfig "k8s.io/kubernetes/cmd/kubeadm/app/util/config"
	"sigs.k8s.io/yaml"

	"github.com/bulwark-k8s/bulwark/internal/pki"
	"github.com/bulwark-k8s/bulwark/test/integration/framework"
)

// TestKubeadmSwap installs Bulwark the way an operator does on a kubeadm
// control plane: kubeadm's own certs and control-plane phases write the
// certificates and the kube-apiserver static-pod manifest (etcd is external,
// secured with kubeadm's etcd certificates); bulwarkctl swaps in Bulwark's
// image and flags; the binary then runs with exactly the swapped manifest's
// command line and serves, with Bulwark's flags in force; bulwarkctl
// rollback restores kubeadm's manifest byte for byte.
func TestKubeadmSwap(t *testing.T) {
	bins := framework.Bins(t)
	cfg, err := kubeadmconfig.DefaultedStaticInitConfiguration()
	if err != nil {
		t.Fatal(err)
	}
	// kubeadm's certs phase writes the cluster's certificates (with the
	// etcd ones, as for its local etcd); the bundle adds only an admin
	// client certificate, signed by kubeadm's CA.
	port := framework.FreePort(t)
	cfg.CertificatesDir = t.TempDir()
	cfg.LocalAPIEndpoint = kubeadmapi.APIEndpoint{AdvertiseAddress: "127.0.0.1", BindPort: int32(port)}
	if err := certsphase.CreatePKIAssets(cfg); err != nil {
		t.Fatal(err)
	}
	bundle, err := pki.Ensure(cfg.CertificatesDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	etcd := framework.StartEtcd(t, framework.EtcdOptions{TLS: bundle})
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
	endpoint := &cfg.LocalAPIEndpoint
	root := t.TempDir()
	manifests := filepath.Join(root, "manifests")
	if err := controlplane.CreateStaticPodFiles(manifests, "", &cfg.ClusterConfiguration, endpoint, false, "kube-apiserver"); err != nil {
		t.Fatal(err)
	}
	manifest := filepath.Join(manifests, "kube-apiserver.yaml")
	original, err := os.ReadFile(manifest)
	if err != nil {
		t.Fatal(err)
	}

	limits := filepath.Join(root, "bulwark", "user-agent-limits.yaml")
	if err := os.MkdirAll(filepath.Dir(limits), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(limits, []byte(blockFlooder), 0o600); err != nil {
		t.Fatal(err)
	}
	bulwarkctl(t, bins, "swap", "--manifest", manifest, "--image", "bulwark/kube-apiserver:test",
		"--arg", "watch-bookmark-interval=5s", "--user-agent-limits-config", limits)
	swapped, err := os.ReadFile(manifest)
	if err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{}
	if err := yaml.UnmarshalStrict(swapped, pod); err != nil {
		t.Fatal(err)
	}
	command := pod.Spec.Containers[0].Command
	if len(command) < 20 || command[0] != "kube-apiserver" || pod.Spec.Containers[0].Image != "bulwark/kube-apiserver:test" {
		t.Fatalf("swapped manifest: image %s, command %q", pod.Spec.Containers[0].Image, command)
	}
	t.Logf("swapped command line: %q", command)

	s := framework.StartAPIServer(t, framework.APIServerOptions{PKI: bundle, Port: port, Args: command[1:], Replace: true})
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kubeadm-" + strconv.Itoa(port)}}
	if _, err := s.Client.CoreV1().Namespaces().Create(context.Background(), ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if code, _ := call(t, s, "GET", "/api/v1/pods", "flooder/1.0", false); code != http.StatusTooManyRequests {
		t.Errorf("flooder LIST: %d; the limits file the swap passed is not in force", code)
	}

	bulwarkctl(t, bins, "rollback", "--manifest", manifest)
	if restored, _ := os.ReadFile(manifest); string(restored) != string(original) {
		t.Errorf("rollback did not restore kubeadm's manifest")
	}
}

func bulwarkctl(t *testing.T, bins framework.Binaries, args ...string) {
	t.Helper()
	out, err := exec.Command(bins.Bulwarkctl, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("bulwarkctl %q: %v\n%s", args, err, out)
	}
	t.Logf("bulwarkctl %s: %s", args[0], out)
}

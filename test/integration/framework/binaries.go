package framework

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/bulwark-k8s/bulwark/internal/kwokcluster"
)

// Binaries are the executables the tests run.
type Binaries struct {
	// APIServer is Bulwark's kube-apiserver.
	APIServer string
	// Upstream is unmodified upstream kube-apiserver from the same module graph.
	Upstream string
	// Etcd is etcd built from the same module graph.
	Etcd string
	// Bulwarkctl installs Bulwark into kubeadm's manifests.
	Bulwarkctl string
	// EnvtestAssets is what `make envtest-assets` made: a directory for
	// envtest's KUBEBUILDER_ASSETS.
	EnvtestAssets string
}

// Bins returns the binaries in BULWARK_BIN_DIR, and the envtest assets in
// BULWARK_ENVTEST_ASSETS, and fails the test if any is missing.
func Bins(t testing.TB) Binaries {
	t.Helper()
	dir := os.Getenv("BULWARK_BIN_DIR")
	if dir == "" {
		t.Fatal("BULWARK_BIN_DIR is not set: run integration tests with `make test-integration`")
	}
	b := Binaries{
		APIServer:     filepath.Join(dir, "kube-apiserver"),
		Upstream:      filepath.Join(dir, "kube-apiserver-upstream"),
		Etcd:          filepath.Join(dir, "etcd"),
		Bulwarkctl:    filepath.Join(dir, "bulwarkctl"),
		EnvtestAssets: os.Getenv("BULWARK_ENVTEST_ASSETS"),
	}
	for _, p := range []string{b.APIServer, b.Upstream, b.Etcd, b.Bulwarkctl, filepath.Join(b.EnvtestAssets, "kube-apiserver"), filepath.Join(b.EnvtestAssets, "etcd")} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("missing binary (build with `make binaries`): %v", err)
		}
	}
	return b
}

// ClusterBins returns the components of a simulated cluster in
// BULWARK_BIN_DIR (`make cluster-binaries`), and fails the test if any is
// missing.
func ClusterBins(t testing.TB) kwokcluster.Binaries {
	t.Helper()
	b := kwokcluster.BinariesIn(os.Getenv("BULWARK_BIN_DIR"))
	for _, p := range []string{b.Scheduler, b.ControllerManager, b.Kwok} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("missing binary (build with `make cluster-binaries`): %v", err)
		}
	}
	return b
}

package integration

import (
	"archive/tar"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// TestImage unpacks what `make image` wrote — the OCI layout and the
// docker-archive — and checks the entrypoint, the non-root user and the
// labels, and that the binary inside runs and reports its version.
func TestImage(t *testing.T) {
	dir := os.Getenv("BULWARK_IMAGE_DIR")
	if dir == "" {
		t.Fatal("BULWARK_IMAGE_DIR is not set: run integration tests with `make test-integration`")
	}
	index, err := layout.ImageIndexFromPath(filepath.Join(dir, "oci"))
	if err != nil {
		t.Fatal(err)
	}
	manifest, err := index.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(manifest.Manifests) != 1 {
		t.Fatalf("%d images in the layout, want 1", len(manifest.Manifests))
	}
	img, err := index.Image(manifest.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	archived, err := tarball.ImageFromPath(filepath.Join(dir, "kube-apiserver.tar"), nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, img := range map[string]v1.Image{"OCI layout": img, "docker-archive": archived} {
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		c := cf.Config
		if len(c.Entrypoint) != 1 || c.Entrypoint[0] != "/usr/local/bin/kube-apiserver" {
			t.Errorf("%s: entrypoint %q, want upstream's /usr/local/bin/kube-apiserver", name, c.Entrypoint)
		}
		if user := strings.Split(c.User, ":")[0]; user == "" || user == "0" || user == "root" {
			t.Errorf("%s: runs as %q, want a non-root user", name, c.User)
		}
		if !strings.HasPrefix(c.Labels["org.opencontainers.image.version"], c.Labels["io.k8s.kubernetes.version"]+"-bulwark.") {
			t.Errorf("%s: labels %v", name, c.Labels)
		}
		if cf.OS != "linux" || !strings.Contains(c.Env[0], "/usr/local/bin") {
			t.Errorf("%s: os %q, env %q", name, cf.OS, c.Env)
		}
	}
	manifestTag := manifest.Manifests[0].Annotations["org.opencontainers.image.ref.name"]

	// The binary inside runs.
	binary := extract(t, img, "usr/local/bin/kube-apiserver")
	out, err := exec.Command(binary, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("kube-apiserver --version from the image: %v: %s", err, out)
	}
	if version := strings.TrimSpace(string(out)); !strings.HasSuffix(manifestTag, ":"+strings.TrimPrefix(version, "Kubernetes ")) {
		t.Errorf("the binary reports %q, the image is tagged %q", version, manifestTag)
	}
}

// extract writes one file of img's filesystem to a temporary directory.
func extract(t *testing.T, img v1.Image, path string) string {
	t.Helper()
	fs := mutate.Extract(img)
	defer fs.Close()
	tr := tar.NewReader(fs)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("%s not in the image: %v", path, err)
		}
		if h.Name != path {
			continue
		}
		if h.Mode&0o111 == 0 {
			t.Fatalf("%s is not executable: %o", path, h.Mode)
		}
		dst := filepath.Join(t.TempDir(), filepath.Base(path))
		f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0o755)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(f, tr); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		return dst
	}
}

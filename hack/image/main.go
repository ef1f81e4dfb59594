// Command image builds the container image of Bulwark's kube-apiserver
// without a Docker daemon: one layer with the static binary at upstream's
// path (/usr/local/bin/kube-apiserver, so a kubeadm manifest's
// `command: [kube-apiserver, ...]` finds it on PATH) and a non-root user.
// It writes an OCI image layout (for skopeo, crane, containerd's
// `ctr import`, or a registry push) and the same image as a docker-archive
// tarball (`docker load`, `kind load image-archive`).
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The user the server runs as: distroless' "nonroot", as upstream's
// control-plane images can be run.
const (
	uid        = 65532
	binaryPath = "usr/local/bin/kube-apiserver"
)

func main() {
	binary := flag.String("binary", "_output/bin/kube-apiserver", "the static kube-apiserver to put in the image")
	out := flag.String("out", "_output/image", "directory for the OCI layout (oci/) and the docker-archive (kube-apiserver.tar)")
	repo := flag.String("repository", "bulwark/kube-apiserver", "image repository the tag names")
	version := flag.String("version", "", "Bulwark's version (the tag), e.g. v1.37.2-bulwark.20")
	kubeVersion := flag.String("kube-version", "", "the upstream Kubernetes version it is built on")
	created := flag.String("created", "", "image creation time, RFC 3339 (the commit date, so a rebuild is identical)")
	flag.Parse()
	if err := build(*binary, *out, *repo, *version, *kubeVersion, *created); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func build(binary, out, repo, version, kubeVersion, created string) error {
	if version == "" || kubeVersion == "" {
		return fmt.Errorf("-version and -kube-version are required")
	}
	when, err := time.Parse(time.RFC3339, created)
	if err != nil {
		return fmt.Errorf("-created: %w", err)
	}
	tag, err := name.NewTag(repo + ":" + version)
	if err != nil {
		return err
	}
	content, err := os.ReadFile(binary)
	if err != nil {
		return err
	}
	layerTar, err := rootfs(content, when)
	if err != nil {
		return err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), layer)
	if err != nil {
		return err
	}
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Created = v1.Time{Time: when}
	cf.Config = v1.Config{
		Entrypoint: []string{"/" + binaryPath},
		User:       fmt.Sprintf("%d:%d", uid, uid),
		Env:        []string{"PATH=/usr/local/bin:/usr/bin:/bin"},
		WorkingDir: "/",
		Labels: map[string]string{
			"org.opencontainers.image.title":   "kube-apiserver (Bulwark)",
			"org.opencontainers.image.version": version,
			"io.k8s.kubernetes.version":        kubeVersion,
		},
	}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return err
	}

	if err := os.RemoveAll(filepath.Join(out, "oci")); err != nil {
		return err
	}
	p, err := layout.Write(filepath.Join(out, "oci"), empty.Index)
	if err != nil {
		return err
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": tag.String()})); err != nil {
		return err
	}
	return tarball.WriteToFile(filepath.Join(out, "kube-apiserver.tar"), tag, img)
}

// rootfs is the image's one layer: the binary, and the passwd and group
// entries of its user (without them, tools that look the user up fail).
func rootfs(binary []byte, when time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	entries := []struct {
		name    string
		mode    int64
		content []byte
	}{
		{"etc/", 0o755, nil},
		{"etc/passwd", 0o644, fmt.Appendf(nil, "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", uid, uid)},
		{"etc/group", 0o644, fmt.Appendf(nil, "root:x:0:\nnonroot:x:%d:\n", uid)},
		{"home/", 0o755, nil},
		{"home/nonroot/", 0o700, nil},
		{"tmp/", 0o1777, nil},
		{"usr/", 0o755, nil},
		{"usr/local/", 0o755, nil},
		{"usr/local/bin/", 0o755, nil},
		{binaryPath, 0o755, binary},
	}
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: e.mode, ModTime: when, Typeflag: tar.TypeReg, Size: int64(len(e.content))}
		if e.name[len(e.name)-1] == '/' {
			h.Typeflag = tar.TypeDir
		}
		if e.name == "home/nonroot/" {
			h.Uid, h.Gid = uid, uid
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.content); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

package main

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	kubeadmapi "k8s.io/kubernetes/cmd/kubeadm/app/apis/kubeadm"
	"k8s.io/kubernetes/cmd/kubeadm/app/phases/controlplane"
	kubeadmconfig "k8s.io/kubernetes/cmd/kubeadm/app/util/config"
)

// kubeadmManifest writes the kube-apiserver static-pod manifest with
// kubeadm's own code, into dir/etc/kubernetes/manifests, and returns its path.
func kubeadmManifest(t *testing.T, dir string) string {
	t.Helper()
	cfg, err := kubeadmconfig.DefaultedStaticInitConfiguration()
	if err != nil {
		t.Fatal(err)
	}
	cfg.CertificatesDir = filepath.Join(dir, "etc/kubernetes/pki")
	cfg.APIServer.ExtraArgs = append(cfg.APIServer.ExtraArgs, kubeadmapi.Arg{Name: "audit-log-maxage", Value: "7"})
	manifests := filepath.Join(dir, "etc/kubernetes/manifests")
	endpoint := &kubeadmapi.APIEndpoint{AdvertiseAddress: "10.0.0.10", BindPort: 6443}
	if err := controlplane.CreateStaticPodFiles(manifests, "", &cfg.ClusterConfiguration, endpoint, false, "kube-apiserver"); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(manifests, "kube-apiserver.yaml")
}

func TestSwapAndRollback(t *testing.T) {
	dir := t.TempDir()
	manifest := kubeadmManifest(t, dir)
	original, err := os.ReadFile(manifest)
	if err != nil {
		t.Fatal(err)
	}
	before, kubeadmContainer, err := parse(original)
	if err != nil {
		t.Fatal(err)
	}

	swap := Swap{
		Manifest:              manifest,
		Image:                 "bulwark/kube-apiserver:v1.37.2-bulwark.1",
		Args:                  []Arg{{Name: "watch-bookmark-interval", Value: "5s"}, {Name: "audit-log-maxage", Value: "30"}},
		UserAgentLimitsConfig: "/etc/bulwark/user-agent-limits.yaml",
	}
	backup, err := swap.Run()
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "etc/kubernetes/bulwark-backup/kube-apiserver.yaml"); backup != want {
		t.Errorf("backup at %s, want %s (outside the manifests directory)", backup, want)
	}
	if saved, _ := os.ReadFile(backup); string(saved) != string(original) {
		t.Errorf("the backup is not kubeadm's manifest")
	}
	if entries, _ := os.ReadDir(filepath.Dir(manifest)); len(entries) != 1 {
		t.Errorf("manifests directory holds %v; the kubelet would run each", entries)
	}

	swapped, _ := os.ReadFile(manifest)
	pod, c, err := parse(swapped)
	if err != nil {
		t.Fatal(err)
	}
	if c.Image != swap.Image || pod.Annotations[swappedFromAnnotation] != kubeadmContainer.Image {
		t.Errorf("image %s (swapped from %q), want %s swapped from %s", c.Image, pod.Annotations[swappedFromAnnotation], swap.Image, kubeadmContainer.Image)
	}
	for _, flag := range kubeadmContainer.Command {
		if flag != "--audit-log-maxage=7" && !slices.Contains(c.Command, flag) {
			t.Errorf("kubeadm's %s is gone", flag)
		}
	}
	for _, flag := range []string{"--watch-bookmark-interval=5s", "--audit-log-maxage=30", "--user-agent-limits-config=/etc/bulwark/user-agent-limits.yaml"} {
		if !slices.Contains(c.Command, flag) {
			t.Errorf("%s is missing from %q", flag, c.Command)
		}
	}
	if len(c.Command) != len(kubeadmContainer.Command)+2 {
		t.Errorf("%d flags, want kubeadm's %d (one replaced) and 2 of ours", len(c.Command), len(kubeadmContainer.Command))
	}
	// Everything else is kubeadm's.
	if !reflect.DeepEqual(c.LivenessProbe, kubeadmContainer.LivenessProbe) || !reflect.DeepEqual(c.ReadinessProbe, kubeadmContainer.ReadinessProbe) ||
		!reflect.DeepEqual(c.StartupProbe, kubeadmContainer.StartupProbe) || !reflect.DeepEqual(c.Resources, kubeadmContainer.Resources) {
		t.Errorf("probes or resources changed")
	}
	if !reflect.DeepEqual(c.VolumeMounts[:len(kubeadmContainer.VolumeMounts)], kubeadmContainer.VolumeMounts) ||
		!reflect.DeepEqual(pod.Spec.Volumes[:len(before.Spec.Volumes)], before.Spec.Volumes) {
		t.Errorf("kubeadm's volumes or mounts changed")
	}
	if m := c.VolumeMounts[len(c.VolumeMounts)-1]; m.MountPath != "/etc/bulwark" || !m.ReadOnly {
		t.Errorf("config mount %+v, want /etc/bulwark read-only", m)
	}
	for k, v := range before.Annotations {
		if pod.Annotations[k] != v {
			t.Errorf("annotation %s changed", k)
		}
	}

	// Swapping again changes our flags, not the backup of kubeadm's manifest.
	swap.Args = []Arg{{Name: "watch-bookmark-interval", Value: "20s"}}
	if _, err := swap.Run(); err != nil {
		t.Fatal(err)
	}
	swapped, _ = os.ReadFile(manifest)
	_, c, _ = parse(swapped)
	if slices.Contains(c.Command, "--watch-bookmark-interval=5s") || !slices.Contains(c.Command, "--watch-bookmark-interval=20s") {
		t.Errorf("second swap: %q", c.Command)
	}
	if n := len(c.VolumeMounts); n != len(kubeadmContainer.VolumeMounts)+1 {
		t.Errorf("second swap: %d mounts, want one of ours", n)
	}
	if saved, _ := os.ReadFile(backup); string(saved) != string(original) {
		t.Errorf("the second swap overwrote the backup of kubeadm's manifest")
	}

	if _, err := Rollback(manifest, ""); err != nil {
		t.Fatal(err)
	}
	if restored, _ := os.ReadFile(manifest); string(restored) != string(original) {
		t.Errorf("rollback did not restore kubeadm's manifest byte for byte")
	}
	if _, err := os.Stat(backup); !os.IsNotExist(err) {
		t.Errorf("backup left after rollback: %v", err)
	}
	if _, err := Rollback(manifest, ""); err == nil {
		t.Errorf("a second rollback, without a backup, succeeded")
	}
}

// TestSwapIsIdempotent: swapping again with the same settings changes
// nothing, and with the config in another directory (or under a directory
// kubeadm mounts already) leaves one mount for it: never two volumes of one
// name, which the kubelet rejects.
func TestSwapIsIdempotent(t *testing.T) {
	dir := t.TempDir()
	manifest := kubeadmManifest(t, dir)
	original, _ := os.ReadFile(manifest)
	_, kubeadmContainer, err := parse(original)
	if err != nil {
		t.Fatal(err)
	}
	swap := Swap{Manifest: manifest, Image: "bulwark/kube-apiserver:v1.37.2-bulwark.1"}
	for _, step := range []struct {
		config string
		// mount is the directory of Bulwark's volume, "" for none.
		mount string
	}{
		{"/etc/bulwark/limits.yaml", "/etc/bulwark"},
		{"/etc/bulwark/limits.yaml", "/etc/bulwark"},
		{"/srv/bulwark/config/limits.yaml", "/srv/bulwark/config"},
		{"/srv/bulwark/config/../other/limits.yaml", "/srv/bulwark/other"},
		// kubeadm mounts /etc/kubernetes/pki (its certificates directory).
		{filepath.Join(dir, "etc/kubernetes/pki/bulwark/limits.yaml"), ""},
		{"/etc/bulwark/limits.yaml", "/etc/bulwark"},
	} {
		swap.UserAgentLimitsConfig = step.config
		if _, err := swap.Run(); err != nil {
			t.Fatal(err)
		}
		after, _ := os.ReadFile(manifest)
		pod, c, err := parse(after)
		if err != nil {
			t.Fatal(err)
		}
		names := map[string]int{}
		for _, v := range pod.Spec.Volumes {
			names[v.Name]++
		}
		for name, n := range names {
			if n > 1 {
				t.Errorf("%s: %d volumes named %s", step.config, n, name)
			}
		}
		var mounts []string
		for _, m := range c.VolumeMounts {
			if m.Name == configVolume {
				mounts = append(mounts, m.MountPath)
			}
		}
		switch {
		case step.mount == "" && len(mounts) != 0, step.mount != "" && !slices.Equal(mounts, []string{step.mount}):
			t.Errorf("%s: Bulwark's mounts %q, want %q", step.config, mounts, step.mount)
		}
		if n := len(c.VolumeMounts) - len(mounts); n != len(kubeadmContainer.VolumeMounts) {
			t.Errorf("%s: %d of kubeadm's mounts left, want %d", step.config, n, len(kubeadmContainer.VolumeMounts))
		}
		if names[configVolume] != len(mounts) {
			t.Errorf("%s: %d volumes %s for %d mounts", step.config, names[configVolume], configVolume, len(mounts))
		}
	}
	// The same swap twice: the same bytes.
	first, _ := os.ReadFile(manifest)
	if _, err := swap.Run(); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(manifest); string(again) != string(first) {
		t.Errorf("the same swap again changed the manifest:\n%s\nthen\n%s", first, again)
	}
}

// TestSwapRejects: a manifest that is not kube-apiserver's, or not valid,
// is left as it is and nothing is backed up.
func TestSwapRejects(t *testing.T) {
	for name, content := range map[string]string{
		"not a pod":          "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n",
		"other container":    "apiVersion: v1\nkind: Pod\nmetadata:\n  name: etcd\nspec:\n  containers:\n  - name: etcd\n    command: [etcd]\n",
		"unknown field":      "apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\nspec:\n  containerz: []\n",
		"not kube-apiserver": "apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\nspec:\n  containers:\n  - name: kube-apiserver\n    command: [sh]\n",
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			manifest := filepath.Join(dir, "manifests", "kube-apiserver.yaml")
			if err := os.MkdirAll(filepath.Dir(manifest), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(manifest, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := (Swap{Manifest: manifest, Image: "bulwark/kube-apiserver:x"}).Run(); err == nil {
				t.Fatal("swapped")
			}
			if got, _ := os.ReadFile(manifest); string(got) != content {
				t.Errorf("manifest changed")
			}
			if _, err := os.Stat(filepath.Join(dir, "bulwark-backup")); !os.IsNotExist(err) {
				t.Errorf("a backup was written: %v", err)
			}
		})
	}
	if _, err := (Swap{Manifest: "/nonexistent"}).Run(); err == nil {
		t.Errorf("no image: no error")
	}
}

package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// DefaultManifest is where kubeadm writes the kube-apiserver static pod.
const DefaultManifest = "/etc/kubernetes/manifests/kube-apiserver.yaml"

const (
	containerName = "kube-apiserver"
	// swappedFromAnnotation records the image the swap replaced.
	swappedFromAnnotation = "bulwark.dev/swapped-from-image"
	// configVolume mounts the directory of Bulwark's config files.
	configVolume = "bulwark-config"
)

// Arg is one command-line flag of kube-apiserver, without its dashes.
type Arg struct{ Name, Value string }

func (a Arg) String() string { return "--" + a.Name + "=" + a.Value }

// Swap turns kubeadm's kube-apiserver manifest into Bulwark's.
type Swap struct {
	// Manifest is the static-pod manifest; BackupDir (default: beside the
	// manifests directory) keeps the original.
	Manifest, BackupDir string
	// Image is Bulwark's kube-apiserver image.
	Image string
	// Args are Bulwark's flags; each replaces a flag of the same name.
	Args []Arg
	// UserAgentLimitsConfig is the host path of the User-Agent limits file;
	// its directory is mounted read-only at the same path.
	UserAgentLimitsConfig string
}

// Run swaps the manifest and returns the backup's path. The original is
// backed up once: swapping a swapped manifest again (to change flags) keeps
// the original kubeadm wrote. The manifest is replaced atomically.
func (s Swap) Run() (backup string, err error) {
	if s.Image == "" {
		return "", errors.New("--image is required")
	}
	original, err := os.ReadFile(s.Manifest)
	if err != nil {
		return "", err
	}
	pod, container, err := parse(original)
	if err != nil {
		return "", fmt.Errorf("%s: %w", s.Manifest, err)
	}
	backup = backupPath(s.Manifest, s.BackupDir)
	if _, err := os.Stat(backup); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(filepath.Dir(backup), 0o700); err != nil {
			return "", err
		}
		if err := os.WriteFile(backup, original, 0o600); err != nil {
			return "", err
		}
	} else if err != nil {
		return "", err
	}

	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	if _, swapped := pod.Annotations[swappedFromAnnotation]; !swapped {
		pod.Annotations[swappedFromAnnotation] = container.Image
	}
	container.Image = s.Image
	args := s.Args
	if s.UserAgentLimitsConfig != "" {
		if !filepath.IsAbs(s.UserAgentLimitsConfig) {
			return "", fmt.Errorf("--user-agent-limits-config %q: want an absolute host path", s.UserAgentLimitsConfig)
		}
		args = append(args, Arg{Name: "user-agent-limits-config", Value: s.UserAgentLimitsConfig})
		mountDir(pod, container, filepath.Dir(filepath.Clean(s.UserAgentLimitsConfig)))
	}
	for _, a := range args {
		container.Command = setFlag(container.Command, a)
	}
	out, err := yaml.Marshal(pod)
	if err != nil {
		return "", err
	}
	return backup, writeAtomically(s.Manifest, out)
}

// Rollback restores the manifest from its backup and removes the backup.
func Rollback(manifest, backupDir string) (backup string, err error) {
	backup = backupPath(manifest, backupDir)
	original, err := os.ReadFile(backup)
	if err != nil {
		return "", fmt.Errorf("no backup to roll back to: %w", err)
	}
	if _, _, err := parse(original); err != nil {
		return "", fmt.Errorf("backup %s: %w", backup, err)
	}
	if err := writeAtomically(manifest, original); err != nil {
		return "", err
	}
	return backup, os.Remove(backup)
}

// parse reads a static pod and finds its kube-apiserver container.
func parse(manifest []byte) (*corev1.Pod, *corev1.Container, error) {
	pod := &corev1.Pod{}
	if err := yaml.UnmarshalStrict(manifest, pod); err != nil {
		return nil, nil, err
	}
	if pod.Kind != "Pod" {
		return nil, nil, fmt.Errorf("kind %q, want a Pod", pod.Kind)
	}
	for i := range pod.Spec.Containers {
		if c := &pod.Spec.Containers[i]; c.Name == containerName {
			if len(c.Command) == 0 || filepath.Base(c.Command[0]) != "kube-apiserver" {
				return nil, nil, fmt.Errorf("container %s runs %q, not kube-apiserver", c.Name, c.Command)
			}
			return pod, c, nil
		}
	}
	return nil, nil, fmt.Errorf("no container named %s", containerName)
}

// setFlag replaces the flag of a's name in command, or appends it.
func setFlag(command []string, a Arg) []string {
	prefix := "--" + a.Name + "="
	if i := slices.IndexFunc(command, func(c string) bool { return strings.HasPrefix(c, prefix) || c == "--"+a.Name }); i >= 0 {
		command[i] = a.String()
		return command
	}
	return append(command, a.String())
}

// mountDir mounts a host directory read-only at the same path, as the one
// volume Bulwark adds: the one an earlier swap added (maybe for another
// directory) is replaced, since the kubelet rejects a pod with two volumes
// of one name. A directory that a volume of the manifest's own already
// mounts, itself or one above it, needs none.
func mountDir(pod *corev1.Pod, container *corev1.Container, dir string) {
	pod.Spec.Volumes = slices.DeleteFunc(pod.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == configVolume })
	container.VolumeMounts = slices.DeleteFunc(container.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == configVolume })
	for _, m := range container.VolumeMounts {
		if mounted := filepath.Clean(m.MountPath); dir == mounted || strings.HasPrefix(dir, strings.TrimSuffix(mounted, "/")+"/") {
			return
		}
	}
	dirType := corev1.HostPathDirectoryOrCreate
	pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{
		Name:         configVolume,
		VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: dir, Type: &dirType}},
	})
	container.VolumeMounts = append(container.VolumeMounts, corev1.VolumeMount{Name: configVolume, MountPath: dir, ReadOnly: true})
}

// backupPath is outside the manifests directory: the kubelet would run a
// copy of the manifest found there as a second static pod.
func backupPath(manifest, backupDir string) string {
	if backupDir == "" {
		backupDir = filepath.Join(filepath.Dir(filepath.Dir(manifest)), "bulwark-backup")
	}
	return filepath.Join(backupDir, filepath.Base(manifest))
}

// writeAtomically replaces path through a hidden file in its directory,
// which the kubelet ignores, so it never reads half a manifest.
func writeAtomically(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// Package verify checks generated files against their generators' inputs.
package verify

import (
	"encoding/json"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/mod/modfile"
)

// TestStagingReplacesMatchUpstream checks what hack/update-kube-version.sh
// writes: a replace line for every staging module of the k8s.io/kubernetes
// release we require, pinned to the matching v0.x, and none for modules
// upstream no longer has.
func TestStagingReplacesMatchUpstream(t *testing.T) {
	ours := parse(t, "../../go.mod")
	var kubeVersion string
	for _, r := range ours.Require {
		if r.Mod.Path == "k8s.io/kubernetes" {
			kubeVersion = r.Mod.Version
		}
	}
	if !regexp.MustCompile(`^v1\.\d+\.\d+$`).MatchString(kubeVersion) {
		t.Fatalf("k8s.io/kubernetes version = %q, want a release", kubeVersion)
	}
	stagingVersion := "v0." + strings.TrimPrefix(kubeVersion, "v1.")

	out, err := exec.Command("go", "mod", "download", "-json", "k8s.io/kubernetes@"+kubeVersion).Output()
	if err != nil {
		t.Fatalf("go mod download: %v", err)
	}
	var info struct{ GoMod string }
	if err := json.Unmarshal(out, &info); err != nil {
		t.Fatal(err)
	}
	upstream := parse(t, info.GoMod)

	want := map[string]bool{}
	for _, r := range upstream.Replace {
		if strings.HasPrefix(r.New.Path, "./staging/") {
			want[r.Old.Path] = true
		}
	}
	if len(want) < 20 {
		t.Fatalf("found only %d staging modules in upstream go.mod", len(want))
	}
	got := map[string]string{}
	for _, r := range ours.Replace {
		if strings.HasPrefix(r.Old.Path, "k8s.io/") {
			got[r.Old.Path] = r.New.Path + "@" + r.New.Version
		}
	}
	for mod := range want {
		if got[mod] != mod+"@"+stagingVersion {
			t.Errorf("replace %s => %q, want %s@%s (run hack/update-kube-version.sh)", mod, got[mod], mod, stagingVersion)
		}
	}
	for mod := range got {
		if !want[mod] {
			t.Errorf("replace for %s, which is not an upstream staging module", mod)
		}
	}
}

func parse(t *testing.T, path string) *modfile.File {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := modfile.Parse(path, data, nil)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

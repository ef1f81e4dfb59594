package kwokcluster

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestCountRequests(t *testing.T) {
	lines := []string{
		// A LIST of pods across namespaces, counted when complete.
		`{"stage":"ResponseComplete","verb":"list","userAgent":"kwok/v0.8.0 (linux/amd64)","user":{"username":"kwok-controller"},"objectRef":{"resource":"pods"}}`,
		`{"stage":"ResponseComplete","verb":"list","userAgent":"kwok/v0.8.0 (linux/amd64)","user":{"username":"kwok-controller"},"objectRef":{"resource":"pods"}}`,
		// A watch, counted when it started, not again when it ended.
		`{"stage":"ResponseStarted","verb":"watch","userAgent":"kube-scheduler/v1.37.2 (linux/amd64) kubernetes/abc/scheduler","user":{"username":"system:kube-scheduler"},"objectRef":{"resource":"pods"}}`,
		`{"stage":"ResponseComplete","verb":"watch","userAgent":"kube-scheduler/v1.37.2 (linux/amd64) kubernetes/abc/scheduler","user":{"username":"system:kube-scheduler"},"objectRef":{"resource":"pods"}}`,
		// A subresource in a namespace.
		`{"stage":"ResponseComplete","verb":"patch","userAgent":"kwok/v0.8.0","user":{"username":"kwok-controller"},"objectRef":{"resource":"pods","subresource":"status","namespace":"default"}}`,
		// Not resource requests: discovery, health.
		`{"stage":"ResponseComplete","verb":"get","userAgent":"kubectl/v1.37.2","user":{"username":"admin"}}`,
		`{"stage":"Panic","verb":"get","user":{"username":"admin"},"objectRef":{"resource":"pods"}}`,
	}
	path := filepath.Join(t.TempDir(), "audit.log")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := CountRequests(path)
	if err != nil {
		t.Fatal(err)
	}
	want := map[Request]int{
		{Verb: "list", Resource: "pods", Scope: "cluster", Client: "kwok-controller (kwok)"}:                  2,
		{Verb: "watch", Resource: "pods", Scope: "cluster", Client: "system:kube-scheduler (kube-scheduler)"}: 1,
		{Verb: "patch", Resource: "pods/status", Scope: "namespace", Client: "kwok-controller (kwok)"}:        1,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("counts (-want +got):\n%s", diff)
	}

	// The workload's polling is not the cluster's.
	for r := range got {
		if !r.FromCluster() {
			t.Errorf("%s: not from the cluster", r)
		}
	}
	if admin := (Request{Verb: "list", Resource: "deployments", Scope: "namespace", Client: "kubernetes-admin (integration.test)"}); admin.FromCluster() {
		t.Errorf("%s: from the cluster", admin)
	}

	// A line that is not an audit event names the line.
	if err := os.WriteFile(path, []byte(lines[0]+"\nnot json\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := CountRequests(path); err == nil || !strings.Contains(err.Error(), "audit.log:2") {
		t.Errorf("error %v, want one naming line 2", err)
	}
}

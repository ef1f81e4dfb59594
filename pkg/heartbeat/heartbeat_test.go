package heartbeat

import (
	"strings"
	"testing"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		method, path, query string
		want                Kind
	}{
		{"PUT", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/node-1", "", NodeLease},
		{"GET", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/node-1", "", NodeLease},
		{"PATCH", "/apis/coordination.k8s.io/v1beta1/namespaces/kube-node-lease/leases/node-1", "", NodeLease},
		{"POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", "", NodeLease},
		{"PUT", "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-scheduler", "", LeaderElection},
		{"POST", "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases", "", LeaderElection},
		{"PATCH", "/api/v1/nodes/node-1/status", "", NodeStatus},
		{"PUT", "/api/v1/nodes/node-1/status", "", NodeStatus},
		{"GET", "/api/v1/nodes/node-1", "resourceVersion=0", NodeStatus},

		// Not heartbeats.
		{"GET", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", "", None},                  // LIST
		{"GET", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/node-1", "watch=true", None}, // WATCH
		{"GET", "/api/v1/nodes/node-1", "watch=1", None},
		{"DELETE", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/node-1", "", None},
		{"PUT", "/apis/coordination.k8s.io/v1/namespaces/default/leases/x", "", None},
		{"PUT", "/apis/coordination.k8s.io/v2/namespaces/kube-node-lease/leases/node-1", "", None},
		{"GET", "/api/v1/nodes", "", None},
		{"PUT", "/api/v1/nodes/node-1", "", None},
		{"DELETE", "/api/v1/nodes/node-1", "", None},
		{"GET", "/api/v1/pods", "", None},
		{"PUT", "/api/v1/nodes//status", "", None},
		{"PUT", "/api/v1/nodes/../status", "", None},
		{"PUT", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/", "", None},
		{"GET", "/api/v1/nodes/node-1/proxy", "", None},
		{"GET", "", "", None},
		{"GET", "/", "", None},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path+"?"+tt.query, func(t *testing.T) {
			if got := Classify(tt.method, tt.path, tt.query); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

// FuzzClassify checks that no input panics, and that whatever is classified
// as a heartbeat is a single-object request on one of the three paths.
func FuzzClassify(f *testing.F) {
	f.Add("PUT", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/node-1", "")
	f.Add("PATCH", "/api/v1/nodes/n/status", "")
	f.Add("GET", "/api/v1/nodes/n", "watch=true")
	f.Add("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases", "%zz")
	f.Fuzz(func(t *testing.T, method, path, query string) {
		k := Classify(method, path, query)
		if k == None {
			return
		}
		if strings.Contains(path, "..") || strings.Contains(path, "//") {
			t.Fatalf("%s %s classified %v despite a non-canonical path", method, path, k)
		}
		switch k {
		case NodeLease:
			if !strings.Contains(path, "/namespaces/kube-node-lease/leases") {
				t.Fatalf("%s %s is not a node lease path", method, path)
			}
		case LeaderElection:
			if !strings.Contains(path, "/namespaces/kube-system/leases") {
				t.Fatalf("%s %s is not a kube-system lease path", method, path)
			}
		case NodeStatus:
			if !strings.HasPrefix(path, "/api/v1/nodes/") {
				t.Fatalf("%s %s is not a node path", method, path)
			}
		}
		if method != "GET" && method != "PUT" && method != "PATCH" && method != "POST" {
			t.Fatalf("method %q classified %v", method, k)
		}
	})
}

package kwokcluster

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// auditPolicy logs the metadata of every request once, when its response
// is complete (a watch: when it started), and nothing of the bodies.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
`

// AuditArgs writes an audit policy to dir and returns the apiserver flags
// that log every request's metadata to dir/audit.log, for CountRequests.
// Both servers of a comparison get the same flags (upstream's own).
func AuditArgs(dir string) ([]string, error) {
	policy := filepath.Join(dir, "audit-policy.yaml")
	if err := os.WriteFile(policy, []byte(auditPolicy), 0o644); err != nil {
		return nil, err
	}
	return []string{
		"--audit-policy-file=" + policy,
		"--audit-log-path=" + AuditLog(dir),
		"--audit-log-maxsize=0", // one file: CountRequests reads it whole
	}, nil
}

// AuditLog is the audit log AuditArgs configures.
func AuditLog(dir string) string { return filepath.Join(dir, "audit.log") }

// Request is a kind of request, as the requests of a workload are told
// apart when two servers are compared: verb, resource (with subresource),
// scope (cluster or namespace) and the client (user, and the program its
// User-Agent names).
type Request struct {
	Verb, Resource, Scope, Client string
}

// adminUser is the user of internal/pki's admin certificate, which the
// workload and the harness use.
const adminUser = "kubernetes-admin"

// FromCluster tells whether the request was sent by the cluster (its
// components, the apiserver's own loopback) rather than by the workload
// and the harness, whose polling lasts as long as the workload does.
func (r Request) FromCluster() bool { return !strings.HasPrefix(r.Client, adminUser+" ") }

func (r Request) String() string {
	return fmt.Sprintf("%s %s (%s) by %s", r.Verb, r.Resource, r.Scope, r.Client)
}

// auditEvent is what CountRequests reads of an audit event.
type auditEvent struct {
	Stage     string `json:"stage"`
	Verb      string `json:"verb"`
	UserAgent string `json:"userAgent"`
	User      struct {
		Username string `json:"username"`
	} `json:"user"`
	ObjectRef *struct {
		Resource    string `json:"resource"`
		Subresource string `json:"subresource"`
		Namespace   string `json:"namespace"`
	} `json:"objectRef"`
}

// CountRequests counts the resource requests in an audit log written with
// AuditArgs, each once: a watch when it started, any other when it
// completed.
func CountRequests(path string) (map[Request]int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	counts := map[Request]int{}
	scanner := bufio.NewScanner(f)
	scanner.Buffer(make([]byte, 1<<20), 16<<20)
	for line := 1; scanner.Scan(); line++ {
		var e auditEvent
		if err := json.Unmarshal(scanner.Bytes(), &e); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		if e.ObjectRef == nil || e.ObjectRef.Resource == "" {
			continue // discovery, /healthz, /metrics
		}
		if e.Verb == "watch" && e.Stage != "ResponseStarted" || e.Verb != "watch" && e.Stage != "ResponseComplete" {
			continue
		}
		r := Request{Verb: e.Verb, Resource: e.ObjectRef.Resource, Scope: "cluster", Client: e.User.Username}
		if e.ObjectRef.Subresource != "" {
			r.Resource += "/" + e.ObjectRef.Subresource
		}
		if e.ObjectRef.Namespace != "" {
			r.Scope = "namespace"
		}
		if program, _, _ := strings.Cut(e.UserAgent, "/"); program != "" {
			r.Client += " (" + program + ")"
		}
		counts[r]++
	}
	return counts, scanner.Err()
}

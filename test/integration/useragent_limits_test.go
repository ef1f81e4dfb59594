package integration

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/bulwark-k8s/bulwark/test/integration/framework"
)

const limitsHeader = "apiVersion: bulwark.k8s.io/v1alpha1\nkind: UserAgentLimits\nrules:\n"

const blockFlooder = limitsHeader + `- name: block-flooder
  userAgent: '^flooder/'
  qps: 0
`

// call sends one request as userAgent with admin credentials (or none) and
// returns the status code and body; client-go's retry of 429 is not in the way.
func call(t *testing.T, s *framework.APIServer, method, path, userAgent string, anonymous bool) (int, []byte) {
	t.Helper()
	cfg := rest.CopyConfig(s.Config)
	if anonymous {
		cfg = &rest.Config{Host: cfg.Host, TLSClientConfig: rest.TLSClientConfig{CAFile: cfg.CAFile}}
	}
	client, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, s.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("User-Agent", userAgent)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	// Write then rename, as a ConfigMap update or an editor does.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestUserAgentLimits runs the binary with a limits file: a blocked
// User-Agent gets 429 while others do not, its heartbeats and health checks
// pass, a change takes effect without restart, and a broken file changes
// nothing but is reported.
func TestUserAgentLimits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "limits.yaml")
	writeFile(t, path, blockFlooder)
	etcd := framework.StartEtcd(t, framework.EtcdOptions{})
	s := framework.StartAPIServer(t, framework.APIServerOptions{Etcd: etcd, Args: []string{"--user-agent-limits-config=" + path}})

	var code int
	var body []byte
	for range 20 {
		if code, body = call(t, s, "GET", "/api/v1/pods", "flooder/1.0", false); code != http.StatusTooManyRequests {
			t.Fatalf("flooder LIST: %d %s, want 429", code, body)
		}
	}
	var status metav1.Status
	if err := json.Unmarshal(body, &status); err != nil || status.Reason != metav1.StatusReasonTooManyRequests {
		t.Errorf("429 body is not a TooManyRequests Status: %v %s", err, body)
	}
	// Rejected before authentication: even without credentials.
	if code, body := call(t, s, "GET", "/api/v1/pods", "flooder/1.0", true); code != http.StatusTooManyRequests {
		t.Errorf("anonymous flooder LIST: %d %s, want 429", code, body)
	}
	if code, body := call(t, s, "GET", "/api/v1/pods", "kubectl/v1.37.2", false); code != http.StatusOK {
		t.Errorf("other client LIST: %d %s, want 200", code, body)
	}
	for _, path := range []string{
		"/readyz", "/livez", "/healthz", "/metrics",
		"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/node-1", // heartbeat: 404, not 429
		"/api/v1/nodes/node-1",
	} {
		if code, body := call(t, s, "GET", path, "flooder/1.0", false); code == http.StatusTooManyRequests {
			t.Errorf("flooder GET %s was rejected: %s", path, body)
		}
	}

	// The flooder shows among the top talkers with every request it sent,
	// rejected ones included (the apiserver's own loopback client is busy
	// at start-up too).
	code, body = call(t, s, "GET", "/debug/bulwark/user-agents", "kubectl", false)
	type talker struct {
		UserAgent string
		Requests  int
	}
	var talkers struct {
		Current  []talker `json:"currentWindow"`
		Previous []talker `json:"previousWindow"`
	}
	if err := json.Unmarshal(body, &talkers); code != http.StatusOK || err != nil {
		t.Fatalf("top talkers: %d %v %s", code, err, body)
	}
	flooderRequests := 0
	// Sum both windows: a minute may have turned during the test.
	for _, c := range append(talkers.Current, talkers.Previous...) {
		if c.UserAgent == "flooder" {
			flooderRequests = c.Requests
		}
	}
	if flooderRequests < 21 {
		t.Errorf("top talkers count %d flooder requests, want at least 21: %s", flooderRequests, body)
	}

	// Unblock at run time.
	writeFile(t, path, limitsHeader+"- name: block-nobody\n  userAgent: '^nobody$'\n  qps: 0\n")
	waitUntil(t, 15*time.Second, "flooder unblocked", func() bool {
		code, _ := call(t, s, "GET", "/api/v1/pods", "flooder/1.0", false)
		return code == http.StatusOK
	})

	// A broken file changes nothing and is reported.
	writeFile(t, path, blockFlooder+"  qsp: 1\n")
	waitUntil(t, 15*time.Second, "broken config reported", func() bool {
		return strings.Contains(metrics(t, s), "bulwark_user_agent_limit_config_last_load_successful 0")
	})
	if code, body := call(t, s, "GET", "/api/v1/pods", "flooder/1.0", false); code != http.StatusOK {
		t.Errorf("broken config changed the rules in force: flooder got %d %s", code, body)
	}
	code, body = call(t, s, "GET", "/debug/bulwark/user-agent-limits", "kubectl", false)
	if code != http.StatusOK || !strings.Contains(string(body), "line 7") || !strings.Contains(string(body), "block-nobody") {
		t.Errorf("debug endpoint: %d %s, want the rules in force and the error at line 7", code, body)
	}
	if code, _ := call(t, s, "GET", "/debug/bulwark/user-agent-limits", "kubectl", true); code != http.StatusForbidden && code != http.StatusUnauthorized {
		t.Errorf("anonymous debug endpoint: %d, want 401 or 403", code)
	}
}

func metrics(t *testing.T, s *framework.APIServer) string {
	t.Helper()
	code, body := call(t, s, "GET", "/metrics", "test", false)
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	return string(body)
}

func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/bulwark-k8s/bulwark/internal/pki"
	"github.com/bulwark-k8s/bulwark/test/integration/framework"
)

// TestFiltersChangeNoAuthorization sends the same requests, as the same
// identities, to Bulwark and to upstream, both on one etcd: every path our
// filters touch (LISTs and WATCHes the gate and the indexes serve, the
// heartbeats the shedding lets through, health, metrics and debug
// endpoints) must get upstream's status code. Our own debug endpoints
// require authorization like upstream's. A User-Agent our limits block gets
// 429 before authentication, which refuses and never admits: wherever
// upstream refuses an identity, so do we.
func TestFiltersChangeNoAuthorization(t *testing.T) {
	ctx := context.Background()
	etcd := framework.StartEtcd(t, framework.EtcdOptions{})
	bundle, err := pki.Ensure(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	limits := filepath.Join(t.TempDir(), "limits.yaml")
	writeFile(t, limits, limitsHeader+"- {name: blocked, userAgent: '^blocked/', qps: 0}\n")
	ours := framework.StartAPIServer(t, framework.APIServerOptions{Etcd: etcd, PKI: bundle, Name: "bulwark", Args: []string{"--user-agent-limits-config=" + limits}})
	upstream := framework.StartAPIServer(t, framework.APIServerOptions{Etcd: etcd, PKI: bundle, Name: "upstream", Binary: framework.Bins(t).Upstream})

	admin := ours.Client
	if _, err := admin.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "nobody"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	token, err := admin.CoreV1().ServiceAccounts("default").CreateToken(ctx, "nobody", &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CoordinationV1().Leases("kube-node-lease").Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	identities := map[string]func(*rest.Config) *rest.Config{
		"admin":     func(c *rest.Config) *rest.Config { return c },
		"anonymous": anonymous,
		"bad token": func(c *rest.Config) *rest.Config { a := anonymous(c); a.BearerToken = "not-a-token"; return a },
		"unprivileged service account": func(c *rest.Config) *rest.Config {
			a := anonymous(c)
			a.BearerToken = token.Status.Token
			return a
		},
	}
	now := time.Now().UTC().Format(time.RFC3339Nano)
	type request struct{ method, path, contentType, body string }
	requests := []request{
		{"GET", "/api/v1/pods", "", ""},
		{"GET", "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb", "", ""},
		{"GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1&resourceVersion=0", "", ""},
		{"GET", "/api/v1/pods?watch=true&timeoutSeconds=1", "", ""},
		{"GET", "/api/v1/namespaces/default/configmaps?limit=1", "", ""},
		{"POST", "/api/v1/namespaces/default/configmaps", "application/json", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"generateName":"probe-"}}`},
		{"GET", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/node-1", "", ""},
		{"PATCH", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/node-1", "application/merge-patch+json", fmt.Sprintf(`{"spec":{"renewTime":%q}}`, now)},
		{"PATCH", "/api/v1/nodes/node-1/status", "application/merge-patch+json", `{"status":{"conditions":[{"type":"Ready","status":"True","reason":"KubeletReady"}]}}`},
		{"GET", "/readyz", "", ""},
		{"GET", "/livez", "", ""},
		{"GET", "/healthz", "", ""},
		{"GET", "/version", "", ""},
		{"GET", "/metrics", "", ""},
		{"GET", "/debug/pprof/", "", ""},
		{"GET", "/debug/flags/v", "", ""},
		{"GET", "/debug/bulwark/user-agents", "", ""},
		{"GET", "/debug/bulwark/user-agent-limits", "", ""},
	}
	cases := 0
	for name, as := range identities {
		for _, r := range requests {
			probe := func(s *framework.APIServer, userAgent string) int {
				cases++
				return send(t, as(rest.CopyConfig(s.Config)), r.method, s.URL+r.path, userAgent, r.contentType, r.body)
			}
			what := fmt.Sprintf("%s %s as %s", r.method, r.path, name)
			want, got := probe(upstream, "probe/1.0"), probe(ours, "probe/1.0")
			if strings.HasPrefix(r.path, "/debug/bulwark/") {
				// Upstream has no such path: 404 for whoever may ask.
				if name == "admin" {
					want = http.StatusOK
				} else if got != http.StatusUnauthorized && got != http.StatusForbidden {
					t.Errorf("%s: %d, want 401 or 403", what, got)
					continue
				}
			}
			if got != want {
				t.Errorf("%s: Bulwark %d, upstream %d", what, got, want)
			}
			if blocked := probe(ours, "blocked/1.0"); blocked != want && blocked != http.StatusTooManyRequests {
				t.Errorf("%s from a blocked User-Agent: %d, want 429 or upstream's %d", what, blocked, want)
			}
		}
	}
	figure(t, "requests compared (identities × paths × User-Agents)", float64(cases), "requests")
}

// anonymous is c without credentials.
func anonymous(c *rest.Config) *rest.Config {
	return &rest.Config{Host: c.Host, TLSClientConfig: rest.TLSClientConfig{CAFile: c.CAFile}}
}

// send sends one request and returns its status code.
func send(t *testing.T, cfg *rest.Config, method, url, userAgent, contentType, body string) int {
	t.Helper()
	client, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("User-Agent", userAgent)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

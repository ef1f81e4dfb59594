package filters

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	genericapifilters "k8s.io/apiserver/pkg/endpoints/filters"
	"k8s.io/apiserver/pkg/endpoints/request"
)

var requestInfoResolver = &request.RequestInfoFactory{
	APIPrefixes:          sets.NewString("api", "apis"),
	GrouplessAPIPrefixes: sets.NewString("api"),
}

// withRequestInfo puts upstream's RequestInfo filter around h, as
// cmd/kube-apiserver puts it around Bulwark's filters.
// withRequestInfo puts a filter behind what the chain runs before it: the
// RequestInfo and the heartbeat classification.
func withRequestInfo(h http.Handler) http.Handler {
	return genericapifilters.WithRequestInfo(WithHeartbeats(h), requestInfoResolver)
}

func writeConfig(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func newLimiter(t testing.TB, content string) (*UserAgentLimiter, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "limits.yaml")
	writeConfig(t, path, content)
	l, err := NewUserAgentLimiter(path)
	if err != nil {
		t.Fatal(err)
	}
	return l, path
}

func serve(h http.Handler, method, target, userAgent string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, target, nil)
	req.Header.Set("User-Agent", userAgent)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

var okHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })

func TestWithUserAgentLimits(t *testing.T) {
	limiter, _ := newLimiter(t, validConfig)
	h := withRequestInfo(WithUserAgentLimits(okHandler, limiter))
	tests := []struct {
		name, method, target, userAgent string
		want                            int
	}{
		{"blocked client", "GET", "/api/v1/pods", "flooder/1.0", http.StatusTooManyRequests},
		{"blocked client, any verb", "POST", "/api/v1/namespaces/a/pods", "flooder/1.0", http.StatusTooManyRequests},
		{"other client", "GET", "/api/v1/pods", "kubectl/v1.37.2", http.StatusOK},
		{"no User-Agent", "GET", "/api/v1/pods", "", http.StatusOK},
		{"health check of a blocked client", "GET", "/readyz", "flooder/1.0", http.StatusOK},
		{"health subcheck", "GET", "/livez/ping", "flooder/1.0", http.StatusOK},
		{"metrics", "GET", "/metrics", "flooder/1.0", http.StatusOK},
		{"node lease of a blocked client", "PUT", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1", "flooder/1.0", http.StatusOK},
		{"node status of a blocked client", "PATCH", "/api/v1/nodes/n1/status", "flooder/1.0", http.StatusOK},
		{"unmatched verb of a limited client", "GET", "/api/v1/namespaces/a/pods/p", "node-agent/2", http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := serve(h, tt.method, tt.target, tt.userAgent).Code; got != tt.want {
				t.Errorf("got %d, want %d", got, tt.want)
			}
		})
	}
}

func TestRejectionIsAStatusWithRetryAfter(t *testing.T) {
	limiter, _ := newLimiter(t, validConfig)
	rec := serve(withRequestInfo(WithUserAgentLimits(okHandler, limiter)), "GET", "/api/v1/pods", "flooder/1.0")
	if got := rec.Header().Get("Retry-After"); got != "30" {
		t.Errorf("Retry-After = %q, want 30", got)
	}
	var status metav1.Status
	if err := json.Unmarshal(rec.Body.Bytes(), &status); err != nil {
		t.Fatalf("body is not a Status: %v: %s", err, rec.Body)
	}
	if status.Kind != "Status" || status.Reason != metav1.StatusReasonTooManyRequests || status.Code != 429 || status.Details == nil || status.Details.RetryAfterSeconds != 30 {
		t.Errorf("unexpected status: %+v", status)
	}
}

func TestPerUserAgentBuckets(t *testing.T) {
	limiter, _ := newLimiter(t, validConfig)
	h := withRequestInfo(WithUserAgentLimits(okHandler, limiter))
	count := func(userAgent string) (ok int) {
		for range 20 {
			if serve(h, "GET", "/api/v1/pods", userAgent).Code == http.StatusOK {
				ok++
			}
		}
		return ok
	}
	// burst 10 at 5 qps: 10 at once, maybe one more refilled meanwhile.
	if got := count("node-agent/a"); got < 10 || got > 11 {
		t.Errorf("node-agent/a got %d of 20 through, want the burst of 10", got)
	}
	if got := count("node-agent/b"); got < 10 || got > 11 {
		t.Errorf("node-agent/b got %d of 20 through; its bucket is not its own", got)
	}
}

func TestReload(t *testing.T) {
	limiter, path := newLimiter(t, validConfig)
	h := withRequestInfo(WithUserAgentLimits(okHandler, limiter))
	blocked := func() bool { return serve(h, "GET", "/api/v1/pods", "flooder/1.0").Code == http.StatusTooManyRequests }
	if !blocked() {
		t.Fatal("flooder not blocked by the initial config")
	}

	unblocked := strings.Replace(validConfig, "'^flooder/'", "'^nobody$'", 1)
	writeConfig(t, path, unblocked)
	if err := limiter.load(); err != nil {
		t.Fatal(err)
	}
	if blocked() {
		t.Fatal("changed config did not take effect")
	}

	writeConfig(t, path, validConfig+"  bogus: true\n")
	err := limiter.load()
	if err == nil || !strings.Contains(err.Error(), "line 14") {
		t.Fatalf("broken config: err = %v, want one naming line 14", err)
	}
	if blocked() {
		t.Fatal("broken config changed the rules in force")
	}
	if s := limiter.Status(); !strings.Contains(s.LastError, "line 14") || s.Config.Rules[0].UserAgent != "^nobody$" {
		t.Errorf("status after a broken file: %+v", s)
	}
	if err := limiter.load(); err != nil {
		t.Errorf("the same broken file was reported twice: %v", err)
	}

	writeConfig(t, path, unblocked)
	if err := limiter.load(); err != nil {
		t.Fatal(err)
	}
	if s := limiter.Status(); s.LastError != "" {
		t.Errorf("error not cleared after the file was fixed: %q", s.LastError)
	}
}

func TestNewUserAgentLimiterRejectsInvalidFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "limits.yaml")
	writeConfig(t, path, "apiVersion: v1\n")
	if _, err := NewUserAgentLimiter(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("err = %v, want an error naming the file", err)
	}
}

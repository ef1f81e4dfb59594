package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bulwark-k8s/bulwark/pkg/embeddedetcd"
	"github.com/bulwark-k8s/bulwark/test/integration/framework"
)

// TestEmbeddedEtcd starts the binary without --etcd-servers, as `make run`
// does: it must serve, report its version, keep data across a graceful
// restart, and run etcd with the large-cluster quota.
func TestEmbeddedEtcd(t *testing.T) {
	ctx := context.Background()
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", framework.FreePort(t))
	s := framework.StartAPIServer(t, framework.APIServerOptions{Args: []string{
		"--embedded-etcd-data-dir=" + t.TempDir(),
		"--embedded-etcd-listen-client-url=" + etcdURL,
		fmt.Sprintf("--embedded-etcd-listen-peer-url=http://127.0.0.1:%d", framework.FreePort(t)),
	}})

	v, err := s.Client.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	if v.Major != "1" || !regexp.MustCompile(`^v1\.`+v.Minor+`\.\d+-bulwark\.\d+$`).MatchString(v.GitVersion) {
		t.Errorf("/version = %+v, want major 1 and gitVersion v1.<minor>.<patch>-bulwark.<n>", v)
	}

	quota, err := strconv.ParseFloat(etcdMetric(t, etcdURL, "etcd_server_quota_backend_bytes"), 64)
	if err != nil || quota != embeddedetcd.DefaultQuotaBackendBytes {
		t.Errorf("embedded etcd quota = %v (%v), want %d", quota, err, embeddedetcd.DefaultQuotaBackendBytes)
	}

	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "survivor"}, Data: map[string]string{"k": "v"}}
	if _, err := s.Client.CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	s.Restart(t)

	got, err := s.Client.CoreV1().ConfigMaps("default").Get(ctx, "survivor", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("after restart: %v", err)
	}
	if got.Data["k"] != "v" {
		t.Errorf("after restart: data = %v", got.Data)
	}
}

// etcdMetric returns the value of an unlabelled metric from etcd's /metrics.
func etcdMetric(t *testing.T, etcdURL, name string) string {
	t.Helper()
	resp, err := http.Get(etcdURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if value, ok := strings.CutPrefix(line, name+" "); ok {
			return value
		}
	}
	t.Fatalf("etcd /metrics has no %s", name)
	return ""
}

package app

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

func TestOptionsValidate(t *testing.T) {
	dir := t.TempDir()
	goodLimits := filepath.Join(dir, "good.yaml")
	brokenLimits := filepath.Join(dir, "broken.yaml")
	writeTestFile(t, goodLimits, "apiVersion: bulwark.k8s.io/v1alpha1\nkind: UserAgentLimits\nrules:\n- name: r\n  userAgent: '^x$'\n  qps: 1\n")
	writeTestFile(t, brokenLimits, "apiVersion: bulwark.k8s.io/v1alpha1\nkind: UserAgentLimits\nrules:\n- name: r\n  userAgent: '^x$'\n  qsp: 1\n")

	for _, tc := range []struct {
		args []string
		// wantErr is a part of the one error wanted, "" for none.
		wantErr string
	}{
		{args: nil},
		{args: []string{"--embedded-etcd-data-dir="}, wantErr: "--embedded-etcd-*: embedded etcd: data dir"},
		{args: []string{"--embedded-etcd-listen-client-url=http://10.0.0.1:2379"}, wantErr: "client URL"},
		{args: []string{"--embedded-etcd-listen-peer-url=nonsense"}, wantErr: "peer URL"},
		{args: []string{"--embedded-etcd-quota-backend-bytes=-1"}, wantErr: "quota backend bytes"},
		{args: []string{"--embedded-etcd-start-timeout=-1s"}, wantErr: "--embedded-etcd-start-timeout: must not be negative"},
		{args: []string{"--user-agent-limits-config=" + goodLimits}},
		{args: []string{"--user-agent-limits-config=" + brokenLimits}, wantErr: "--user-agent-limits-config " + brokenLimits + ": line 6"},
		{args: []string{"--user-agent-limits-config=" + filepath.Join(dir, "missing.yaml")}, wantErr: "--user-agent-limits-config"},
		{args: []string{"--cache-not-ready-gate=false"}},
		{args: []string{"--overload-soft-inflight=0", "--overload-hard-inflight=0"}},
		{args: []string{"--overload-soft-inflight=-1"}, wantErr: "--overload-soft-inflight: must not be negative"},
		{args: []string{"--overload-hard-inflight=-1"}, wantErr: "--overload-hard-inflight: must not be negative"},
		{args: []string{"--overload-soft-inflight=5000"}, wantErr: "--overload-soft-inflight (5000) must not be above --overload-hard-inflight (4000)"},
		{args: []string{"--overload-soft-inflight=5000", "--overload-hard-inflight=0"}},
		{args: []string{"--overload-soft-scheduler-latency=-1ms"}, wantErr: "--overload-soft-scheduler-latency: must not be negative"},
		{args: []string{"--overload-hard-scheduler-latency=-1ms"}, wantErr: "--overload-hard-scheduler-latency: must not be negative"},
		{args: []string{"--overload-soft-scheduler-latency=250ms", "--overload-hard-scheduler-latency=1s"}},
		{args: []string{"--overload-soft-scheduler-latency=2s", "--overload-hard-scheduler-latency=1s"}, wantErr: "--overload-soft-scheduler-latency (2000000000) must not be above --overload-hard-scheduler-latency"},
		{args: []string{"--overload-soft-scheduler-latency=2s"}},
		{args: []string{"--max-concurrent-large-lists=0"}},
		{args: []string{"--max-concurrent-large-lists=-4"}, wantErr: "--max-concurrent-large-lists: must not be negative"},
		{args: []string{"--large-list-min-bytes=64Mi"}},
		{args: []string{"--large-list-min-bytes=-1Mi"}, wantErr: "--large-list-min-bytes: must be positive"},
		{args: []string{"--large-list-min-bytes=0"}, wantErr: "--large-list-min-bytes: must be positive"},
		{args: []string{"--watch-cache-label-indexes=pods:app,deployments.apps:app.kubernetes.io/name"}},
		{args: []string{"--watch-cache-label-indexes=pods"}, wantErr: "--watch-cache-label-indexes, --watch-cache-field-indexes: label index \"pods\""},
		{args: []string{"--watch-cache-field-indexes=pods:status.phase"}},
		{args: []string{"--watch-cache-field-indexes=pods:not a field"}, wantErr: "field index"},
		{args: []string{"--watch-bookmark-interval=0"}},
		{args: []string{"--watch-bookmark-interval=1s"}},
		{args: []string{"--watch-bookmark-interval=500ms"}, wantErr: "--watch-bookmark-interval: want 0 (upstream's) or at least 1s"},
		{args: []string{"--watch-bookmark-interval=-10s"}, wantErr: "--watch-bookmark-interval"},
		{args: []string{"--watch-cache-start-history-budget=0"}},
		{args: []string{"--watch-cache-start-history-budget=-1"}, wantErr: "--watch-cache-start-history-budget: must not be negative"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			o := NewOptions()
			fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
			o.AddFlags(fs)
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			errs := o.Validate()
			switch {
			case tc.wantErr == "" && len(errs) > 0:
				t.Errorf("errors %v, want none", errs)
			case tc.wantErr != "" && (len(errs) != 1 || !strings.Contains(errs[0].Error(), tc.wantErr)):
				t.Errorf("errors %v, want one with %q", errs, tc.wantErr)
			}
		})
	}
}

// TestOptionsValidateParsesIndexes: the server uses the indexes Validate parsed.
func TestOptionsValidateParsesIndexes(t *testing.T) {
	o := NewOptions()
	o.WatchCacheFieldIndexes = []string{"pods:status.phase"}
	if errs := o.Validate(); len(errs) > 0 {
		t.Fatal(errs)
	}
	pods := schema.GroupResource{Resource: "pods"}
	if got := o.indexes.Fields[pods]; len(got) != 1 || got[0] != "status.phase" {
		t.Errorf("field indexes of pods: %v", got)
	}
	if got := o.indexes.Labels[pods]; len(got) != len(NewOptions().WatchCacheLabelIndexes) {
		t.Errorf("label indexes of pods: %v, want the defaults", got)
	}
}

func writeTestFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

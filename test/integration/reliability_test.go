package integration

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
)

// The reliability suite (docs/reliability.md) runs in `make test` at a size
// that fits CI, and at full size, with its figures written to a report,
// through `make reliability`, which sets BULWARK_RELIABILITY=full and
// BULWARK_RELIABILITY_REPORT.

// fullSize tells whether the suite runs at the size of `make reliability`.
func fullSize() bool { return os.Getenv("BULWARK_RELIABILITY") == "full" }

// sized is quick in `make test` and full in `make reliability`.
func sized[T any](quick, full T) T {
	if fullSize() {
		return full
	}
	return quick
}

var reportMu sync.Mutex

// figure records one figure of the reliability table: it is logged, and
// appended to the report `make reliability` writes.
func figure(t *testing.T, name string, value float64, unit string) {
	t.Helper()
	t.Logf("figure: %s = %.4g %s", name, value, unit)
	path := os.Getenv("BULWARK_RELIABILITY_REPORT")
	if path == "" {
		return
	}
	reportMu.Lock()
	defer reportMu.Unlock()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fmt.Fprintf(f, "%s\t%s\t%.4g\t%s\n", t.Name(), name, value, unit)
}

// rssMiB is the resident memory of a process.
func rssMiB(t *testing.T, pid int) float64 {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kib, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				t.Fatal(err)
			}
			return kib / 1024
		}
	}
	t.Fatalf("no VmRSS for process %d", pid)
	return 0
}

// latencies collects request durations from many goroutines.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

// quantile is the q-quantile of what was added, 0 if nothing was.
func (l *latencies) quantile(q float64) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		return 0
	}
	s := slices.Clone(l.d)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

func (l *latencies) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.d)
}

// writers create ConfigMaps in a loop, each on its own connection, and
// remember every create the apiserver acknowledged.
type writers struct {
	cancel       context.CancelFunc
	wg           sync.WaitGroup
	ok, failed   atomic.Int64
	mu           sync.Mutex
	acknowledged []string
}

func startWriters(t *testing.T, config *rest.Config, namespace string, n int) *writers {
	ctx, cancel := context.WithCancel(context.Background())
	w := &writers{cancel: cancel}
	for i := range n {
		client := ownConnectionClient(t, config)
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			for j := 0; ctx.Err() == nil; j++ {
				name := fmt.Sprintf("written-%d-%d", i, j)
				reqCtx, done := context.WithTimeout(ctx, 5*time.Second)
				_, err := client.CoreV1().ConfigMaps(namespace).Create(reqCtx, &corev1.ConfigMap{
					ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"n": strconv.Itoa(j)},
				}, metav1.CreateOptions{})
				done()
				switch {
				case err == nil:
					w.ok.Add(1)
					w.mu.Lock()
					w.acknowledged = append(w.acknowledged, name)
					w.mu.Unlock()
				case ctx.Err() == nil:
					w.failed.Add(1)
					time.Sleep(100 * time.Millisecond)
				}
			}
		}()
	}
	return w
}

// stop stops the writers and returns the names of the acknowledged creates.
func (w *writers) stop() []string {
	w.cancel()
	w.wg.Wait()
	return w.acknowledged
}

// checkNothingLost fails the test unless every acknowledged ConfigMap is
// there, read back through a LIST from etcd.
func checkNothingLost(t *testing.T, config *rest.Config, namespace string, acknowledged []string) {
	t.Helper()
	client := ownConnectionClient(t, config)
	list, err := client.CoreV1().ConfigMaps(namespace).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	present := map[string]bool{}
	for _, cm := range list.Items {
		present[cm.Name] = true
	}
	lost := 0
	for _, name := range acknowledged {
		if !present[name] {
			lost++
			t.Errorf("acknowledged create of ConfigMap %s/%s lost", namespace, name)
		}
	}
	figure(t, "acknowledged writes", float64(len(acknowledged)), "writes")
	figure(t, "acknowledged writes lost", float64(lost), "writes")
}

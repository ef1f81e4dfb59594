package bookmark

import (
	"context"
	"fmt"
	"strconv"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/apiserver/pkg/storage"
)

// BenchmarkFanOut: one write delivered to many watchers that take
// bookmarks, served by the watch cache's own watches ("cache", upstream's
// path) or by this package's segments ("segments"). Besides the time per
// write, it reports the process's CPU time per write (etcd runs in the same
// process and costs both the same).
func BenchmarkFanOut(b *testing.B) {
	e := startEtcd(b)
	s, _ := e.newStorage(b, newManager(b, Config{Interval: DefaultInterval}))
	cache := s.(interface{ Unwrap() storage.Interface }).Unwrap()
	for _, c := range []struct {
		name    string
		storage storage.Interface
	}{{"cache", cache}, {"segments", s}} {
		b.Run(c.name, func(b *testing.B) {
			const watchers = 200
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			start := put(b, s, pod("ns", "fanout", nil))
			received := make(chan uint64, watchers)
			for range watchers {
				w, err := c.storage.Watch(ctx, prefix, watchOpts(start, ""))
				if err != nil {
					b.Fatal(err)
				}
				go func() {
					defer w.Stop()
					for event := range w.ResultChan() {
						if event.Type == watch.Bookmark {
							continue
						}
						// Not rvOf: b.Fatal belongs to the benchmark's goroutine.
						var rv uint64
						if o, err := meta.Accessor(event.Object); err == nil {
							rv, _ = strconv.ParseUint(o.GetResourceVersion(), 10, 64)
						}
						received <- rv
					}
				}()
			}
			cpu := cpuTime()
			for i := 0; b.Loop(); i++ {
				rv := put(b, s, pod("ns", "fanout", map[string]string{"i": fmt.Sprint(i)}))
				for range watchers {
					if got := <-received; got != rv {
						b.Fatalf("a watcher received resourceVersion %d, want %d", got, rv)
					}
				}
			}
			b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
		})
	}
}

// cpuTime is the CPU time the process has used.
func cpuTime() time.Duration {
	var u syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &u); err != nil {
		panic(err)
	}
	return time.Duration(u.Utime.Nano() + u.Stime.Nano())
}

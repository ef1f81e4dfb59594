package filters

import (
	"net/http"
	"strconv"
	"time"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/storage"
)

const (
	// largeListWait is how long a large LIST waits for a slot before it
	// gets 429: a burst (informers starting together) is served in turn,
	// a flood is turned away.
	largeListWait = time.Second
	// largeListPage is the largest limit a LIST may ask for and still not
	// count as large: client-go's informers page by 500.
	largeListPage = 500
	// assumedObjectSize stands in for the average size of a resource's
	// objects before its storage has estimated it.
	assumedObjectSize = 1 << 10
)

// ObjectCounts tells how many objects a resource has and their average
// size, keyed by the group-resource's String(): upstream's storage object
// count tracker, or cacher.ObjectCounts, which knows sooner after a start.
type ObjectCounts interface {
	Get(groupResource string) (storage.Stats, error)
}

// LargeListLimiter bounds the large LISTs served at once: those of a whole
// resource, cluster-wide, without a selector or a page limit, whose
// objects add up to minBytes or more. One such LIST of 50,000 pods builds
// a response of tens of megabytes; dozens at once (a DaemonSet's agents, a
// controller in a loop, many scripts) take gigabytes, and the CPU of their
// garbage collection from every other request, heartbeats included. API
// Priority and Fairness counts such a LIST as at most ten seats and exempts
// cluster admins; the in-flight thresholds of the overload shedding count
// it as one request. This limit counts it as what it is.
type LargeListLimiter struct {
	objects  ObjectCounts
	minBytes int64
	slots    chan struct{}
}

// NewLargeListLimiter lets maxConcurrent large LISTs be served at once.
func NewLargeListLimiter(objects ObjectCounts, minBytes int64, maxConcurrent int) *LargeListLimiter {
	return &LargeListLimiter{objects: objects, minBytes: minBytes, slots: make(chan struct{}, maxConcurrent)}
}

// large tells whether a request is a large LIST.
func (l *LargeListLimiter) large(r *http.Request, info *request.RequestInfo) bool {
	if !info.IsResourceRequest || info.Verb != "list" || info.Namespace != "" {
		return false
	}
	q := r.URL.Query()
	if q.Get("labelSelector") != "" || q.Get("fieldSelector") != "" {
		return false
	}
	if limit, err := strconv.ParseInt(q.Get("limit"), 10, 64); err == nil && limit > 0 && limit <= largeListPage {
		return false
	}
	stats, err := l.objects.Get(schema.GroupResource{Group: info.APIGroup, Resource: info.Resource}.String())
	if err != nil {
		return false // not counted yet: its watch cache is filling
	}
	size := stats.EstimatedAverageObjectSizeBytes
	if size <= 0 {
		size = assumedObjectSize
	}
	return stats.ObjectCount*size >= l.minBytes
}

// WithLargeListLimit serves large LISTs a few at a time: one that finds no
// slot within largeListWait gets 429. The apiserver's own loopback requests
// pass.
func WithLargeListLimit(handler http.Handler, l *LargeListLimiter, loopbackToken string) http.Handler {
	isLoopback := loopbackCheck(loopbackToken)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info, ok := request.RequestInfoFrom(r.Context())
		if !ok || isLoopback(r) || !l.large(r, info) {
			handler.ServeHTTP(w, r)
			return
		}
		wait := time.NewTimer(largeListWait)
		defer wait.Stop()
		select {
		case l.slots <- struct{}{}:
		case <-wait.C:
			largeListsRejected.WithContext(r.Context()).WithLabelValues(info.APIGroup, info.Resource).Inc()
			tooManyRequests(w, "too many LISTs of whole large resources in flight; list in pages (limit) or by selector, or retry", time.Second)
			return
		case <-r.Context().Done():
			return
		}
		largeListsInflight.Inc()
		defer func() {
			largeListsInflight.Dec()
			<-l.slots
		}()
		handler.ServeHTTP(w, r)
	})
}

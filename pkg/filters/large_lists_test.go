package filters

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/storage"
)

// objectCounts is a fake ObjectCounts.
type objectCounts map[string]storage.Stats

func (o objectCounts) Get(groupResource string) (storage.Stats, error) {
	if s, ok := o[groupResource]; ok {
		return s, nil
	}
	return storage.Stats{}, errors.New("not tracked")
}

var largeCluster = objectCounts{
	"pods":             {ObjectCount: 50000, EstimatedAverageObjectSizeBytes: 1500},
	"configmaps":       {ObjectCount: 100, EstimatedAverageObjectSizeBytes: 1500},
	"deployments.apps": {ObjectCount: 40000}, // size not estimated yet: 1 KiB assumed
}

func TestLargeListClassification(t *testing.T) {
	l := NewLargeListLimiter(largeCluster, 32<<20, 1)
	tests := []struct {
		method, url string
		large       bool
	}{
		{"GET", "/api/v1/pods", true},
		{"GET", "/api/v1/pods?resourceVersion=0", true},
		{"GET", "/api/v1/pods?limit=1000", true},
		{"GET", "/api/v1/pods?limit=garbage", true},
		{"GET", "/apis/apps/v1/deployments", true},
		{"GET", "/api/v1/pods?limit=500", false},
		{"GET", "/api/v1/pods?labelSelector=app%3Dweb", false},
		{"GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1", false},
		{"GET", "/api/v1/namespaces/default/pods", false},
		{"GET", "/api/v1/pods?watch=true", false},
		{"GET", "/api/v1/namespaces/default/pods/p", false},
		{"GET", "/api/v1/configmaps", false},
		{"GET", "/api/v1/secrets", false}, // not tracked
		{"GET", "/version", false},
	}
	for _, tt := range tests {
		var got bool
		h := withRequestInfo(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			info, _ := request.RequestInfoFrom(r.Context())
			got = l.large(r, info)
		}))
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(tt.method, tt.url, nil))
		if got != tt.large {
			t.Errorf("%s %s: large %v, want %v", tt.method, tt.url, got, tt.large)
		}
	}
}

func TestWithLargeListLimit(t *testing.T) {
	RegisterMetrics(NewTopTalkers())
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	h := withRequestInfo(WithLargeListLimit(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("hold") != "" {
			started <- struct{}{}
			<-release
		}
	}), NewLargeListLimiter(largeCluster, 32<<20, 1), "loopback-secret"))
	serve := func(url string, header http.Header) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", url, nil)
		req.Header = header
		h.ServeHTTP(rec, req)
		return rec
	}

	done := make(chan int)
	go func() { done <- serve("/api/v1/pods?hold=1", http.Header{}).Code }()
	<-started
	// The only slot is taken: small LISTs pass, the apiserver's own client
	// passes, a large LIST waits its second and gets 429.
	if code := serve("/api/v1/namespaces/default/pods", http.Header{}).Code; code != http.StatusOK {
		t.Errorf("namespaced LIST beside a large one: %d", code)
	}
	if code := serve("/api/v1/pods", http.Header{"Authorization": {"Bearer loopback-secret"}}).Code; code != http.StatusOK {
		t.Errorf("loopback large LIST: %d", code)
	}
	start := time.Now()
	rec := serve("/api/v1/pods", http.Header{})
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") == "" {
		t.Errorf("second large LIST: %d, Retry-After %q; want 429 with Retry-After", rec.Code, rec.Header().Get("Retry-After"))
	}
	if waited := time.Since(start); waited < largeListWait {
		t.Errorf("second large LIST refused after %v, before its %v wait", waited, largeListWait)
	}
	// A large LIST that waits gets the slot once it is free.
	go func() {
		time.Sleep(100 * time.Millisecond)
		close(release)
	}()
	if code := serve("/api/v1/pods", http.Header{}).Code; code != http.StatusOK {
		t.Errorf("large LIST after the slot was freed: %d", code)
	}
	if code := <-done; code != http.StatusOK {
		t.Errorf("held large LIST: %d", code)
	}
}

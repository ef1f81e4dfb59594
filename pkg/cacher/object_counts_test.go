package cacher

import (
	"context"
	"errors"
	"testing"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/storage"
	flowcontrolrequest "k8s.io/apiserver/pkg/util/flowcontrol/request"
)

// countedStorage is a storage whose readiness and count the test sets.
type countedStorage struct {
	fakeStorage
	stats    storage.Stats
	statsErr error
	counted  int
}

func (s *countedStorage) Stats(context.Context) (storage.Stats, error) {
	s.counted++
	return s.stats, s.statsErr
}

type trackerAnswer struct {
	stats storage.Stats
	err   error
}

// fakeTracker answers as upstream's tracker does: ObjectCountNotFoundErr
// for a resource it has no answer for.
type fakeTracker map[string]trackerAnswer

func (f fakeTracker) Get(groupResource string) (storage.Stats, error) {
	a, ok := f[groupResource]
	if !ok {
		return storage.Stats{}, flowcontrolrequest.ObjectCountNotFoundErr
	}
	return a.stats, a.err
}

func TestObjectCounts(t *testing.T) {
	pods := schema.GroupResource{Resource: "pods"}
	widgets := schema.GroupResource{Group: "example.com", Resource: "widgets"}
	podStats := storage.Stats{ObjectCount: 50000, EstimatedAverageObjectSizeBytes: 3500}
	widgetStats := storage.Stats{ObjectCount: 7, EstimatedAverageObjectSizeBytes: 100}
	trackerStats := storage.Stats{ObjectCount: 50100, EstimatedAverageObjectSizeBytes: 3600}
	cases := []struct {
		name string
		// pod is the pods' storage; nil: none.
		pod *countedStorage
		// tracker is upstream's; nil knows nothing.
		tracker fakeTracker
		want    storage.Stats
		wantErr bool
		// wantCounts is how often the pods' storage is counted in two rounds.
		wantCounts int
	}{
		{name: "filling: not known", pod: &countedStorage{stats: podStats}, wantErr: true},
		{name: "filled: counted once", pod: &countedStorage{fakeStorage: fakeStorage{ready: true}, stats: podStats}, want: podStats, wantCounts: 1},
		{name: "tracked: the tracker's, not counted", pod: &countedStorage{fakeStorage: fakeStorage{ready: true}, stats: podStats}, tracker: fakeTracker{"pods": {trackerStats, nil}}, want: trackerStats},
		{name: "tracked but stale: the tracker's, newer", pod: &countedStorage{fakeStorage: fakeStorage{ready: true}, stats: podStats}, tracker: fakeTracker{"pods": {trackerStats, flowcontrolrequest.ObjectCountStaleErr}}, want: trackerStats},
		{name: "count fails: not known, counted again", pod: &countedStorage{fakeStorage: fakeStorage{ready: true}, statsErr: errors.New("too slow")}, wantErr: true, wantCounts: 2},
		{name: "no storage: not known", wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := NewReadiness()
			if tc.pod != nil {
				r.add(pods, tc.pod)
			}
			counts := NewObjectCounts(tc.tracker, r)
			counts.countFilled(context.Background())
			counts.countFilled(context.Background())
			got, err := counts.Get(pods.String())
			if (err != nil) != tc.wantErr || (err == nil && got != tc.want) {
				t.Errorf("Get = %+v, %v; want %+v, error %v", got, err, tc.want, tc.wantErr)
			}
			if tc.pod != nil && tc.pod.counted != tc.wantCounts {
				t.Errorf("counted %d times, want %d", tc.pod.counted, tc.wantCounts)
			}
		})
	}

	// A count is forgotten with its resource's storage (a deleted CRD), and
	// the storage made again is counted again.
	r := NewReadiness()
	counts := NewObjectCounts(fakeTracker{}, r)
	widgetStorage := &countedStorage{fakeStorage: fakeStorage{ready: true}, stats: widgetStats}
	remove := r.add(widgets, widgetStorage)
	counts.countFilled(context.Background())
	if got, err := counts.Get(widgets.String()); err != nil || got != widgetStats {
		t.Fatalf("widgets: Get = %+v, %v; want %+v", got, err, widgetStats)
	}
	remove()
	counts.countFilled(context.Background())
	if _, err := counts.Get(widgets.String()); err == nil {
		t.Error("the count of a deleted resource is still known")
	}
	r.add(widgets, widgetStorage)
	counts.countFilled(context.Background())
	if widgetStorage.counted != 2 {
		t.Errorf("widgets counted %d times, want 2 (again once made again)", widgetStorage.counted)
	}
}

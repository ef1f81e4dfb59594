package cacher

import (
	"context"
	"errors"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/storage"
	flowcontrolrequest "k8s.io/apiserver/pkg/util/flowcontrol/request"
	"k8s.io/klog/v2"
)

const (
	// filledCountInterval is how often ObjectCounts looks for watch caches
	// that finished filling.
	filledCountInterval = time.Second
	// filledCountTimeout bounds one count: a storage's count waits for its
	// watch cache to reach etcd's current revision.
	filledCountTimeout = 10 * time.Second
)

// ObjectCountTracker is upstream's storage object count tracker, as read by
// API Priority and Fairness, keyed by the group-resource's String().
type ObjectCountTracker interface {
	Get(groupResource string) (storage.Stats, error)
}

// ObjectCounts tells a resource's object count and average object size
// from upstream's object count tracker or, until the tracker knows the
// resource, from a count taken as soon as its watch cache filled.
//
// Upstream's storage reports a resource's count to the tracker every
// --etcd-count-metric-poll-period, jittered up to 2.2 times that, and
// its first report after a start fails: it waits for the watch cache,
// which is still filling. For up to two minutes and more after a restart,
// just when every client lists again, the tracker knows no resource. The
// tracker itself is left as upstream fills it: API Priority and Fairness
// reads it too, and upstream's behaviour stays upstream's.
type ObjectCounts struct {
	tracker ObjectCountTracker
	caches  *Readiness

	mu     sync.RWMutex
	filled map[string]storage.Stats // by group-resource String()
}

// NewObjectCounts reads the tracker first and counts, in Run, the resources
// of caches whose watch caches filled.
func NewObjectCounts(tracker ObjectCountTracker, caches *Readiness) *ObjectCounts {
	return &ObjectCounts{tracker: tracker, caches: caches, filled: map[string]storage.Stats{}}
}

// Get returns the tracker's stats of a resource (stale ones too: they are
// newer than the count taken at the filling), or the count taken when its
// watch cache filled if the tracker has none.
func (c *ObjectCounts) Get(groupResource string) (storage.Stats, error) {
	if stats, ok := c.tracked(groupResource); ok {
		return stats, nil
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	if filled, ok := c.filled[groupResource]; ok {
		return filled, nil
	}
	return storage.Stats{}, flowcontrolrequest.ObjectCountNotFoundErr
}

// tracked returns the tracker's stats of a resource, if it has any.
func (c *ObjectCounts) tracked(groupResource string) (storage.Stats, bool) {
	stats, err := c.tracker.Get(groupResource)
	return stats, err == nil || errors.Is(err, flowcontrolrequest.ObjectCountStaleErr)
}

// Run counts each resource once, as soon as its watch cache is filled,
// unless the tracker knew it first, until ctx is done. Counts of resources
// whose storage is gone (a deleted CRD) are forgotten.
func (c *ObjectCounts) Run(ctx context.Context) {
	wait.UntilWithContext(ctx, c.countFilled, filledCountInterval)
}

func (c *ObjectCounts) countFilled(ctx context.Context) {
	c.mu.Lock()
	for gr := range c.filled {
		if !c.caches.Serves(schema.ParseGroupResource(gr)) {
			delete(c.filled, gr)
		}
	}
	c.mu.Unlock()
	for gr, s := range c.caches.readyStorages() {
		key := gr.String()
		c.mu.RLock()
		_, counted := c.filled[key]
		c.mu.RUnlock()
		if counted {
			continue
		}
		if _, ok := c.tracked(key); ok {
			continue
		}
		countCtx, cancel := context.WithTimeout(ctx, filledCountTimeout)
		stats, err := s.Stats(countCtx)
		cancel()
		if err != nil {
			klog.V(2).InfoS("Could not count a filled watch cache; trying again", "resource", key, "err", err)
			continue
		}
		c.mu.Lock()
		c.filled[key] = stats
		c.mu.Unlock()
		klog.V(2).InfoS("Counted a filled watch cache", "resource", key, "objects", stats.ObjectCount, "averageSizeBytes", stats.EstimatedAverageObjectSizeBytes)
	}
}

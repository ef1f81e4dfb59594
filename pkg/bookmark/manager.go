// Package bookmark keeps watchers' resourceVersions current, so that after
// an apiserver restart they resume their watches instead of relisting. It is
// a storage decorator over upstream's watch cache that
//
//   - sends every watcher that allows bookmarks one bookmark per Interval
//     (upstream: about one a minute), carrying the revision etcd has reached:
//     the watch cache follows it through the progress notifications this
//     package requests, even when nothing of the resource changes;
//   - sends each of them a last bookmark when the apiserver terminates
//     gracefully, before the watch cache closes its watches;
//   - when a watch cache starts, reads into memory the events etcd still
//     retains of its resource (within HistoryBudget), so that a watch that
//     resumes from a resourceVersion older than the cache gets the events
//     since then instead of 410 Gone.
//
// Upstream's cacher sends bookmarks at a fixed frequency of its own, so the
// frequent ones come from upstream's rule that a watcher gets a bookmark two
// seconds before its deadline: each watch is served as a sequence of cache
// watches that end one Interval after they start, each resumed from the
// last resourceVersion the client received.
package bookmark

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/registry/generic"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/apiserver/pkg/storage/storagebackend"
	"k8s.io/apiserver/pkg/storage/storagebackend/factory"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/bulwark-k8s/bulwark/pkg/cacher"
)

// Defaults; docs/bookmarks.md gives the measurements behind them.
const (
	DefaultInterval      = 10 * time.Second
	DefaultHistoryBudget = 64 << 20
)

// MinInterval is the shortest Interval: the cache sends a watcher's bookmark
// up to a second late (it checks once a second, with jitter), and a segment
// needs room for it.
const MinInterval = time.Second

// finalBookmarkTimeout bounds how long termination waits for the last
// bookmarks: the cache sends them within about two seconds.
const finalBookmarkTimeout = 5 * time.Second

// progressDuringRound is how often progress is asked of etcd while the
// last bookmarks are awaited: more often than the cache's bookmark tick.
const progressDuringRound = 500 * time.Millisecond

// Config configures a Manager.
type Config struct {
	// Interval between the bookmarks a watcher that allows them receives.
	// 0 leaves upstream's frequency (about a minute) and sends no last
	// bookmark on termination.
	Interval time.Duration
	// HistoryBudget bounds the size, as stored in etcd, of the events each
	// watch cache reads on start. 0 reads none: a watch older than the
	// cache gets 410 Gone, as upstream answers.
	HistoryBudget int64
}

// Validate tells what is wrong with c.
func (c Config) Validate() error {
	if c.Interval != 0 && c.Interval < MinInterval {
		return fmt.Errorf("bookmark interval %v: want 0 (upstream's) or at least %v", c.Interval, MinInterval)
	}
	if c.HistoryBudget < 0 {
		return fmt.Errorf("history budget %d: want 0 (none) or more", c.HistoryBudget)
	}
	return nil
}

// Manager decorates the storage of every watch-cached resource and sends
// the last bookmarks when the apiserver terminates.
type Manager struct {
	config Config

	mu     sync.Mutex
	stores map[*bookmarkingStorage]struct{}
	// watches are the watches that take bookmarks on demand: past their
	// initial events, with bookmarks allowed.
	watches map[*resumingWatch]struct{}
	// round is closed to ask every watch for a bookmark now; roundNum
	// counts the rounds asked for. The last round asked for a bookmark at
	// roundRV or later, sent before roundEnd.
	round    chan struct{}
	roundNum uint64
	roundRV  uint64
	roundEnd time.Time

	// terminating is set when the apiserver starts its graceful termination;
	// the first storage destroyed after it asks for the last bookmarks.
	terminating atomic.Bool
	destroyOnce sync.Once
}

// NewManager returns a Manager for a valid config.
func NewManager(config Config) (*Manager, error) {
	if err := config.Validate(); err != nil {
		return nil, err
	}
	return &Manager{
		config:  config,
		stores:  map[*bookmarkingStorage]struct{}{},
		watches: map[*resumingWatch]struct{}{},
		round:   make(chan struct{}),
	}, nil
}

// Active tells whether the manager has anything to do: with no interval
// and no history budget, watches are upstream's and need no decorator.
func (m *Manager) Active() bool {
	return m.config.Interval > 0 || m.config.HistoryBudget > 0
}

// Terminating is called when the apiserver starts its graceful termination,
// before it stops accepting requests (and, with
// --shutdown-watch-termination-grace-period, ends the watches): every
// watcher gets a bookmark with the latest resourceVersion. The watch caches
// destroyed from then on (not a deleted CustomResourceDefinition's: the
// server's) send another right before they close their watches.
func (m *Manager) Terminating() {
	m.terminating.Store(true)
	m.bookmarkAll()
}

// Decorate wraps a storage decorator so that the watches of every resource
// with a watch cache are served by this package.
func (m *Manager) Decorate(decorate generic.StorageDecorator) generic.StorageDecorator {
	return func(config *storagebackend.ConfigForResource, resourcePrefix string, keyFunc func(obj runtime.Object) (string, error),
		newFunc, newListFunc func() runtime.Object, getAttrs storage.AttrFunc, triggers storage.IndexerFuncs, indexers *cache.Indexers,
	) (storage.Interface, factory.DestroyFunc, error) {
		s, destroy, err := decorate(config, resourcePrefix, keyFunc, newFunc, newListFunc, getAttrs, triggers, indexers)
		if err != nil || !cacher.WatchCached(s) {
			return s, destroy, err
		}
		ctx, cancel := context.WithCancel(context.Background())
		b := &bookmarkingStorage{Interface: s, manager: m, resource: config.GroupResource, window: config.EventsHistoryWindow, done: ctx.Done()}
		if b.window <= 0 {
			b.window = storagebackend.DefaultEventsHistoryWindow
		}
		if m.config.HistoryBudget > 0 {
			b.history = newHistory(config, resourcePrefix, m.config.HistoryBudget)
			go b.history.fill(ctx, s)
		}
		if m.config.Interval > 0 {
			go b.requestProgress(ctx)
		}
		registerResource(config.GroupResource)
		m.mu.Lock()
		m.stores[b] = struct{}{}
		m.mu.Unlock()
		var once sync.Once
		return b, func() {
			once.Do(func() {
				if m.terminating.Load() {
					m.destroyOnce.Do(m.bookmarkAll)
				}
				cancel()
				m.mu.Lock()
				delete(m.stores, b)
				m.mu.Unlock()
			})
			destroy()
		}, nil
	}
}

// bookmarkAll asks every watch for a bookmark now and waits until each
// has sent it (or finalBookmarkTimeout passed). Each watch opens a segment
// that the cache sends a bookmark soon; the cache gives a new watch one
// only with a revision past its last event when the watch started, so
// progress is asked of etcd while the watches wait: the bookmarks then carry
// the revision etcd is at (as long as anything at all is written to it).
func (m *Manager) bookmarkAll() {
	if m.config.Interval == 0 {
		return
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), finalBookmarkTimeout)
	defer cancel()
	m.mu.Lock()
	stores := slices.Collect(maps.Keys(m.stores))
	m.mu.Unlock()
	var rv uint64
	if len(stores) > 0 {
		var err error
		if rv, err = stores[0].GetCurrentResourceVersion(ctx); err != nil {
			klog.ErrorS(err, "Reading etcd's revision for the last bookmarks")
		}
	}
	deadline, _ := ctx.Deadline()
	m.mu.Lock()
	close(m.round)
	m.round = make(chan struct{})
	m.roundNum++
	m.roundRV, m.roundEnd = rv, deadline
	round, watches := m.roundNum, len(m.watches)
	m.mu.Unlock()
	pending := func() int {
		m.mu.Lock()
		defer m.mu.Unlock()
		n := 0
		for w := range m.watches {
			if w.bookmarkedRound.Load() < round {
				n++
			}
		}
		return n
	}
	progress := time.Time{}
	err := wait.PollUntilContextCancel(ctx, 20*time.Millisecond, true, func(context.Context) (bool, error) {
		if pending() == 0 {
			return true, nil
		}
		if time.Since(progress) >= progressDuringRound {
			progress = time.Now()
			for _, b := range stores {
				if err := b.RequestWatchProgress(ctx); err != nil && ctx.Err() == nil {
					klog.ErrorS(err, "Requesting watch progress for the last bookmarks", "resource", b.resource)
				}
			}
		}
		return false, nil
	})
	klog.InfoS("Sent the last bookmarks", "watches", watches, "unsent", pending(), "duration", time.Since(start), "timedOut", err != nil)
}

// currentRound returns the channel closed by the next round of bookmarks.
func (m *Manager) currentRound() (<-chan struct{}, uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.round, m.roundNum + 1
}

// owed tells whether a watch that has every event up to lastRV still owes
// the last round of bookmarks one, after a segment that asked for it ended
// without: on a busy server the cache may register the segment's watch too
// late to schedule the bookmark before the segment's deadline.
func (m *Manager) owed(lastRV uint64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return lastRV < m.roundRV && time.Now().Before(m.roundEnd)
}

// track adds or removes a watch from those that take bookmarks on demand; a
// watch added now owes no bookmark to the rounds before.
func (m *Manager) track(w *resumingWatch, take bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if take {
		w.bookmarkedRound.Store(m.roundNum)
		m.watches[w] = struct{}{}
	} else {
		delete(m.watches, w)
	}
}

package bookmark

import (
	"context"
	"strconv"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	apirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/klog/v2"
)

// bookmarkingStorage serves the watches of one watch-cached resource.
type bookmarkingStorage struct {
	storage.Interface
	manager  *Manager
	resource schema.GroupResource
	history  *history // nil without a history budget
	// window is how long the watch cache keeps events: a client that takes
	// no event for that long is not resumed.
	window time.Duration
	// done is closed when the storage is destroyed.
	done <-chan struct{}
	// watches counts the watches being served; progress is requested only
	// for a resource someone watches.
	watches atomic.Int64
}

// Unwrap returns the watch cache's storage.
func (s *bookmarkingStorage) Unwrap() storage.Interface { return s.Interface }

// Watch serves a watch as a sequence of watch-cache watches (see the
// package doc), preceded by the events of the start history when it resumes
// from before the cache's start. A watch that takes no bookmarks, or with
// no bookmark interval set, and that the history does not serve, is the
// watch cache's own: nothing of this package stands between it and the
// client. While the server shuts down, no watch starts (shuttingDown).
func (s *bookmarkingStorage) Watch(ctx context.Context, key string, opts storage.ListOptions) (watch.Interface, error) {
	// Upstream's watch cache reports a resourceVersion that is not a number
	// as an internal error (500); the mistake is the client's.
	if _, err := s.Versioner().ParseResourceVersion(opts.ResourceVersion); err != nil {
		return nil, apierrors.NewBadRequest(err.Error())
	}
	if shuttingDown(ctx) {
		return nil, apierrors.NewTooManyRequests("the apiserver is shutting down", 1)
	}
	var replay []watch.Event
	var replayedTo uint64
	if from, ok := resumesFrom(opts); ok && s.history != nil {
		events, to, covered, err := s.history.since(ctx, from, key, opts.Predicate)
		if err != nil {
			return nil, err
		}
		if covered {
			replay, replayedTo = events, to
			historyResumptions.WithLabelValues(s.resource.Group, s.resource.Resource).Inc()
		}
	}
	if replayedTo == 0 && !s.segmented(opts) {
		return s.Interface.Watch(ctx, key, opts)
	}
	w := newResumingWatch(ctx, s, key, opts)
	if replayedTo > 0 {
		w.lastRV = replayedTo
	}
	seg, err := w.open()
	if err != nil {
		w.cancel()
		return nil, err
	}
	s.watches.Add(1)
	go func() {
		defer s.watches.Add(-1)
		w.run(seg, replay)
	}()
	return w, nil
}

// shuttingDown tells whether the server has stopped accepting new requests
// (its graceful termination ends the open watches then). Upstream turns
// the watches that come after that away, retriably, once it waits for the
// open ones to drain, and serves those that come in between by ending them
// at once: a watch that ends within a second with no event is one
// client-go's reflectors relist after ("very short watch"), so each watch
// of a reflector whose previous watch the termination just ended could cost
// a LIST. Turned away with 429 and a Retry-After, as the watch cache turns
// away a watch it cannot serve yet, the reflector retries the watch (on
// the restarted server, or another one) from where it was.
func shuttingDown(ctx context.Context) bool {
	signal := apirequest.ServerShutdownSignalFrom(ctx)
	if signal == nil {
		return false
	}
	select {
	case <-signal.ShuttingDown():
		return true
	default:
		return false
	}
}

// stopped tells whether the storage was destroyed: its watch cache is
// stopped or about to be.
func (s *bookmarkingStorage) stopped() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// slowWatcher counts a watch that fell behind, by what became of it.
func (s *bookmarkingStorage) slowWatcher(outcome string) {
	slowWatchers.WithLabelValues(s.resource.Group, s.resource.Resource, outcome).Inc()
}

// segmented tells whether a watch is served as a sequence of segments: it
// takes bookmarks, and they come more often than upstream's.
func (s *bookmarkingStorage) segmented(opts storage.ListOptions) bool {
	return s.manager.config.Interval > 0 && opts.Predicate.AllowWatchBookmarks
}

// resumesFrom returns the resourceVersion a watch resumes from: one it
// names, without initial events.
func resumesFrom(opts storage.ListOptions) (uint64, bool) {
	if opts.SendInitialEvents != nil && *opts.SendInitialEvents {
		return 0, false
	}
	rv, err := strconv.ParseUint(opts.ResourceVersion, 10, 64)
	return rv, err == nil && rv > 0
}

// requestProgress asks etcd, once per interval while the resource is
// watched, to tell the watch cache the revision it is at: the cache's
// resourceVersion, which bookmarks carry, then follows etcd's even when
// nothing of the resource changes.
func (s *bookmarkingStorage) requestProgress(ctx context.Context) {
	ticker := time.NewTicker(s.manager.config.Interval / 2)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			if s.watches.Load() == 0 {
				continue
			}
			if err := s.RequestWatchProgress(ctx); err != nil && ctx.Err() == nil {
				klog.V(2).InfoS("Requesting watch progress", "resource", s.resource, "err", err)
			}
		}
	}
}

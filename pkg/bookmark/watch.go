package bookmark

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/apiserver/pkg/storage"
)

// The cache sends a watcher a bookmark two seconds before its deadline
// (k8s.io/apiserver/pkg/storage/cacher, cacheWatcher.nextBookmarkTime).
const preDeadlineBookmark = 2 * time.Second

// askedSegment is the life of a segment that carries a bookmark asked for
// (on termination): the cache schedules it half a second from now, if the
// segment's watch is registered by then, and sends it on its next
// once-a-second tick. Two fit in finalBookmarkTimeout.
const askedSegment = preDeadlineBookmark + 500*time.Millisecond

// resultBuffer is how many events a watch holds for its client: the HTTP
// handler writes what is buffered in one flush, and the goroutine that
// forwards a segment's events does not wait for the handler's after each.
// As many as the cache buffers for a watch without an index.
const resultBuffer = 100

// resumingWatch is one client's watch, served by a sequence of segments:
// watch-cache watches, each resumed from the last resourceVersion the
// client received, so it sees every event once, in order.
type resumingWatch struct {
	ctx     context.Context
	cancel  context.CancelFunc
	storage *bookmarkingStorage
	key     string
	opts    storage.ListOptions
	result  chan watch.Event

	// lastRV is the resourceVersion up to which the client has every event
	// (0: not known yet).
	lastRV uint64
	// initial is set while the first segment sends the initial events,
	// whose resourceVersions are the objects' and say nothing of progress.
	initial bool
	// asked is the round of bookmarks the current segment serves (0: none).
	asked uint64
	// bookmarkedRound is the last round of bookmarks the watch served.
	bookmarkedRound atomic.Uint64
	// tracked tells whether the manager counts the watch among those that
	// take bookmarks on demand.
	tracked bool
	// delivered tells whether the client took an event of the current segment.
	delivered bool
	// resumedAfterClose is set while the current segment resumes one the
	// cache closed, until it tells whether the cache still held lastRV.
	resumedAfterClose bool
	// emptyCloses counts the segments in a row the cache closed before the
	// client took anything of them.
	emptyCloses int
	// pause is how long the watch waits before it resumes a segment the
	// cache closed soon after it opened (0: at once).
	pause time.Duration
	// stalled fires when the client has taken no event for the cache's
	// events history window (see send).
	stalled *time.Timer
}

func newResumingWatch(ctx context.Context, s *bookmarkingStorage, key string, opts storage.ListOptions) *resumingWatch {
	w := &resumingWatch{storage: s, key: key, opts: opts, result: make(chan watch.Event, resultBuffer)}
	w.ctx, w.cancel = context.WithCancel(ctx)
	w.initial = opts.SendInitialEvents != nil && *opts.SendInitialEvents ||
		opts.SendInitialEvents == nil && (opts.ResourceVersion == "" || opts.ResourceVersion == "0")
	if rv, ok := resumesFrom(opts); ok {
		w.lastRV = rv
	}
	return w
}

// Stop ends the watch; ResultChan is closed soon after.
func (w *resumingWatch) Stop() { w.cancel() }

// ResultChan returns the client's events.
func (w *resumingWatch) ResultChan() <-chan watch.Event { return w.result }

// resumable tells whether the watch can be served by segments: the client
// takes bookmarks, and the resourceVersion it has every event up to is known.
func (w *resumingWatch) resumable() bool {
	return w.storage.manager.config.Interval > 0 && w.opts.Predicate.AllowWatchBookmarks && !w.initial && w.lastRV > 0
}

// open starts the next segment: the first as the client asked (or from the
// end of the history it was replayed), the others from lastRV. A resumable
// segment ends one interval from now, after the bookmark the cache sends
// before its deadline.
func (w *resumingWatch) open() (*segment, error) {
	opts := w.opts
	if w.lastRV > 0 && !w.initial {
		opts.ResourceVersion = strconv.FormatUint(w.lastRV, 10)
		opts.ResourceVersionMatch = ""
		opts.SendInitialEvents = nil
	}
	seg := &segment{opened: time.Now()}
	w.delivered = false
	switch {
	case w.asked > 0:
		seg.ctx, seg.cancel = context.WithTimeout(w.ctx, askedSegment)
	case w.resumable():
		seg.ctx, seg.cancel = context.WithTimeout(w.ctx, w.storage.manager.config.Interval+preDeadlineBookmark)
	default:
		seg.ctx, seg.cancel = context.WithCancel(w.ctx)
	}
	var err error
	if seg.Interface, err = w.storage.Interface.Watch(seg.ctx, w.key, opts); err != nil {
		seg.cancel()
		return nil, err
	}
	return seg, nil
}

// segment is one watch-cache watch of a resumingWatch.
type segment struct {
	watch.Interface
	ctx    context.Context
	cancel context.CancelFunc
	opened time.Time
}

func (s *segment) Stop() {
	s.Interface.Stop()
	s.cancel()
}

// run forwards the replayed history and then every segment's events until
// the client stops, the client's watch cannot go on (see forward), or the
// cache is stopped.
func (w *resumingWatch) run(seg *segment, replay []watch.Event) {
	defer close(w.result)
	defer w.track(false)
	for _, event := range replay {
		if !w.send(event) {
			seg.Stop()
			return
		}
	}
	for {
		w.track(w.resumable())
		resume := w.forward(seg)
		seg.Stop()
		if !resume {
			return
		}
		var err error
		if seg, err = w.open(); err != nil {
			return // the client watches again, as after the cache closed its watch
		}
		segments.WithLabelValues(w.storage.resource.Group, w.storage.resource.Resource).Inc()
	}
}

// forward sends one segment's events to the client and tells whether the
// watch goes on with another segment.
func (w *resumingWatch) forward(seg *segment) (resume bool) {
	var round <-chan struct{}
	var roundNum uint64
	if w.tracked && w.asked == 0 {
		round, roundNum = w.storage.manager.currentRound()
		if w.bookmarkedRound.Load() < roundNum-1 {
			// A round was asked for since the watch was tracked.
			w.asked = roundNum - 1
			return true
		}
	}
	for {
		select {
		case <-w.ctx.Done():
			return false
		case <-round:
			w.asked = roundNum
			return true
		case event, ok := <-seg.ResultChan():
			if !ok {
				return w.closed(seg)
			}
			if w.resumedAfterClose && event.Type != watch.Error {
				w.resumedAfterClose = false
				w.storage.slowWatcher("resumed")
			}
			switch event.Type {
			case watch.Error:
				if status, ok := event.Object.(*metav1.Status); ok && status.Code == http.StatusGone {
					watchGone.WithLabelValues(w.storage.resource.Group, w.storage.resource.Resource).Inc()
					if w.storage.history != nil {
						w.storage.history.cacheMovedOn(w.lastRV)
					}
					if w.resumedAfterClose {
						w.storage.slowWatcher("gone")
					}
				}
				w.send(event)
				return false
			case watch.Bookmark:
				w.initial = false
				w.lastRV = resourceVersion(event, w.lastRV)
				if !w.send(event) {
					return false
				}
				reason := "periodic"
				if w.asked > 0 {
					reason = "final"
				}
				bookmarksSent.WithLabelValues(w.storage.resource.Group, w.storage.resource.Resource, reason).Inc()
				w.served()
				// The next segment starts now, one interval before the next
				// bookmark.
				return w.resumable()
			default:
				if !w.initial {
					w.lastRV = resourceVersion(event, w.lastRV)
				}
				if !w.send(event) {
					return false
				}
			}
		}
	}
}

// closed tells whether the watch goes on after the cache closed a segment.
//
// Ended by its deadline, the next segment resumes. Closed before its end,
// the cache either stopped (the apiserver terminates), or closed the
// watcher for being too slow: its buffer stayed full while the client read
// less than the events came. Upstream's watch ends there and the client
// watches again, or relists on 410; this one resumes from the last event
// the client took, as long as the cache holds it (or answers 410).
//
// A segment the cache closed soon after it opened met a client that still
// has a connection full of events to take: the next one waits, longer each
// time (up to maxPause), so that it is not closed at once again; each close
// also costs the cache's dispatcher its patience with every watcher. Three
// segments in a row the client took nothing of end the watch: a cache that
// closes every new watch at once would otherwise be asked again and again.
func (w *resumingWatch) closed(seg *segment) bool {
	if w.ctx.Err() != nil || !w.resumable() || w.storage.stopped() {
		return false
	}
	if errors.Is(seg.ctx.Err(), context.DeadlineExceeded) {
		// A segment asked for a bookmark sends none when the client
		// already has the latest resourceVersion; otherwise another
		// segment asks again.
		if w.asked == 0 || !w.storage.manager.owed(w.lastRV) {
			w.served()
		}
		return true
	}
	if w.delivered {
		w.emptyCloses = 0
	} else if w.emptyCloses++; w.emptyCloses == maxEmptyCloses {
		if w.resumedAfterClose {
			w.storage.slowWatcher("ended")
		}
		return false
	}
	w.resumedAfterClose = true
	if time.Since(seg.opened) < quickClose {
		w.pause = min(max(2*w.pause, minPause), maxPause)
	} else {
		w.pause = 0
	}
	if w.pause == 0 {
		return true
	}
	pause := time.NewTimer(w.pause)
	defer pause.Stop()
	select {
	case <-pause.C:
		return true
	case <-w.ctx.Done():
		return false
	}
}

// Resuming segments the cache closed: see closed.
const (
	quickClose     = time.Second
	minPause       = 100 * time.Millisecond
	maxPause       = 5 * time.Second
	maxEmptyCloses = 3
)

// served records that the round of bookmarks asked for was served.
func (w *resumingWatch) served() {
	if w.asked > 0 {
		w.bookmarkedRound.Store(w.asked)
		w.asked = 0
	}
}

// send hands an event to the client. A client that takes none for as long
// as the cache keeps events (its events history window, 75 s by default)
// while the watch's buffer is full could only be resumed with 410 Gone: its
// watch ends there, as the cache ended its watcher, and holds nothing
// meanwhile but the buffer.
func (w *resumingWatch) send(event watch.Event) bool {
	// A client that keeps up finds room in the buffer: no timer to set
	// then, for every event of every watch.
	select {
	case w.result <- event:
		w.delivered = true
		return true
	default:
	}
	// One timer per watch, reset each time the buffer is full (Go 1.23
	// timers: no stale expiry is left in its channel).
	if w.stalled == nil {
		w.stalled = time.NewTimer(w.storage.window)
	} else {
		w.stalled.Reset(w.storage.window)
	}
	defer w.stalled.Stop()
	select {
	case w.result <- event:
		w.delivered = true
		return true
	case <-w.ctx.Done():
		return false
	case <-w.stalled.C:
		w.storage.slowWatcher("ended")
		return false
	}
}

// track keeps the manager's set of watches that take bookmarks on demand.
func (w *resumingWatch) track(take bool) {
	if take != w.tracked {
		w.tracked = take
		w.storage.manager.track(w, take)
	}
}

// resourceVersion returns the event's resourceVersion, or last when it has none.
func resourceVersion(event watch.Event, last uint64) uint64 {
	o, err := meta.Accessor(event.Object)
	if err != nil {
		return last
	}
	rv, err := strconv.ParseUint(o.GetResourceVersion(), 10, 64)
	if err != nil || rv == 0 {
		return last
	}
	return rv
}

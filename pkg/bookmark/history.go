package bookmark

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/metadata"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/apiserver/pkg/storage/storagebackend"
	"k8s.io/apiserver/pkg/storage/value"
	"k8s.io/apiserver/pkg/storage/value/encrypt/identity"
	"k8s.io/klog/v2"
)

const (
	// historyWait bounds how long a resuming watch waits for the history
	// to be read, before it is told to retry in historyRetryAfterSeconds: a
	// watch waiting here holds its seat of API Priority and Fairness.
	historyWait              = 2 * time.Second
	historyRetryAfterSeconds = 1
	// historyLifetime is how long a history is kept. It serves the watches
	// that resume right after a restart; by then the cache's own history
	// has long moved past its start.
	historyLifetime = 10 * time.Minute
	// progressPeriod paces the progress requests that tell the reader it
	// has every event up to the revision it reads to.
	progressPeriod = 500 * time.Millisecond
	// historyChunkRevisions and historyChunkReaders: the history is read in
	// chunks of revisions, several at once (see read). Each reader holds at
	// most its chunk's events beyond the budget.
	historyChunkRevisions = 2000
	historyChunkReaders   = 8
)

// history is the start history of one resource: the events etcd retained
// when its watch cache started, up to the cache's start, read once.
type history struct {
	resource    schema.GroupResource
	budget      int64
	transport   storagebackend.TransportConfig
	codec       runtime.Codec
	transformer value.Transformer
	versioner   storage.Versioner
	// etcdPrefix is the etcd key prefix of the resource's objects; keys
	// stripped of storagePrefix are the storage keys watches name.
	etcdPrefix, storagePrefix string

	filled chan struct{} // closed when the read ended, successfully or not

	mu     sync.Mutex
	events []*historyEvent
	// from and to bound the resourceVersions a watch resumes from through
	// the history: it has every event after from, up to to.
	from, to uint64
	bytes    int64
}

// historyEvent is one change of one object, as etcd stored it. Objects are
// decoded when a watch first replays the event: most of a history is never
// replayed (a watch resumes from a recent resourceVersion), and an object
// takes a few times its stored size once decoded.
type historyEvent struct {
	rev     uint64
	key     string // the storage key; etcd's has storagePrefix before it
	value   []byte // nil when deleted
	prev    []byte // the previous version, nil when created
	prevRev int64
	size    int64

	decoded         bool
	obj, prevObject runtime.Object
}

func newHistory(config *storagebackend.ConfigForResource, resourcePrefix string, budget int64) *history {
	transformer := config.Transformer
	if transformer == nil {
		transformer = identity.NewEncryptCheckTransformer()
	}
	storagePrefix := path.Join("/", config.Prefix)
	return &history{
		resource:      config.GroupResource,
		budget:        budget,
		transport:     config.Transport,
		codec:         config.Codec,
		transformer:   transformer,
		versioner:     storage.APIObjectVersioner{},
		etcdPrefix:    strings.TrimSuffix(storagePrefix, "/") + path.Join("/", resourcePrefix) + "/",
		storagePrefix: strings.TrimSuffix(storagePrefix, "/"),
		filled:        make(chan struct{}),
	}
}

// fill reads the history once the cache has filled: the events from the
// oldest revision etcd retains (or fewer, within the budget) up to etcd's
// revision at that moment, which the cache has reached by then.
func (h *history) fill(ctx context.Context, cache storage.Interface) {
	filled := sync.OnceFunc(func() { close(h.filled) })
	defer filled()
	if err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(context.Context) (bool, error) {
		return cache.ReadinessCheck() == nil, nil
	}); err != nil {
		return
	}
	start := time.Now()
	to, err := cache.GetCurrentResourceVersion(ctx)
	if err == nil {
		err = h.read(ctx, to)
	}
	if err != nil {
		h.release()
		if ctx.Err() == nil {
			klog.ErrorS(err, "Reading the start history; watches older than the watch cache get 410 Gone", "resource", h.resource)
		}
		return
	}
	h.mu.Lock()
	events, bytes, from := len(h.events), h.bytes, h.from
	h.mu.Unlock()
	klog.InfoS("Read the start history", "resource", h.resource, "events", events, "bytes", bytes, "fromRV", from, "toRV", to, "duration", time.Since(start))
	setHistorySize(h.resource, events, bytes)
	filled()
	select {
	case <-ctx.Done():
	case <-time.After(historyLifetime):
	}
	h.release()
}

// read reads the newest events of the resource up to revision to that fit
// the budget. etcd sends a watch that catches up from an old revision at
// most 1,000 revisions every 100 ms, and reads its whole backlog again each
// time: one watch from the oldest revision took 14 s for 33,000 events. So
// the revisions are read in chunks, newest first, by watches of their own
// (each on its own stream: etcd answers progress requests of a stream only
// once all its watches caught up) several at a time, until the budget is
// full or etcd's oldest retained revision is reached.
func (h *history) read(ctx context.Context, to uint64) error {
	if h.transport.EgressLookup != nil {
		return errors.New("etcd is reached through an egress selector, which the start history does not use")
	}
	client, err := newEtcdClient(h.transport)
	if err != nil {
		return err
	}
	defer client.Close()
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()

	// Chunk k holds the revisions (to-(k+1)*n, to-k*n].
	const n = historyChunkRevisions
	chunks := make(chan *historyChunk, historyChunkReaders)
	go func() {
		defer close(chunks)
		for k := int64(0); int64(to)-k*n > 0; k++ {
			c := &historyChunk{from: max(1, int64(to)-(k+1)*n+1), to: int64(to) - k*n, done: make(chan struct{})}
			go c.read(ctx, client, h.storagePrefix, h.etcdPrefix, k)
			select {
			case chunks <- c:
			case <-ctx.Done():
				return
			}
		}
	}()

	var events []*historyEvent // newest chunk first
	var bytes int64
	from := uint64(0)
	for c := range chunks {
		select {
		case <-c.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		if c.err != nil {
			return c.err
		}
		full := false
		for i := len(c.events) - 1; i >= 0; i-- {
			e := c.events[i]
			if bytes+e.size > h.budget {
				from, full = e.rev, true
				break
			}
			events = append(events, e)
			bytes += e.size
		}
		if full {
			break
		}
		if c.compacted > 0 || c.from == 1 {
			from = uint64(max(c.compacted, c.from) - 1) // every event etcd retains
			break
		}
	}
	cancel()
	slices.Reverse(events)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events, h.bytes, h.from, h.to = events, bytes, from, to
	return nil
}

// historyChunk is the events of a range of revisions, read by one watch.
type historyChunk struct {
	from, to int64 // revisions, both included
	// compacted is set when etcd no longer had from: the events start there.
	compacted int64
	events    []*historyEvent
	err       error
	done      chan struct{}
}

// read watches the chunk's revisions, from a later one when etcd compacted
// from, until it has every event up to its last revision.
func (c *historyChunk) read(ctx context.Context, client *clientv3.Client, storagePrefix, etcdPrefix string, k int64) {
	defer close(c.done)
	ctx = metadata.AppendToOutgoingContext(ctx, "bulwark-start-history-chunk", strconv.FormatInt(k, 10))
	for rev := c.from; ; {
		done, compacted, err := c.readFrom(ctx, client, storagePrefix, etcdPrefix, rev)
		switch {
		case err != nil:
			c.err = err
			return
		case done:
			return
		case compacted <= rev:
			c.err = fmt.Errorf("etcd compacted to revision %d, before %d", compacted, rev)
			return
		case compacted > c.to:
			c.compacted = compacted // nothing of the chunk is left
			return
		}
		rev, c.compacted, c.events = compacted, compacted, nil
	}
}

// readFrom reads the chunk from revision rev on; when etcd compacted rev, it
// returns the oldest revision etcd retains.
func (c *historyChunk) readFrom(ctx context.Context, client *clientv3.Client, storagePrefix, etcdPrefix string, rev int64) (done bool, compacted int64, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	watchChan := client.Watch(ctx, etcdPrefix, clientv3.WithPrefix(), clientv3.WithRev(rev), clientv3.WithPrevKV(), clientv3.WithProgressNotify())
	// A progress notification arrives once the watch has caught up: its
	// revision says every event up to it was received.
	go func() {
		ticker := time.NewTicker(progressPeriod)
		defer ticker.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-ticker.C:
				_ = client.RequestProgress(ctx)
			}
		}
	}()
	last := map[string]*historyEvent{} // by storage key, the latest version read: the next one's previous
	for resp := range watchChan {
		if resp.CompactRevision > 0 {
			return false, resp.CompactRevision, nil
		}
		if err := resp.Err(); err != nil {
			return false, 0, err
		}
		for _, e := range resp.Events {
			if e.Kv.ModRevision > c.to {
				return true, 0, nil
			}
			c.events = append(c.events, newHistoryEvent(e, storagePrefix, last))
		}
		if resp.IsProgressNotify() && resp.Header.Revision >= c.to {
			return true, 0, nil
		}
	}
	return false, 0, ctx.Err()
}

// newHistoryEvent is one etcd event as the history keeps it: the previous
// version shares the bytes of the event before it, when there was one.
func newHistoryEvent(e *clientv3.Event, storagePrefix string, last map[string]*historyEvent) *historyEvent {
	key := string(e.Kv.Key)
	ev := &historyEvent{rev: uint64(e.Kv.ModRevision), key: strings.TrimPrefix(key, storagePrefix)}
	if e.Type == clientv3.EventTypePut {
		ev.value = e.Kv.Value
	}
	if e.PrevKv != nil {
		ev.prev, ev.prevRev = e.PrevKv.Value, e.PrevKv.ModRevision
		if p, ok := last[ev.key]; ok {
			ev.prev = p.value // the same bytes, kept once
		}
	}
	ev.size = int64(len(key) + len(ev.value) + len(ev.prev))
	if e.Type == clientv3.EventTypePut {
		last[ev.key] = ev
	} else {
		delete(last, ev.key)
	}
	return ev
}

// decodeEvent decodes an event's objects, once; h.mu is held.
func (h *history) decodeEvent(ctx context.Context, e *historyEvent) error {
	if e.decoded {
		return nil
	}
	etcdKey := h.storagePrefix + e.key
	var err error
	if e.value != nil {
		if e.obj, err = h.decode(ctx, etcdKey, e.value, int64(e.rev)); err != nil {
			return err
		}
	}
	if e.prev != nil {
		if e.prevObject, err = h.decode(ctx, etcdKey, e.prev, e.prevRev); err != nil {
			return err
		}
	}
	e.decoded = true
	return nil
}

func (h *history) decode(ctx context.Context, key string, data []byte, rev int64) (runtime.Object, error) {
	plain, _, err := h.transformer.TransformFromStorage(ctx, data, value.DefaultContext(key))
	if err != nil {
		return nil, fmt.Errorf("%s at revision %d: %w", key, rev, err)
	}
	obj, err := runtime.Decode(h.codec, plain)
	if err != nil {
		return nil, fmt.Errorf("%s at revision %d: %w", key, rev, err)
	}
	return obj, h.versioner.UpdateObject(obj, uint64(rev))
}

// since returns the events after resourceVersion rv that a watch of key
// with pred sees, as the watch cache would send them, and the
// resourceVersion the watch goes on from in the cache. covered is false
// when the history does not cover rv: the cache answers as upstream's does.
// While the history is still being read, a watch waits for it a moment,
// then gets 429 (client-go retries the watch, without relisting): never
// the 410 Gone the cache would answer meanwhile.
func (h *history) since(ctx context.Context, rv uint64, key string, pred storage.SelectionPredicate) (events []watch.Event, to uint64, covered bool, err error) {
	select {
	case <-h.filled:
	default:
		wait := time.NewTimer(historyWait)
		defer wait.Stop()
		select {
		case <-h.filled:
		case <-ctx.Done():
			return nil, 0, false, ctx.Err()
		case <-wait.C:
			historyNotRead.WithLabelValues(h.resource.Group, h.resource.Resource).Inc()
			return nil, 0, false, apierrors.NewTooManyRequests(fmt.Sprintf("the start history of %s is being read; resume the watch in a moment", h.resource), historyRetryAfterSeconds)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.to == 0 || rv < h.from || rv >= h.to {
		return nil, 0, false, nil
	}
	prefix := key
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	matches := func(e *historyEvent, obj runtime.Object) bool {
		if obj == nil || e.key != key && !strings.HasPrefix(e.key, prefix) {
			return false
		}
		ok, err := pred.Matches(obj)
		return err == nil && ok
	}
	for _, e := range h.events {
		if e.rev <= rv {
			continue
		}
		if err := h.decodeEvent(ctx, e); err != nil {
			klog.ErrorS(err, "Decoding the start history; the watch gets the cache's answer", "resource", h.resource)
			return nil, 0, false, nil
		}
		cur, old := matches(e, e.obj), matches(e, e.prevObject)
		switch {
		case cur && !old:
			events = append(events, watch.Event{Type: watch.Added, Object: e.obj})
		case cur && old:
			events = append(events, watch.Event{Type: watch.Modified, Object: e.obj})
		case old:
			// As the cache: the previous object at the event's resourceVersion.
			deleted := e.prevObject.DeepCopyObject()
			if err := h.versioner.UpdateObject(deleted, e.rev); err != nil {
				return nil, 0, false, nil
			}
			events = append(events, watch.Event{Type: watch.Deleted, Object: deleted})
		}
	}
	return events, h.to, true, nil
}

// cacheMovedOn is told that the cache answered 410 Gone to a watch from
// rv: if that is where the history hands watches over, the cache's own
// history no longer reaches it and the history is of no more use.
func (h *history) cacheMovedOn(rv uint64) {
	h.mu.Lock()
	handover := rv == h.to
	h.mu.Unlock()
	if handover {
		h.release()
	}
}

func (h *history) release() {
	h.mu.Lock()
	h.events, h.bytes, h.from, h.to = nil, 0, 0, 0
	h.mu.Unlock()
	setHistorySize(h.resource, 0, 0)
}

// newEtcdClient connects to etcd as the apiserver's storage does.
func newEtcdClient(c storagebackend.TransportConfig) (*clientv3.Client, error) {
	tlsInfo := transport.TLSInfo{CertFile: c.CertFile, KeyFile: c.KeyFile, TrustedCAFile: c.TrustedCAFile}
	tlsConfig, err := tlsInfo.ClientConfig()
	if err != nil {
		return nil, err
	}
	if c.CertFile == "" && c.KeyFile == "" && c.TrustedCAFile == "" {
		tlsConfig = nil
	}
	return clientv3.New(clientv3.Config{
		Endpoints:   c.ServerList,
		TLS:         tlsConfig,
		DialTimeout: 20 * time.Second,
		Logger:      zap.NewNop(),
	})
}

package app

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"runtime"
	"runtime/debug"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/registry/generic"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/apiserver/pkg/server/mux"
	"k8s.io/klog/v2"
	upstream "k8s.io/kubernetes/cmd/kube-apiserver/app"

	"github.com/bulwark-k8s/bulwark/pkg/bookmark"
	"github.com/bulwark-k8s/bulwark/pkg/cacher"
	"github.com/bulwark-k8s/bulwark/pkg/filters"
	"github.com/bulwark-k8s/bulwark/pkg/storagestack"
)

// Bulwark's debug endpoints. They are behind upstream's authentication and
// authorization like every non-resource path (system:masters by default):
// `kubectl get --raw /debug/bulwark/user-agents`.
const (
	topTalkersDebugPath      = "/debug/bulwark/user-agents"
	userAgentLimitsDebugPath = "/debug/bulwark/user-agent-limits"
	topTalkersDebugCount     = 50
)

// additions are Bulwark's parts of a running server.
type additions struct {
	talkers *filters.TopTalkers
	// caches records every resource's storage: the resources metrics may
	// name, and with --cache-not-ready-gate what the gate reads.
	caches    *cacher.Readiness
	cacheGate bool
	// limiter is nil without --user-agent-limits-config.
	limiter *filters.UserAgentLimiter
	shedder *filters.OverloadShedder
	// maxLargeLists is 0 when large LISTs are not bounded.
	maxLargeLists     int
	largeListMinBytes int64
	indexes           cacher.Indexes
	shareValues       bool
	bookmarks         *bookmark.Manager
}

// newAdditions builds them from validated options; the limiter follows its
// file until ctx is done.
func newAdditions(ctx context.Context, o *Options) (*additions, error) {
	a := &additions{
		talkers:           filters.NewTopTalkers(),
		caches:            cacher.NewReadiness(),
		cacheGate:         o.CacheNotReadyGate,
		shedder:           filters.NewOverloadShedder(o.Overload),
		maxLargeLists:     o.MaxConcurrentLargeLists,
		largeListMinBytes: o.LargeListMinBytes.Value(),
		indexes:           o.indexes,
		shareValues:       o.WatchCacheShareValues,
	}
	// First: the limiter's first load and the shedder record metrics.
	filters.RegisterMetrics(a.talkers)
	cacher.RegisterMetrics()
	bookmark.RegisterMetrics()
	var err error
	if a.bookmarks, err = bookmark.NewManager(o.BookmarkConfig()); err != nil {
		return nil, fmt.Errorf("--watch-bookmark-interval, --watch-cache-start-history-budget: %w", err)
	}
	go a.shedder.Run(ctx)
	if a.shareValues {
		go releaseStartupMemory(ctx, a.caches)
	}
	if o.UserAgentLimitsConfig != "" {
		if a.limiter, err = filters.NewUserAgentLimiter(o.UserAgentLimitsConfig); err != nil {
			return nil, err
		}
		go a.limiter.Run(ctx)
	}
	return a, nil
}

// customizeConfig makes the watch caches' objects share their common values,
// adds label and field indexes to the watch caches, serves watches
// with bookmarks and start histories, records every
// resource's storage for the cache-not-ready gate, and puts Bulwark's
// filters around upstream's handler chain. Only the aggregator's chain sees requests: it is the outermost
// server, and the servers it delegates to are called without their own
// filters.
func (a *additions) customizeConfig(ctx context.Context, config *upstream.Config) {
	stack := storagestack.Stack{ShareValues: a.shareValues, Indexes: a.indexes, Bookmarks: a.bookmarks, Caches: a.caches}
	for _, getter := range []*generic.RESTOptionsGetter{
		&config.KubeAPIs.ControlPlane.Generic.RESTOptionsGetter,
		&config.ApiExtensions.GenericConfig.RESTOptionsGetter,
		&config.ApiExtensions.ExtraConfig.CRDRESTOptionsGetter,
		&config.Aggregator.GenericConfig.RESTOptionsGetter,
	} {
		*getter = stack.Decorate(*getter)
	}
	if a.shareValues {
		sharePodInformerValues(config)
	}
	gc := config.Aggregator.GenericConfig
	// The large-LIST limit knows a resource's size as soon as its watch
	// cache is filled, not a minute or two later as upstream's tracker.
	var largeListCounts *cacher.ObjectCounts
	if a.maxLargeLists > 0 && gc.StorageObjectCountTracker != nil {
		largeListCounts = cacher.NewObjectCounts(gc.StorageObjectCountTracker, a.caches)
		go largeListCounts.Run(ctx)
	}
	buildUpstream := gc.BuildHandlerChainFunc
	gc.BuildHandlerChainFunc = func(apiHandler http.Handler, c *genericapiserver.Config) http.Handler {
		chain := filters.Chain{
			RequestInfoResolver: c.RequestInfoResolver,
			LongRunning:         c.LongRunningFunc,
			LoopbackToken:       c.LoopbackClientConfig.BearerToken,
			TopTalkers:          a.talkers,
			Shedder:             a.shedder,
			Limiter:             a.limiter,
			Resources:           a.caches,
		}
		if a.cacheGate {
			chain.Caches = a.caches
		}
		if largeListCounts != nil {
			chain.LargeLists = filters.NewLargeListLimiter(largeListCounts, a.largeListMinBytes, a.maxLargeLists)
		}
		return chain.Wrap(buildUpstream(apiHandler, c))
	}
}

// releaseStartupMemory returns the memory of the watch caches' filling to
// the operating system once they are all filled. Filling decodes every
// object before its values are shared: the garbage makes the heap's peak,
// which the Go runtime keeps (and the RSS shows) long after; the heap
// left is what the shared objects hold.
func releaseStartupMemory(ctx context.Context, caches *cacher.Readiness) {
	err := wait.PollUntilContextCancel(ctx, time.Second, false, func(context.Context) (bool, error) { return caches.AllReady(), nil })
	if err != nil {
		return
	}
	debug.FreeOSMemory()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	klog.InfoS("Returned the watch caches' filling memory to the OS", "heapInUseMiB", m.HeapInuse>>20, "heapReleasedMiB", m.HeapReleased>>20)
}

// sharePodInformerValues makes the pods of the server's own pod informer
// share their common values too. Upstream's authentication (service
// account tokens bound to pods) and node authorizer read pods from an
// informer of the server's loopback client: a second copy of every pod in
// the server, next to the watch cache's. Upstream's transform drops their
// managed fields; ours does too, then shares. The informer exists
// whatever the flags (the service account token getter asks for its lister
// while the config is built), so asking for it here adds none.
func sharePodInformerValues(config *upstream.Config) {
	pods := config.KubeAPIs.ControlPlane.VersionedInformers.Core().V1().Pods().Informer()
	sharer := cacher.NewValueSharer(schema.GroupResource{Resource: "pods"})
	err := pods.SetTransform(func(obj any) (any, error) {
		if pod, ok := obj.(*corev1.Pod); ok {
			pod.ManagedFields = nil
			sharer.Share(pod)
		}
		return obj, nil
	})
	if err != nil { // started already: it keeps upstream's transform
		klog.ErrorS(err, "The pod informer's values are not shared")
	}
}

// installDebugHandlers adds Bulwark's debug endpoints to the server's mux.
func (a *additions) installDebugHandlers(m *mux.PathRecorderMux) {
	m.HandleFunc(topTalkersDebugPath, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, a.talkers.Snapshot(topTalkersDebugCount))
	})
	if a.limiter != nil {
		m.HandleFunc(userAgentLimitsDebugPath, func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, a.limiter.Status())
		})
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

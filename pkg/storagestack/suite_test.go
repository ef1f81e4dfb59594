// The storage suite: every test of k8s.io/apiserver/pkg/storage/testing that
// upstream runs against its own cacher (k8s.io/apiserver/pkg/storage/cacher,
// cacher_test.go), run against the storage the server builds with Stack —
// indexes (configured on the keys the tests select by, so the index paths
// run), bookmarks with a start history, readiness — twice: with the default
// bookmark interval and with 1s, so that segments roll over in the middle
// of the tests.
//
// Left out, as upstream leaves them out for its cacher: the tests that need
// a storage's transformer or its etcd client replaced
// (InterfaceWithPrefixTransformer, InterfaceWithTransformerOverride; empty
// TODOs in upstream's cacher_test.go).

package storagestack

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/apitesting"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/apiserver/pkg/apis/example"
	examplev1 "k8s.io/apiserver/pkg/apis/example/v1"
	"k8s.io/apiserver/pkg/features"
	"k8s.io/apiserver/pkg/registry/generic"
	"k8s.io/apiserver/pkg/storage"
	cacherstorage "k8s.io/apiserver/pkg/storage/cacher"
	"k8s.io/apiserver/pkg/storage/etcd3"
	etcd3testing "k8s.io/apiserver/pkg/storage/etcd3/testing"
	"k8s.io/apiserver/pkg/storage/storagebackend"
	"k8s.io/apiserver/pkg/storage/storagebackend/factory"
	storagetesting "k8s.io/apiserver/pkg/storage/testing"
	"k8s.io/apiserver/pkg/storage/value"
	"k8s.io/apiserver/pkg/storage/value/encrypt/identity"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	clientfeatures "k8s.io/client-go/features"
	"k8s.io/client-go/tools/cache"
	featuregatetesting "k8s.io/component-base/featuregate/testing"
	"k8s.io/utils/clock"

	"github.com/bulwark-k8s/bulwark/pkg/bookmark"
	bulwarkcacher "github.com/bulwark-k8s/bulwark/pkg/cacher"
)

// Scheme and the example Pods upstream's storage tests use.

var (
	scheme              = runtime.NewScheme()
	codecs              = serializer.NewCodecFactory(scheme)
	examplev1ProtoCodec runtime.Codec
)

func init() {
	metav1.AddToGroupVersion(scheme, metav1.SchemeGroupVersion)
	utilruntime.Must(example.AddToScheme(scheme))
	utilruntime.Must(examplev1.AddToScheme(scheme))
	pb := protobuf.NewSerializer(scheme, scheme)
	// As upstream's cacher tests (cacher_testing_utils_test.go).
	examplev1ProtoCodec = codecs.CodecForVersions(pb, pb, schema.GroupVersions{examplev1.SchemeGroupVersion}, nil)
}

const resourcePrefix = "/pods/"

var podsResource = schema.GroupResource{Resource: "pods"}

func newPod() runtime.Object     { return &example.Pod{} }
func newPodList() runtime.Object { return &example.PodList{} }

// getPodAttrs is upstream's GetPodAttrs (cacher_test.go).
func getPodAttrs(obj runtime.Object) (labels.Set, fields.Set, error) {
	pod, ok := obj.(*example.Pod)
	if !ok {
		return nil, nil, fmt.Errorf("not a pod")
	}
	return labels.Set(pod.Labels), fields.Set{
		"spec.nodeName":      pod.Spec.NodeName,
		"spec.restartPolicy": string(pod.Spec.RestartPolicy),
		"status.phase":       string(pod.Status.Phase),
		"metadata.name":      pod.Name,
		"metadata.namespace": pod.Namespace,
	}, nil
}

// Suite configurations: the server's decorators, by bookmark interval.

type suiteConfig struct {
	name     string
	bookmark bookmark.Config
}

// The server's default label indexes (which apply to `pods`, the resource
// the suite stores), plus a label (`select`, which testWatch lists by) and
// the fields the tests select by, as --watch-cache-label-indexes and
// --watch-cache-field-indexes take them: the suite's LISTs go through the
// index decorator's paths and not only past it.
var (
	suiteLabelIndexes = append(append([]string{}, bulwarkcacher.DefaultLabelIndexes...), "pods:select")
	suiteFieldIndexes = []string{"pods:spec.nodeName", "pods:status.phase"}
)

func suiteConfigs() []suiteConfig {
	return []suiteConfig{{
		name:     "interval=10s",
		bookmark: bookmark.Config{Interval: bookmark.DefaultInterval, HistoryBudget: bookmark.DefaultHistoryBudget},
	}, {
		name:     "interval=1s",
		bookmark: bookmark.Config{Interval: time.Second, HistoryBudget: bookmark.DefaultHistoryBudget},
	}}
}

// Per-test options, as upstream's setupOption.

type setupOptions struct {
	keyFunc     func(runtime.Object) (string, error)
	triggers    storage.IndexerFuncs
	indexers    *cache.Indexers
	codec       runtime.Codec
	transformer value.Transformer
}

type setupOption func(*setupOptions)

func withDefaults(o *setupOptions) {
	o.keyFunc = func(obj runtime.Object) (string, error) { return storage.NamespaceKeyFunc(resourcePrefix, obj) }
	o.codec = examplev1ProtoCodec
	o.transformer = identity.NewEncryptCheckTransformer()
}

func withClusterScopedKeyFunc(o *setupOptions) {
	o.keyFunc = func(obj runtime.Object) (string, error) { return storage.NoNamespaceKeyFunc(resourcePrefix, obj) }
}

// withNodeNameAndNamespaceIndex mirrors upstream's (the pod registry's).
func withNodeNameAndNamespaceIndex(o *setupOptions) {
	o.triggers = storage.IndexerFuncs{
		"spec.nodeName": func(obj runtime.Object) string {
			pod, ok := obj.(*example.Pod)
			if !ok {
				return ""
			}
			return pod.Spec.NodeName
		},
	}
	o.indexers = &cache.Indexers{
		"f:spec.nodeName": func(obj interface{}) ([]string, error) {
			return []string{obj.(*example.Pod).Spec.NodeName}, nil
		},
		"f:metadata.namespace": func(obj interface{}) ([]string, error) {
			return []string{obj.(*example.Pod).Namespace}, nil
		},
	}
}

func withCodec(c runtime.Codec) setupOption { return func(o *setupOptions) { o.codec = c } }

func withTransformer(tr value.Transformer) setupOption {
	return func(o *setupOptions) { o.transformer = tr }
}

// The one constructor.

// suiteEnv is a decorated storage and what the tests need beside it.
type suiteEnv struct {
	storage storage.Interface
	server  *etcd3testing.EtcdTestServer
	// relist ends the watch cache's etcd watch with 410 Gone (compactWatch).
	relist *relistTrigger
}

// instruments are what the base decorator built, for the constructor.
type instruments struct {
	injected *storagetesting.StorageInjectingListErrors
	relist   *relistTrigger
}

// newSuiteStorage builds, over a fresh etcd, the storage the apiserver
// builds for a watch-cached resource: the base decorator (upstream's
// StorageWithCacher, see storageWithCacher) wrapped by the index, bookmark
// and readiness decorators exactly as cmd/kube-apiserver/app/customize.go
// wraps every RESTOptionsGetter's decorator. It returns once the cache is
// filled and the start history read.
func newSuiteStorage(t *testing.T, sc suiteConfig, opts ...setupOption) *suiteEnv {
	t.Helper()
	o := setupOptions{}
	for _, opt := range append([]setupOption{withDefaults}, opts...) {
		opt(&o)
	}

	server, config := etcd3testing.NewUnsecuredEtcd3TestClientServer(t)
	config.Codec = o.codec
	config.Transformer = o.transformer
	resourceConfig := config.ForResource(podsResource)
	resourceConfig.EventsHistoryWindow = cacherstorage.DefaultEventFreshDuration

	inst := &instruments{}
	base := storageWithCacher(server, inst)

	// The server's composition.
	bulwarkcacher.RegisterMetrics()
	bookmark.RegisterMetrics()
	indexes, err := bulwarkcacher.ParseIndexes(suiteLabelIndexes, suiteFieldIndexes)
	if err != nil {
		t.Fatal(err)
	}
	bookmarks, err := bookmark.NewManager(sc.bookmark)
	if err != nil {
		t.Fatal(err)
	}
	caches := bulwarkcacher.NewReadiness()
	getter := Stack{ShareValues: true, Indexes: indexes, Bookmarks: bookmarks, Caches: caches}.Decorate(generic.RESTOptions{StorageConfig: resourceConfig, Decorator: base})
	restOptions, err := getter.GetRESTOptions(podsResource, &example.Pod{})
	if err != nil {
		t.Fatal(err)
	}
	s, destroy, err := restOptions.Decorator(restOptions.StorageConfig, resourcePrefix, o.keyFunc,
		newPod, newPodList, getPodAttrs, o.triggers, o.indexers)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(destroy)
	if !bulwarkcacher.WatchCached(s) {
		t.Fatalf("storage %T is not served by the watch cache", s)
	}

	ctx := context.Background()
	// As upstream: the one injected LIST error must be consumed (the cache
	// re-initialised once) before the tests, which expect LISTs to succeed.
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, wait.ForeverTestTimeout, true,
		func(context.Context) (bool, error) { return inst.injected.ErrorsConsumed() }); err != nil {
		t.Fatalf("injected LIST errors not consumed: %v", err)
	}
	// The cache fills (upstream: cacher.Wait).
	if err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, time.Minute, true,
		func(context.Context) (bool, error) { return s.ReadinessCheck() == nil, nil }); err != nil {
		t.Fatal(err)
	}
	if known, ready := caches.Ready(podsResource); !known || !ready {
		t.Fatalf("readiness decorator: known=%v ready=%v", known, ready)
	}
	// The start history captures etcd's revision shortly after the cache is
	// ready; a test write before that would fall inside the history, and a
	// watch from before a compaction would be replayed instead of answered
	// 410 (RunTestWatchFromZero). A watch that resumes from a
	// resourceVersion waits for the history to be read (history.since), so
	// one probe watch orders every test write after it.
	if sc.bookmark.HistoryBudget > 0 {
		rv, err := s.GetCurrentResourceVersion(ctx)
		if err != nil {
			t.Fatal(err)
		}
		w, err := s.Watch(ctx, resourcePrefix, storage.ListOptions{
			ResourceVersion: strconv.FormatUint(rv, 10), Predicate: storage.Everything, Recursive: true,
		})
		if err != nil {
			t.Fatalf("probe watch: %v", err)
		}
		w.Stop()
	}
	return &suiteEnv{storage: s, server: server, relist: inst.relist}
}

// storageWithCacher is genericregistry.StorageWithCacher() with the raw
// storage built as upstream's cacher tests build it (newEtcdTestStorageWithOptions
// + testSetupWithEtcdServer): etcd3.New over the test server's client — whose
// Kubernetes interface is the KubernetesRecorder that RunTestList asserts on;
// generic.NewRawStorage would dial a client of its own — wrapped in upstream's
// StorageInjectingListErrors and in relistTrigger. Cacher config and
// delegator are StorageWithCacher's, field for field.
func storageWithCacher(server *etcd3testing.EtcdTestServer, inst *instruments) generic.StorageDecorator {
	return func(config *storagebackend.ConfigForResource, resourcePrefix string, keyFunc func(runtime.Object) (string, error),
		newFunc, newListFunc func() runtime.Object, getAttrs storage.AttrFunc, triggers storage.IndexerFuncs, indexers *cache.Indexers,
	) (storage.Interface, factory.DestroyFunc, error) {
		versioner := storage.APIObjectVersioner{}
		transformer := config.Transformer
		if transformer == nil {
			transformer = identity.NewEncryptCheckTransformer()
		}
		compactor := etcd3.NewCompactor(server.V3Client.Client, 0, clock.RealClock{}, nil)
		etcdStorage, err := etcd3.New(server.V3Client, compactor, config.Codec, newFunc, newListFunc,
			config.Prefix, resourcePrefix, config.GroupResource, transformer,
			etcd3.NewDefaultLeaseManagerConfig(), etcd3.NewDefaultDecoder(config.Codec, versioner), versioner)
		if err != nil {
			compactor.Stop()
			return nil, nil, err
		}
		listErrors := 1
		if clientfeatures.FeatureGates().Enabled(clientfeatures.WatchListClient) {
			listErrors = 0 // the reflector WATCHes instead of LISTing
		}
		inst.injected = &storagetesting.StorageInjectingListErrors{Interface: etcdStorage, Errors: listErrors}
		inst.relist = &relistTrigger{Interface: inst.injected}
		raw := inst.relist

		c, err := cacherstorage.NewCacherFromConfig(cacherstorage.Config{
			Storage:             raw,
			Versioner:           versioner,
			GroupResource:       config.GroupResource,
			EventsHistoryWindow: config.EventsHistoryWindow,
			ResourcePrefix:      resourcePrefix,
			KeyFunc:             keyFunc,
			NewFunc:             newFunc,
			NewListFunc:         newListFunc,
			GetAttrsFunc:        getAttrs,
			IndexerFuncs:        triggers,
			Indexers:            indexers,
			Codec:               config.Codec,
		})
		if err != nil {
			etcdStorage.Close()
			compactor.Stop()
			return nil, func() {}, err
		}
		delegator := cacherstorage.NewCacheDelegator(c, raw)
		var once sync.Once
		return delegator, func() {
			once.Do(func() {
				delegator.Stop()
				c.Stop()
				etcdStorage.Close()
				compactor.Stop()
			})
		}, nil
	}
}

// Arguments of the Run* functions, rebuilt on exported APIs.

// checkStorageInvariants (KeyValidation): upstream's cacher variant is a
// no-op; this one checks that etcd holds the key.
func (e *suiteEnv) checkStorageInvariants(ctx context.Context, t *testing.T, key string) {
	resp, err := e.server.V3Client.Client.Get(ctx, etcd3testing.PathPrefix()+key)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Count != 1 {
		t.Errorf("etcd has %d keys %s, want 1", resp.Count, etcd3testing.PathPrefix()+key)
	}
}

// checkStorageCalls (CallsValidation): a no-op, as upstream's for the cacher.
func checkStorageCalls(t *testing.T, pageSize, estimatedProcessedObjects uint64) {}

func (e *suiteEnv) increaseRV() storagetesting.IncreaseRVFunc {
	client := e.server.V3Client.Client
	return func(ctx context.Context, t *testing.T) int64 {
		resp, err := client.KV.Put(ctx, "increaseRV", "ok")
		if err != nil {
			t.Fatalf("Could not update increaseRV: %v", err)
		}
		return resp.Header.Revision
	}
}

func (e *suiteEnv) recorder() *storagetesting.KubernetesRecorder {
	return e.server.V3Client.Kubernetes.(*storagetesting.KubernetesRecorder)
}

// compactStore is upstream's compactStore without the cacher's internals:
// compact etcd (and its compact key) as upstream does; then, with
// ListFromCacheSnapshot, wait for the watch cache's compactor — which polls
// every 15s — to compact its snapshots. CacheDelegator.CompactRevision
// returns that compactor's revision, so the decorated storage shows it.
func (e *suiteEnv) compactStore() storagetesting.Compaction {
	client := e.server.V3Client.Client
	return func(ctx context.Context, t *testing.T, resourceVersion string) {
		rv, err := storage.APIObjectVersioner{}.ParseResourceVersion(resourceVersion)
		if err != nil {
			t.Fatal(err)
		}
		var currentVersion int64
		currentVersion, _, _, err = etcd3.Compact(ctx, client, currentVersion, int64(rv))
		if err != nil {
			_, _, _, err = etcd3.Compact(ctx, client, currentVersion, int64(rv))
		}
		if err != nil {
			t.Fatal(err)
		}
		if !utilfeature.DefaultFeatureGate.Enabled(features.ListFromCacheSnapshot) {
			return // the cache has no compactor
		}
		if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, wait.ForeverTestTimeout, true,
			func(context.Context) (bool, error) { return e.storage.CompactRevision() >= int64(rv), nil }); err != nil {
			t.Fatalf("the watch cache did not compact to %d: CompactRevision()=%d", rv, e.storage.CompactRevision())
		}
	}
}

// compactWatch replaces upstream's compactWatch, which trims the watch
// cache's event history in place (unexported fields). Here: the cache
// catches up to rv, etcd compacts at rv, and the cache's etcd watch ends
// with 410 Gone — what etcd answers a watch from a compacted revision — so
// the cache re-lists and its history starts after rv. It waits until a
// watch from rv-1 is answered 410 Gone.
func (e *suiteEnv) compactWatch() storagetesting.Compaction {
	client := e.server.V3Client.Client
	return func(ctx context.Context, t *testing.T, resourceVersion string) {
		rv, err := storage.APIObjectVersioner{}.ParseResourceVersion(resourceVersion)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.storage.GetList(ctx, resourcePrefix, storage.ListOptions{
			ResourceVersion: resourceVersion, ResourceVersionMatch: metav1.ResourceVersionMatchNotOlderThan,
			Predicate: storage.Everything, Recursive: true,
		}, &example.PodList{}); err != nil {
			t.Fatalf("WatchCache didn't catch up to RV %d: %v", rv, err)
		}
		if _, err := client.Compact(ctx, int64(rv)); err != nil {
			t.Fatalf("Could not compact: %v", err)
		}
		e.relist.Expire()
		if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, wait.ForeverTestTimeout, true,
			func(ctx context.Context) (bool, error) { return watchIsGone(ctx, e.storage, rv-1), nil }); err != nil {
			t.Fatalf("the watch cache still serves watches from before %d", rv)
		}
	}
}

func watchIsGone(ctx context.Context, s storage.Interface, rv uint64) bool {
	w, err := s.Watch(ctx, resourcePrefix, storage.ListOptions{
		ResourceVersion: strconv.FormatUint(rv, 10), Predicate: storage.Everything, Recursive: true,
	})
	if err != nil {
		return false // e.g. 429 while the cache re-lists
	}
	defer w.Stop()
	select {
	case event, ok := <-w.ResultChan():
		status, isStatus := event.Object.(*metav1.Status)
		return ok && event.Type == watch.Error && isStatus && status.Code == http.StatusGone
	case <-time.After(200 * time.Millisecond):
		return false
	}
}

// relistTrigger wraps the etcd storage the watch cache reads; Expire ends
// the cache's current etcd watch with 410 Gone.
type relistTrigger struct {
	storage.Interface
	mu      sync.Mutex
	watches map[*expirableWatch]struct{}
}

func (s *relistTrigger) Watch(ctx context.Context, key string, opts storage.ListOptions) (watch.Interface, error) {
	inner, err := s.Interface.Watch(ctx, key, opts)
	if err != nil {
		return nil, err
	}
	w := &expirableWatch{inner: inner, result: make(chan watch.Event), expire: make(chan struct{}), stop: make(chan struct{})}
	s.mu.Lock()
	if s.watches == nil {
		s.watches = map[*expirableWatch]struct{}{}
	}
	s.watches[w] = struct{}{}
	s.mu.Unlock()
	go func() {
		w.run()
		s.mu.Lock()
		delete(s.watches, w)
		s.mu.Unlock()
	}()
	return w, nil
}

func (s *relistTrigger) Expire() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for w := range s.watches {
		w.expireOnce.Do(func() { close(w.expire) })
	}
}

type expirableWatch struct {
	inner      watch.Interface
	result     chan watch.Event
	expire     chan struct{}
	expireOnce sync.Once
	stop       chan struct{}
	stopOnce   sync.Once
}

func (w *expirableWatch) Stop()                          { w.stopOnce.Do(func() { close(w.stop) }) }
func (w *expirableWatch) ResultChan() <-chan watch.Event { return w.result }

func (w *expirableWatch) run() {
	defer close(w.result)
	defer w.inner.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-w.expire:
			gone := apierrors.NewResourceExpired("injected by the storage suite: etcd compacted").ErrStatus
			select {
			case w.result <- watch.Event{Type: watch.Error, Object: &gone}:
			case <-w.stop:
			}
			return
		case event, ok := <-w.inner.ResultChan():
			if !ok {
				return
			}
			select {
			case w.result <- event:
			case <-w.stop:
				return
			}
		}
	}
}

// createWrapper is upstream's (cacher_test.go): Create returns once the
// watch cache serves the created object.
type createWrapper struct{ storage.Interface }

func (c createWrapper) Create(ctx context.Context, key string, obj, out runtime.Object, ttl uint64) error {
	if err := c.Interface.Create(ctx, key, obj, out, ttl); err != nil {
		return err
	}
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, wait.ForeverTestTimeout, true, func(ctx context.Context) (bool, error) {
		current := newPod()
		err := c.Interface.Get(ctx, key, storage.GetOptions{ResourceVersion: "0"}, current)
		if storage.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		return apiequality.Semantic.DeepEqual(current, out), nil
	})
}

// testTransformer and testCodec are upstream's (cacher_test.go).
type testTransformer struct {
	value.Transformer
	fail atomic.Bool
}

func (tt *testTransformer) setFailing(c bool) { tt.fail.Store(c) }

func (tt *testTransformer) TransformFromStorage(ctx context.Context, data []byte, dataCtx value.Context) ([]byte, bool, error) {
	if tt.fail.Load() {
		return nil, false, errors.New("synthetic error")
	}
	return tt.Transformer.TransformFromStorage(ctx, data, dataCtx)
}

type testCodec struct {
	runtime.Codec
	fail atomic.Bool
}

func (tc *testCodec) setFailing(c bool) { tc.fail.Store(c) }

func (tc *testCodec) Decode(data []byte, defaults *schema.GroupVersionKind, into runtime.Object) (runtime.Object, *schema.GroupVersionKind, error) {
	if tc.fail.Load() {
		return nil, nil, errors.New("synthetic error")
	}
	return tc.Codec.Decode(data, defaults, into)
}

// ===================================================================
// The suite: every storagetesting.Run* call upstream makes against its
// cacher (k8s.io/apiserver@v0.37.2/pkg/storage/cacher/cacher_test.go), in
// upstream's order and under upstream's test names.
// ===================================================================

func TestStorageSuite(t *testing.T) {
	for _, sc := range suiteConfigs() {
		// Not parallel: tests set feature gates (a parallel second setting
		// of the same gate is fatal).
		t.Run(sc.name, func(t *testing.T) { runSuite(t, sc) })
	}
}

func runSuite(t *testing.T, sc suiteConfig) {
	ctx := context.Background()
	setup := func(t *testing.T, opts ...setupOption) *suiteEnv { return newSuiteStorage(t, sc, opts...) }

	t.Run("Create", func(t *testing.T) {
		e := setup(t)
		storagetesting.RunTestCreate(ctx, t, e.storage, e.checkStorageInvariants)
	})
	t.Run("CreateWithTTL", func(t *testing.T) { storagetesting.RunTestCreateWithTTL(ctx, t, setup(t).storage) })
	t.Run("CreateWithKeyExist", func(t *testing.T) { storagetesting.RunTestCreateWithKeyExist(ctx, t, setup(t).storage) })
	t.Run("Get", func(t *testing.T) { storagetesting.RunTestGet(ctx, t, setup(t).storage) })
	t.Run("UnconditionalDelete", func(t *testing.T) { storagetesting.RunTestUnconditionalDelete(ctx, t, setup(t).storage) })
	t.Run("ConditionalDelete", func(t *testing.T) { storagetesting.RunTestConditionalDelete(ctx, t, setup(t).storage) })
	t.Run("DeleteWithSuggestion", func(t *testing.T) { storagetesting.RunTestDeleteWithSuggestion(ctx, t, setup(t).storage) })
	t.Run("DeleteWithSuggestionAndConflict", func(t *testing.T) {
		storagetesting.RunTestDeleteWithSuggestionAndConflict(ctx, t, setup(t).storage)
	})
	t.Run("DeleteWithSuggestionOfDeletedObject", func(t *testing.T) {
		storagetesting.RunTestDeleteWithSuggestionOfDeletedObject(ctx, t, setup(t).storage)
	})
	t.Run("ValidateDeletionWithSuggestion", func(t *testing.T) {
		storagetesting.RunTestValidateDeletionWithSuggestion(ctx, t, setup(t).storage)
	})
	t.Run("ValidateDeletionWithOnlySuggestionValid", func(t *testing.T) {
		storagetesting.RunTestValidateDeletionWithOnlySuggestionValid(ctx, t, setup(t).storage)
	})
	t.Run("DeleteWithConflict", func(t *testing.T) { storagetesting.RunTestDeleteWithConflict(ctx, t, setup(t).storage) })
	t.Run("DeleteWithConflictAndMissingExpectedTransformOrDecodeError", func(t *testing.T) {
		featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.AllowUnsafeMalformedObjectDeletion, true)
		transformer := &testTransformer{Transformer: identity.NewEncryptCheckTransformer()}
		e := setup(t, withTransformer(transformer))
		storagetesting.RunTestDeleteWithConflictAndMissingExpectedTransformOrDecodeError(ctx, t, e.storage, transformer.setFailing)
	})
	t.Run("DeleteWithConflictAndExpectedTransformError", func(t *testing.T) {
		featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.AllowUnsafeMalformedObjectDeletion, true)
		transformer := &testTransformer{Transformer: identity.NewEncryptCheckTransformer()}
		e := setup(t, withTransformer(transformer))
		storagetesting.RunTestDeleteExpectedTransformOrDecodeError(ctx, t, e.storage, transformer.setFailing)
	})
	t.Run("DeleteWithConflictAndExpectedDecodeError", func(t *testing.T) {
		featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.AllowUnsafeMalformedObjectDeletion, true)
		etcd3.TestOnlySetFatalOnDecodeError(t, false)
		codec := &testCodec{Codec: apitesting.TestCodec(codecs, examplev1.SchemeGroupVersion)}
		e := setup(t, withCodec(codec))
		storagetesting.RunTestDeleteExpectedTransformOrDecodeError(ctx, t, e.storage, codec.setFailing)
	})
	t.Run("DeleteWithSuggestionAndMissingExpectedTransformOrDecodeError", func(t *testing.T) {
		featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.AllowUnsafeMalformedObjectDeletion, true)
		storagetesting.RunTestDeleteWithSuggestionAndMissingExpectedTransformOrDecodeError(ctx, t, setup(t).storage)
	})
	t.Run("PreconditionalDeleteWithSuggestion", func(t *testing.T) {
		storagetesting.RunTestPreconditionalDeleteWithSuggestion(ctx, t, setup(t).storage)
	})
	t.Run("PreconditionalDeleteWithSuggestionPass", func(t *testing.T) {
		storagetesting.RunTestPreconditionalDeleteWithOnlySuggestionPass(ctx, t, setup(t).storage)
	})
	t.Run("ListPaging", func(t *testing.T) { storagetesting.RunTestListPaging(ctx, t, setup(t).storage) })
	t.Run("Lists", func(t *testing.T) {
		for _, listFromCacheSnapshot := range []bool{true, false} {
			t.Run(fmt.Sprintf("ListFromCacheSnapshot=%v", listFromCacheSnapshot), func(t *testing.T) {
				featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.ListFromCacheSnapshot, listFromCacheSnapshot)
				t.Run("List", func(t *testing.T) {
					t.Parallel()
					e := setup(t)
					storagetesting.RunTestList(ctx, t, e.storage, e.compactStore(), true, e.recorder())
				})
				t.Run("ConsistentList", func(t *testing.T) {
					t.Parallel()
					e := setup(t)
					storagetesting.RunTestConsistentList(ctx, t, e.storage, e.increaseRV(), true, true, listFromCacheSnapshot)
				})
				t.Run("GetListNonRecursive", func(t *testing.T) {
					t.Parallel()
					e := setup(t)
					storagetesting.RunTestGetListNonRecursive(ctx, t, e.increaseRV(), e.storage)
				})
			})
		}
	})
	t.Run("CompactRevision", func(t *testing.T) {
		featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.ListFromCacheSnapshot, true)
		e := setup(t)
		storagetesting.RunTestCompactRevision(ctx, t, e.storage, e.increaseRV(), e.compactStore())
	})
	t.Run("GetListRecursivePrefix", func(t *testing.T) { storagetesting.RunTestGetListRecursivePrefix(ctx, t, setup(t).storage) })
	t.Run("ListContinuation", func(t *testing.T) {
		storagetesting.RunTestListContinuation(ctx, t, setup(t).storage, checkStorageCalls)
	})
	t.Run("ListPaginationRareObject", func(t *testing.T) {
		storagetesting.RunTestListPaginationRareObject(ctx, t, setup(t).storage, checkStorageCalls)
	})
	t.Run("ListContinuationWithFilter", func(t *testing.T) {
		storagetesting.RunTestListContinuationWithFilter(ctx, t, setup(t).storage, checkStorageCalls)
	})
	t.Run("NamespaceScopedList", func(t *testing.T) {
		storagetesting.RunTestNamespaceScopedList(ctx, t, setup(t, withNodeNameAndNamespaceIndex).storage)
	})
	t.Run("GuaranteedUpdateWithTTL", func(t *testing.T) { storagetesting.RunTestGuaranteedUpdateWithTTL(ctx, t, setup(t).storage) })
	t.Run("GuaranteedUpdateWithConflict", func(t *testing.T) {
		storagetesting.RunTestGuaranteedUpdateWithConflict(ctx, t, setup(t).storage)
	})
	t.Run("GuaranteedUpdateWithSuggestionAndConflict", func(t *testing.T) {
		storagetesting.RunTestGuaranteedUpdateWithSuggestionAndConflict(ctx, t, setup(t).storage)
	})
	t.Run("Stats", func(t *testing.T) {
		for _, sizeBasedListCostEstimate := range []bool{true, false} {
			t.Run(fmt.Sprintf("SizeBasedListCostEstimate=%v", sizeBasedListCostEstimate), func(t *testing.T) {
				featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.SizeBasedListCostEstimate, sizeBasedListCostEstimate)
				storagetesting.RunTestStats(ctx, t, setup(t).storage, examplev1ProtoCodec, identity.NewEncryptCheckTransformer(), sizeBasedListCostEstimate)
			})
		}
	})
	t.Run("KeySchema", func(t *testing.T) { storagetesting.RunTestKeySchema(ctx, t, setup(t).storage) })

	t.Run("Watch", func(t *testing.T) {
		t.Run("Watch", func(t *testing.T) { storagetesting.RunTestWatch(ctx, t, setup(t).storage) })
		t.Run("WatchFromZero", func(t *testing.T) {
			e := setup(t)
			storagetesting.RunTestWatchFromZero(ctx, t, e.storage, e.compactWatch())
		})
		t.Run("DeleteTriggerWatch", func(t *testing.T) { storagetesting.RunTestDeleteTriggerWatch(ctx, t, setup(t).storage) })
		t.Run("WatchFromNonZero", func(t *testing.T) { storagetesting.RunTestWatchFromNonZero(ctx, t, setup(t).storage) })
		t.Run("DelayedWatchDelivery", func(t *testing.T) {
			storagetesting.RunTestDelayedWatchDelivery(ctx, t, setup(t).storage)
		})
		t.Run("WatcherTimeout", func(t *testing.T) { storagetesting.RunTestWatcherTimeout(ctx, t, setup(t).storage) })
		t.Run("WatchDeleteEventObjectHaveLatestRV", func(t *testing.T) {
			storagetesting.RunTestWatchDeleteEventObjectHaveLatestRV(ctx, t, setup(t).storage)
		})
		t.Run("WatchInitializationSignal", func(t *testing.T) {
			storagetesting.RunTestWatchInitializationSignal(ctx, t, setup(t).storage)
		})
		t.Run("ClusterScopedWatch", func(t *testing.T) {
			storagetesting.RunTestClusterScopedWatch(ctx, t, setup(t, withClusterScopedKeyFunc, withNodeNameAndNamespaceIndex).storage)
		})
		t.Run("NamespaceScopedWatch", func(t *testing.T) {
			storagetesting.RunTestNamespaceScopedWatch(ctx, t, setup(t, withNodeNameAndNamespaceIndex).storage)
		})
		t.Run("WatchDispatchBookmarkEvents", func(t *testing.T) {
			storagetesting.RunTestWatchDispatchBookmarkEvents(ctx, t, setup(t).storage, true)
		})
		t.Run("WatchBookmarksWithCorrectResourceVersion", func(t *testing.T) {
			storagetesting.RunTestOptionalWatchBookmarksWithCorrectResourceVersion(ctx, t, setup(t).storage)
		})
		t.Run("SendInitialEventsBackwardCompatibility", func(t *testing.T) {
			storagetesting.RunSendInitialEventsBackwardCompatibility(ctx, t, setup(t).storage)
		})
		t.Run("WatchSemantics", func(t *testing.T) {
			storagetesting.RunWatchSemantics(context.TODO(), t, createWrapper{setup(t).storage})
		})
		t.Run("WatchSemanticInitialEventsExtended", func(t *testing.T) {
			storagetesting.RunWatchSemanticInitialEventsExtended(context.TODO(), t, createWrapper{setup(t).storage})
		})
		t.Run("WatchListMatchSingle", func(t *testing.T) {
			storagetesting.RunWatchListMatchSingle(context.TODO(), t, createWrapper{setup(t).storage})
		})
	})
}

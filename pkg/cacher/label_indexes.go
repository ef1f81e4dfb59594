package cacher

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apiserver/pkg/registry/generic"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/apiserver/pkg/storage/storagebackend"
	"k8s.io/apiserver/pkg/storage/storagebackend/factory"
	"k8s.io/client-go/tools/cache"
)

// DefaultLabelIndexes are the pod labels that LISTs of large clusters select
// by: `app` and `k8s-app` (kubectl users, dashboards, most manifests), the
// recommended `app.kubernetes.io/name` and `app.kubernetes.io/instance`
// (Helm, operators), and the Job controller's `batch.kubernetes.io/job-name`
// (CI systems that watch their Jobs' pods).
var DefaultLabelIndexes = []string{
	"pods:app",
	"pods:app.kubernetes.io/name",
	"pods:app.kubernetes.io/instance",
	"pods:k8s-app",
	"pods:batch.kubernetes.io/job-name",
}

// LabelIndexes are the label keys whose values the watch cache of each
// resource indexes. A LIST whose label selector requires one value of an
// indexed key (`key=value`, `key==value`, `key in (value)`) is answered
// from the objects with that value, instead of every object of the
// resource in scope; the selector is still applied to them, so the answer
// is the same. A set (`key in (a,b)`) is answered by one lookup per value.
//
// The machinery is upstream's: the watch cache keeps any index it is given
// up to date and consults the predicate's IndexLabels, but upstream's
// registries configure none for labels. LabelIndexes configures them.
type LabelIndexes map[schema.GroupResource][]string

// ParseLabelIndexes reads entries of the form `resource[.group]:label-key`,
// e.g. `pods:app` or `deployments.apps:app.kubernetes.io/name`.
func ParseLabelIndexes(entries []string) (LabelIndexes, error) {
	indexes := LabelIndexes{}
	for _, entry := range entries {
		resource, key, ok := strings.Cut(entry, ":")
		if !ok || resource == "" {
			return nil, fmt.Errorf("label index %q: want resource[.group]:label-key", entry)
		}
		if errs := validation.IsQualifiedName(key); len(errs) > 0 {
			return nil, fmt.Errorf("label index %q: label key %q: %s", entry, key, strings.Join(errs, "; "))
		}
		gr := schema.ParseGroupResource(resource)
		if !slices.Contains(indexes[gr], key) {
			indexes[gr] = append(indexes[gr], key)
		}
	}
	return indexes, nil
}

// Decorate wraps a storage decorator so that the watch cache of a resource
// with label indexes builds them, and LISTs of it use them.
func (l LabelIndexes) Decorate(decorate generic.StorageDecorator) generic.StorageDecorator {
	return func(config *storagebackend.ConfigForResource, resourcePrefix string, keyFunc func(obj runtime.Object) (string, error),
		newFunc, newListFunc func() runtime.Object, getAttrs storage.AttrFunc, triggers storage.IndexerFuncs, indexers *cache.Indexers,
	) (storage.Interface, factory.DestroyFunc, error) {
		keys := l[config.GroupResource]
		if len(keys) == 0 {
			return decorate(config, resourcePrefix, keyFunc, newFunc, newListFunc, getAttrs, triggers, indexers)
		}
		withLabels := cache.Indexers{}
		if indexers != nil {
			maps.Copy(withLabels, *indexers)
		}
		for _, key := range keys {
			withLabels[storage.LabelIndex(key)] = labelValue(key)
		}
		s, destroy, err := decorate(config, resourcePrefix, keyFunc, newFunc, newListFunc, getAttrs, triggers, &withLabels)
		if err != nil {
			return s, destroy, err
		}
		if !WatchCached(s) {
			return s, destroy, nil // --watch-cache=false: LISTs read etcd, which has no indexes
		}
		for _, served := range []string{"index", "scan"} {
			setSelectorLists.WithLabelValues(config.GroupResource.Group, config.GroupResource.Resource, served)
		}
		return &labelIndexedStorage{Interface: s, resource: config.GroupResource, labels: keys, keyFunc: keyFunc, newList: newListFunc}, destroy, nil
	}
}

// labelValue indexes an object by the value of one label; an object
// without the label is not in the index.
func labelValue(key string) cache.IndexFunc {
	return func(obj any) ([]string, error) {
		o, err := meta.Accessor(obj)
		if err != nil {
			return nil, err
		}
		if value, ok := o.GetLabels()[key]; ok {
			return []string{value}, nil
		}
		return nil, nil
	}
}

// labelIndexedStorage tells the watch cache which labels it may look up by
// index, and serves set selectors on them by one lookup per value.
type labelIndexedStorage struct {
	storage.Interface
	resource schema.GroupResource
	labels   []string
	keyFunc  func(runtime.Object) (string, error)
	newList  func() runtime.Object
}

// Unwrap returns the watch cache's storage.
func (s *labelIndexedStorage) Unwrap() storage.Interface { return s.Interface }

func (s *labelIndexedStorage) GetList(ctx context.Context, key string, opts storage.ListOptions, listObj runtime.Object) error {
	opts.Predicate.IndexLabels = s.labels
	if lookup, ok := s.findSetLookup(ctx, opts); ok {
		served, err := s.listSet(ctx, key, opts, lookup, listObj)
		if served {
			setSelectorLists.WithLabelValues(s.resource.Group, s.resource.Resource, "index").Inc()
			return err
		}
		setSelectorLists.WithLabelValues(s.resource.Group, s.resource.Resource, "scan").Inc()
	}
	return s.Interface.GetList(ctx, key, opts, listObj)
}

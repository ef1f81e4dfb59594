package cacher

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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

// Indexes are the label keys and fields whose values the watch cache of
// each resource indexes. A LIST whose selector requires one value of an
// indexed key (`key=value`, `key==value`, `key in (value)`; a field
// selector's `field=value`) is answered from the objects with that value,
// instead of every object of the resource in scope; the selectors are still
// applied to them, so the answer is the same. A label set (`key in (a,b)`)
// is answered by one lookup per value.
//
// The machinery is upstream's: the watch cache keeps any index it is given
// up to date and consults the predicate's IndexLabels and IndexFields, but
// upstream's registries configure no label index and one field index
// (spec.nodeName of pods). Indexes configures more.
type Indexes struct {
	Labels, Fields map[schema.GroupResource][]string
}

// ParseIndexes reads entries of the form `resource[.group]:key`: a label
// key (`pods:app`, `deployments.apps:app.kubernetes.io/name`) or a field
// of the resource's field selectors (`pods:status.phase`).
func ParseIndexes(labels, fields []string) (Indexes, error) {
	x := Indexes{Labels: map[schema.GroupResource][]string{}, Fields: map[schema.GroupResource][]string{}}
	for _, entry := range labels {
		if err := addIndex(x.Labels, entry, "label", validation.IsQualifiedName); err != nil {
			return Indexes{}, err
		}
	}
	for _, entry := range fields {
		if err := addIndex(x.Fields, entry, "field", isFieldPath); err != nil {
			return Indexes{}, err
		}
	}
	return x, nil
}

func addIndex(indexes map[schema.GroupResource][]string, entry, kind string, validate func(string) []string) error {
	resource, key, ok := strings.Cut(entry, ":")
	if !ok || resource == "" {
		return fmt.Errorf("%s index %q: want resource[.group]:%s", kind, entry, kind)
	}
	if errs := validate(key); len(errs) > 0 {
		return fmt.Errorf("%s index %q: %s %q: %s", kind, entry, kind, key, strings.Join(errs, "; "))
	}
	gr := schema.ParseGroupResource(resource)
	if !slices.Contains(indexes[gr], key) {
		indexes[gr] = append(indexes[gr], key)
	}
	return nil
}

// isFieldPath accepts what field selectors name: dot-separated parts.
func isFieldPath(path string) []string {
	for part := range strings.SplitSeq(path, ".") {
		if part == "" || strings.ContainsAny(part, " =!,()") {
			return []string{"want a field selector's name, like status.phase"}
		}
	}
	return nil
}

// Decorate wraps a storage decorator so that the watch cache of a resource
// with indexes builds them, and LISTs of it use them. A field the resource
// has no field selector for is an error: the apiserver does not start.
func (x Indexes) Decorate(decorate generic.StorageDecorator) generic.StorageDecorator {
	return func(config *storagebackend.ConfigForResource, resourcePrefix string, keyFunc func(obj runtime.Object) (string, error),
		newFunc, newListFunc func() runtime.Object, getAttrs storage.AttrFunc, triggers storage.IndexerFuncs, indexers *cache.Indexers,
	) (storage.Interface, factory.DestroyFunc, error) {
		labels, fields := x.Labels[config.GroupResource], x.Fields[config.GroupResource]
		if len(labels) == 0 && len(fields) == 0 {
			return decorate(config, resourcePrefix, keyFunc, newFunc, newListFunc, getAttrs, triggers, indexers)
		}
		withOurs := cache.Indexers{}
		if indexers != nil {
			maps.Copy(withOurs, *indexers)
		}
		for _, key := range labels {
			withOurs[storage.LabelIndex(key)] = labelValue(key)
		}
		if len(fields) > 0 {
			_, selectable, err := getAttrs(newFunc())
			if err != nil {
				return nil, nil, err
			}
			for _, field := range fields {
				if _, ok := selectable[field]; !ok {
					return nil, nil, fmt.Errorf("field index %s:%s: %s has no field selector %q (it has %v)",
						config.GroupResource, field, config.GroupResource, field, slices.Sorted(maps.Keys(selectable)))
				}
				withOurs[storage.FieldIndex(field)] = fieldValue(getAttrs, field)
			}
		}
		s, destroy, err := decorate(config, resourcePrefix, keyFunc, newFunc, newListFunc, getAttrs, triggers, &withOurs)
		if err != nil {
			return s, destroy, err
		}
		if !WatchCached(s) {
			return s, destroy, nil // --watch-cache=false: LISTs read etcd, which has no indexes
		}
		for _, served := range []string{"index", "scan"} {
			setSelectorLists.WithLabelValues(config.GroupResource.Group, config.GroupResource.Resource, served)
		}
		indexed := &indexedStorage{Interface: s, resource: config.GroupResource, prefix: resourcePrefix, labels: labels, fields: fields, keyFunc: keyFunc, newList: newListFunc}
		ctx, stopReporting := context.WithCancel(context.Background())
		go indexed.reportIndexSizes(ctx, indexCensusInterval)
		return indexed, func() {
			stopReporting()
			destroy()
		}, nil
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

// fieldValue indexes an object by the value of one of its selectable
// fields, as the registry's field selectors see it.
func fieldValue(getAttrs storage.AttrFunc, field string) cache.IndexFunc {
	return func(obj any) ([]string, error) {
		o, ok := obj.(runtime.Object)
		if !ok {
			return nil, fmt.Errorf("%T is not an API object", obj)
		}
		_, fields, err := getAttrs(o)
		if err != nil {
			return nil, err
		}
		return []string{fields[field]}, nil
	}
}

// indexedStorage tells the watch cache which labels and fields it may look
// up by index, and serves label set selectors by one lookup per value.
type indexedStorage struct {
	storage.Interface
	resource schema.GroupResource
	prefix   string // of the resource's keys
	labels   []string
	fields   []string
	keyFunc  func(runtime.Object) (string, error)
	newList  func() runtime.Object
}

// Unwrap returns the watch cache's storage.
func (s *indexedStorage) Unwrap() storage.Interface { return s.Interface }

func (s *indexedStorage) GetList(ctx context.Context, key string, opts storage.ListOptions, listObj runtime.Object) error {
	opts.Predicate = s.withIndexes(opts.Predicate)
	if lookup, ok := s.findSetLookup(ctx, opts); ok {
		served, firstRV, err := s.listSet(ctx, key, opts, lookup, listObj)
		if served {
			setSelectorLists.WithLabelValues(s.resource.Group, s.resource.Resource, "index").Inc()
			return err
		}
		setSelectorLists.WithLabelValues(s.resource.Group, s.resource.Resource, "scan").Inc()
		if firstRV > 0 && opts.ResourceVersion == "" {
			// The first lookup was this request's consistent read: a scan
			// at its resourceVersion or newer is as consistent, and does
			// not make a second one (another round trip to etcd for its
			// revision, another wait for the cache, counted twice).
			opts.ResourceVersion, opts.ResourceVersionMatch = strconv.FormatUint(firstRV, 10), metav1.ResourceVersionMatchNotOlderThan
		}
	}
	return s.Interface.GetList(ctx, key, opts, listObj)
}

// withIndexes tells a selection which indexes it may be served by: the
// registry's own and ours.
func (s *indexedStorage) withIndexes(p storage.SelectionPredicate) storage.SelectionPredicate {
	p.IndexLabels = s.labels
	if len(s.fields) > 0 {
		// The registry's own (spec.nodeName for pods) first, as upstream consults them.
		p.IndexFields = append(slices.Clip(p.IndexFields), s.fields...)
	}
	return p
}

// Package cacher is Bulwark's layer over upstream's watch cache: storage
// decorators, installed through the RESTOptionsGetters of every server, that
// add label and field indexes to the watch caches (Indexes), make the
// objects in them share their common values (ShareValues) and record which
// resources' watch caches are filled (Readiness); and each resource's size
// as soon as its watch cache is filled, for the large-LIST limit
// (ObjectCounts).
package cacher

import (
	"sync"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/registry/generic"
	"k8s.io/apiserver/pkg/storage"
	cacherstorage "k8s.io/apiserver/pkg/storage/cacher"
	"k8s.io/apiserver/pkg/storage/storagebackend"
	"k8s.io/apiserver/pkg/storage/storagebackend/factory"
	"k8s.io/client-go/tools/cache"
)

// Readiness records the storage of every resource the apiserver serves and
// answers whether its watch cache is ready, from the storage's own
// ReadinessCheck (upstream's cacher reports not ready while it fills, and
// while it re-initialises after an error). The cache-not-ready gate reads
// it, and metrics bound the resources they name by it.
type Readiness struct {
	mu     sync.RWMutex
	stores map[schema.GroupResource]map[*registered]struct{}
}

type registered struct{ storage.Interface }

// NewReadiness returns an empty registry.
func NewReadiness() *Readiness {
	return &Readiness{stores: map[schema.GroupResource]map[*registered]struct{}{}}
}

// Ready tells whether every storage of a resource is ready to serve; known
// is false for a resource no storage was created for (yet).
func (r *Readiness) Ready(gr schema.GroupResource) (known, ready bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	stores := r.stores[gr]
	for s := range stores {
		if s.ReadinessCheck() != nil {
			return true, false
		}
	}
	return len(stores) > 0, true
}

// AllReady tells whether every storage recorded so far is ready, and there
// is one.
func (r *Readiness) AllReady() bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, stores := range r.stores {
		for s := range stores {
			if s.ReadinessCheck() != nil {
				return false
			}
		}
	}
	return len(r.stores) > 0
}

// readyStorages returns a storage of each resource whose storages are all
// ready.
func (r *Readiness) readyStorages() map[schema.GroupResource]storage.Interface {
	r.mu.RLock()
	defer r.mu.RUnlock()
	ready := map[schema.GroupResource]storage.Interface{}
	for gr, stores := range r.stores {
		for s := range stores {
			if s.ReadinessCheck() != nil {
				delete(ready, gr)
				break
			}
			ready[gr] = s.Interface
		}
	}
	return ready
}

// Serves tells whether the apiserver has storage for a resource: the
// resources a metric label may name.
func (r *Readiness) Serves(gr schema.GroupResource) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.stores[gr]) > 0
}

func (r *Readiness) add(gr schema.GroupResource, s storage.Interface) func() {
	entry := &registered{s}
	r.mu.Lock()
	if r.stores[gr] == nil {
		r.stores[gr] = map[*registered]struct{}{}
	}
	r.stores[gr][entry] = struct{}{}
	r.mu.Unlock()
	return func() {
		r.mu.Lock()
		delete(r.stores[gr], entry)
		if len(r.stores[gr]) == 0 {
			delete(r.stores, gr)
		}
		r.mu.Unlock()
	}
}

// Decorate wraps a storage decorator so that every storage it creates is
// recorded until it is destroyed (a deleted CRD's storage leaves with it).
func (r *Readiness) Decorate(decorate generic.StorageDecorator) generic.StorageDecorator {
	return func(config *storagebackend.ConfigForResource, resourcePrefix string, keyFunc func(obj runtime.Object) (string, error),
		newFunc, newListFunc func() runtime.Object, getAttrs storage.AttrFunc, triggers storage.IndexerFuncs, indexers *cache.Indexers,
	) (storage.Interface, factory.DestroyFunc, error) {
		s, destroy, err := decorate(config, resourcePrefix, keyFunc, newFunc, newListFunc, getAttrs, triggers, indexers)
		if err != nil {
			return s, destroy, err
		}
		remove := r.add(config.GroupResource, s)
		return s, func() {
			remove()
			destroy()
		}, nil
	}
}

// WithStorageDecorator returns getter with the storage decorator of every
// resource it gives options for wrapped by decorate.
func WithStorageDecorator(getter generic.RESTOptionsGetter, decorate func(generic.StorageDecorator) generic.StorageDecorator) generic.RESTOptionsGetter {
	return decoratingGetter{getter: getter, decorate: decorate}
}

// decoratingGetter wraps the storage decorator of every resource a getter
// gives options for.
type decoratingGetter struct {
	getter   generic.RESTOptionsGetter
	decorate func(generic.StorageDecorator) generic.StorageDecorator
}

func (g decoratingGetter) GetRESTOptions(resource schema.GroupResource, example runtime.Object) (generic.RESTOptions, error) {
	opts, err := g.getter.GetRESTOptions(resource, example)
	if err != nil {
		return opts, err
	}
	opts.Decorator = g.decorate(opts.Decorator)
	return opts, nil
}

// WatchCached tells whether s is served by upstream's watch cache, under any
// of Bulwark's decorators (each has an Unwrap method). Without it, reads go
// to etcd: --watch-cache=false, or a resource whose cache is disabled.
func WatchCached(s storage.Interface) bool {
	for {
		switch t := s.(type) {
		case *cacherstorage.CacheDelegator:
			return true
		case interface{ Unwrap() storage.Interface }:
			s = t.Unwrap()
		default:
			return false
		}
	}
}

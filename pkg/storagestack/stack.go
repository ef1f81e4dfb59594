// Package storagestack composes Bulwark's storage decorators around the
// storage of every resource, in the order the server installs them: the
// sharing of values between the objects upstream's watch cache takes in,
// label and field indexes over the watch cache, the streaming lists of a
// namespace or an index served by LISTs, then bookmarks and start
// histories (the path every watch takes), then the readiness registry. The
// server and the storage suite that proves the composition against
// upstream's own storage tests (suite_test.go) both build it with Decorate,
// so the suite cannot drift from what the server runs.
package storagestack

import (
	"k8s.io/apiserver/pkg/registry/generic"

	"github.com/bulwark-k8s/bulwark/pkg/bookmark"
	"github.com/bulwark-k8s/bulwark/pkg/cacher"
)

// Stack is Bulwark's storage decorators for one server.
type Stack struct {
	// ShareValues makes the watch caches' objects share their common values.
	ShareValues bool
	// Indexes are added to the watch caches; none: upstream's only.
	Indexes cacher.Indexes
	// Bookmarks serve the watches; nil, or inactive (no interval and no
	// history budget): the watch cache serves them as upstream's does.
	Bookmarks *bookmark.Manager
	// Caches records every resource's storage; nil: none.
	Caches *cacher.Readiness
}

// Decorate returns getter with the storage of every resource it gives
// options for wrapped by the stack's decorators.
func (s Stack) Decorate(getter generic.RESTOptionsGetter) generic.RESTOptionsGetter {
	if s.ShareValues {
		getter = cacher.WithStorageDecorator(getter, cacher.ShareValues)
	}
	if len(s.Indexes.Labels) > 0 || len(s.Indexes.Fields) > 0 {
		getter = cacher.WithStorageDecorator(getter, s.Indexes.Decorate)
	}
	getter = cacher.WithStorageDecorator(getter, cacher.StreamingLists)
	if s.Bookmarks != nil && s.Bookmarks.Active() {
		getter = cacher.WithStorageDecorator(getter, s.Bookmarks.Decorate)
	}
	if s.Caches != nil {
		getter = cacher.WithStorageDecorator(getter, s.Caches.Decorate)
	}
	return getter
}

package cacher

import (
	"context"
	"slices"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apiserver/pkg/storage"
)

// maxIndexedSetValues bounds the lookups one LIST may cost: a set selector
// with more values is served by upstream's scan.
const maxIndexedSetValues = 32

// setLookup is a LIST whose label selector requires one of several values
// of an indexed key: `key in (a,b)`. Upstream's watch cache looks up one
// index value per request, so it would scan every object in scope.
type setLookup struct {
	key    string
	values []string
	others labels.Requirements // the rest of the selector, applied to each lookup
}

// findSetLookup returns the set requirement with the fewest values among
// the indexed keys, if the request is one the watch cache would answer
// from an index had it asked for a single value: a first page (a continue
// token is served from an exact snapshot, without indexes), at the latest
// or a not-older-than resourceVersion, and not already served by an index.
func (s *indexedStorage) findSetLookup(ctx context.Context, opts storage.ListOptions) (setLookup, bool) {
	p := opts.Predicate
	switch {
	case p.Continue != "", p.Label == nil, p.ShardSelector != nil && !p.ShardSelector.Empty():
		return setLookup{}, false
	case opts.ResourceVersionMatch == metav1.ResourceVersionMatchNotOlderThan:
	case opts.ResourceVersionMatch != "":
		return setLookup{}, false
	case p.Limit > 0 && opts.ResourceVersion != "" && opts.ResourceVersion != "0":
		return setLookup{}, false // the legacy exact read of a page
	}
	if len(p.MatcherIndex(ctx)) > 0 {
		return setLookup{}, false
	}
	requirements, _ := p.Label.Requirements()
	best := -1
	for i, r := range requirements {
		if r.Operator() != selection.In || !slices.Contains(s.labels, r.Key()) {
			continue
		}
		n := r.Values().Len()
		if n < 2 || n > maxIndexedSetValues {
			continue
		}
		if best < 0 || n < requirements[best].Values().Len() {
			best = i
		}
	}
	if best < 0 {
		return setLookup{}, false
	}
	return setLookup{
		key:    requirements[best].Key(),
		values: requirements[best].Values().List(),
		others: slices.Delete(slices.Clone(requirements), best, best+1),
	}, true
}

// listSet answers a set lookup with one indexed LIST per value, all at the
// resourceVersion of the first, merged in key order; the merged page,
// continue token and resourceVersion are what upstream's scan returns.
// The LISTs after the first ask for not-older-than that resourceVersion; if
// the resource changed in between they answer a newer one, and served is
// false: the caller falls back to the scan. firstRV is then the
// resourceVersion the first LIST read at, 0 if it failed.
func (s *indexedStorage) listSet(ctx context.Context, key string, opts storage.ListOptions, lookup setLookup, listObj runtime.Object) (served bool, firstRV uint64, err error) {
	limit := opts.Predicate.Limit
	if opts.ResourceVersion == "0" {
		limit = 0 // upstream ignores the limit of a LIST from any cached version
	}
	var (
		items   []runtime.Object
		keys    = map[runtime.Object]string{}
		rv      uint64
		hasMore bool
	)
	for i, value := range lookup.values {
		one, err := labels.NewRequirement(lookup.key, selection.Equals, []string{value})
		if err != nil {
			return false, rv, nil
		}
		valueOpts := opts
		valueOpts.Predicate.Label = labels.NewSelector().Add(lookup.others...).Add(*one)
		valueOpts.Predicate.Limit = limit
		if i > 0 {
			valueOpts.ResourceVersion, valueOpts.ResourceVersionMatch = strconv.FormatUint(rv, 10), metav1.ResourceVersionMatchNotOlderThan
		}
		list := s.newList()
		if err := s.Interface.GetList(ctx, key, valueOpts, list); err != nil {
			// The first LIST fails as the request itself would.
			return i == 0, rv, err
		}
		listMeta, err := meta.ListAccessor(list)
		if err != nil {
			return false, rv, nil
		}
		listRV, err := s.Versioner().ParseResourceVersion(listMeta.GetResourceVersion())
		if err != nil || (i > 0 && listRV != rv) {
			return false, rv, nil
		}
		rv = listRV
		hasMore = hasMore || listMeta.GetContinue() != ""
		objs, err := meta.ExtractList(list)
		if err != nil {
			return false, rv, nil
		}
		for _, obj := range objs {
			if keys[obj], err = s.keyFunc(obj); err != nil {
				return false, rv, nil
			}
		}
		items = append(items, objs...)
	}
	slices.SortFunc(items, func(a, b runtime.Object) int { return strings.Compare(keys[a], keys[b]) })
	if limit > 0 && int64(len(items)) > limit {
		items, hasMore = items[:limit], true
	}
	var lastKey string
	if len(items) > 0 {
		lastKey = keys[items[len(items)-1]]
	}
	continueToken, remaining, err := storage.PrepareContinueToken(lastKey, key, int64(rv), int64(len(items)), hasMore, opts)
	if err != nil {
		return true, rv, err
	}
	if err := meta.SetList(listObj, items); err != nil {
		return true, rv, err
	}
	return true, rv, s.Versioner().UpdateList(listObj, rv, continueToken, remaining)
}

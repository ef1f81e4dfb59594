package main

import (
	"context"
	"time"

	"github.com/bulwark-k8s/bulwark/internal/seed"
)

// seedData writes the data set straight into etcd in the apiserver's
// storage encoding, with the namespace the scenarios create objects in,
// then compacts etcd as a running cluster's is. Both servers then read the
// same etcd.
func seedData(ctx context.Context, etcdURL string, d seed.Data) (time.Duration, error) {
	start := time.Now()
	now := seed.Now()
	objects := func(yield func(seed.Object) bool) {
		if !yield(seed.Object{Key: "/registry/namespaces/" + benchNamespace, Object: seed.Namespace(benchNamespace, now)}) ||
			!yield(seed.Object{Key: "/registry/serviceaccounts/" + benchNamespace + "/default", Object: seed.ServiceAccount(benchNamespace, now)}) {
			return
		}
		for o := range d.Objects(now) {
			if !yield(o) {
				return
			}
		}
	}
	if err := seed.Put(ctx, etcdURL, objects); err != nil {
		return 0, err
	}
	if err := seed.Compact(ctx, etcdURL); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

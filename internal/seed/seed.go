// Package seed writes Kubernetes objects straight into etcd, in the
// apiserver's storage encoding (protobuf under /registry for built-in
// types, JSON for custom resources), an order of magnitude faster than
// creating them through an apiserver, so that the tests and the bench can
// give servers large, identical data. Data is the shape of a seeded
// cluster; its objects are those a running cluster holds.
package seed

import (
	"context"
	"fmt"
	"iter"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	"k8s.io/client-go/kubernetes/scheme"
)

// etcd's default limits on one request: --max-txn-ops and about 1.5 MiB.
const (
	maxTxnOps   = 128
	maxTxnBytes = 1 << 20
	writers     = 16
)

// Object is one object and its etcd key.
type Object struct {
	Key    string
	Object runtime.Object
}

// Codec decodes what the apiserver stores of built-in types.
var Codec = protobuf.NewSerializer(scheme.Scheme, scheme.Scheme)

// Encode encodes an object as the apiserver stores it.
func Encode(obj runtime.Object) ([]byte, error) {
	if u, ok := obj.(*unstructured.Unstructured); ok {
		return u.MarshalJSON()
	}
	return runtime.Encode(Codec, obj)
}

// Put writes objects into etcd in transactions of many objects each, from
// several writers at once.
func Put(ctx context.Context, etcdURL string, objects iter.Seq[Object]) error {
	return write(ctx, etcdURL, objects, func(ctx context.Context, client *clientv3.Client, work <-chan kv) error {
		var batch []clientv3.Op
		size := 0
		flush := func() error {
			if len(batch) == 0 {
				return nil
			}
			_, err := client.Txn(ctx).Then(batch...).Commit()
			batch, size = batch[:0], 0
			return err
		}
		for item := range work {
			batch = append(batch, clientv3.OpPut(item.key, string(item.value)))
			if size += len(item.key) + len(item.value); len(batch) == maxTxnOps || size > maxTxnBytes {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		return flush()
	})
}

// PutOneRevisionEach writes objects into etcd one revision each, as
// objects created through the API are: the history a watch cache's start
// history reads.
func PutOneRevisionEach(ctx context.Context, etcdURL string, objects iter.Seq[Object]) error {
	return write(ctx, etcdURL, objects, func(ctx context.Context, client *clientv3.Client, work <-chan kv) error {
		for item := range work {
			if _, err := client.Put(ctx, item.key, string(item.value)); err != nil {
				return err
			}
		}
		return nil
	})
}

type kv struct {
	key   string
	value []byte
}

// write encodes objects and hands them to writers that put them.
func write(ctx context.Context, etcdURL string, objects iter.Seq[Object], writer func(context.Context, *clientv3.Client, <-chan kv) error) error {
	client, err := clientv3.New(clientv3.Config{Endpoints: []string{etcdURL}, DialTimeout: 10 * time.Second})
	if err != nil {
		return err
	}
	defer client.Close()
	work := make(chan kv, 1024)
	g, ctx := errgroup.WithContext(ctx)
	for range writers {
		g.Go(func() error { return writer(ctx, client, work) })
	}
	g.Go(func() error {
		defer close(work)
		for o := range objects {
			value, err := Encode(o.Object)
			if err != nil {
				return fmt.Errorf("%s: %w", o.Key, err)
			}
			select {
			case work <- kv{o.Key, value}:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
	return g.Wait()
}

// Compact compacts etcd's history up to its current revision: a running
// cluster's etcd keeps minutes of history (the apiserver compacts it every
// 5 minutes), and seeding is not history.
func Compact(ctx context.Context, etcdURL string) error {
	client, err := clientv3.New(clientv3.Config{Endpoints: []string{etcdURL}, DialTimeout: 10 * time.Second})
	if err != nil {
		return err
	}
	defer client.Close()
	resp, err := client.Get(ctx, "/registry/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return err
	}
	_, err = client.Compact(ctx, resp.Header.Revision)
	return err
}

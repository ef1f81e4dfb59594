package main

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

const (
	// informerConfigMaps are the ConfigMaps of the namespace every informer
	// of the namespaced-informers scenario watches: an operator's handful
	// among the cluster's -configmaps.
	informerConfigMaps = 100
	// informedLabel marks them.
	informedLabel = "bench-informed"
)

// namespacedInformersScenario starts p.NamespacedInformers informers of the
// ConfigMaps of one namespace at once, as the replicas of many operators
// do after a rollout or an apiserver's restart: client-go's informers,
// each with a streaming list (a watch with initial events). It measures
// the time until all have synced. Upstream's watch cache builds each
// one's initial events from every ConfigMap of the cluster before it
// filters them by namespace.
func namespacedInformersScenario(ctx context.Context, s *server, p Params) (*measurement, error) {
	deleteInformed := func(ctx context.Context) error {
		_, _, err := timed(ctx, s.http, http.MethodDelete, s.url+"/api/v1/namespaces/"+benchNamespace+"/configmaps?labelSelector="+informedLabel, goodUserAgent, "", nil)
		return err
	}
	// A server that could not complete the scenario before (an
	// *incomplete) may have left them.
	if err := deleteInformed(ctx); err != nil {
		return nil, err
	}
	for i := range informerConfigMaps {
		cm := fmt.Sprintf(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"informed-%d","labels":{%q:"true"}},"data":{"config":"value-%d"}}`, i, informedLabel, i)
		if _, _, err := timed(ctx, s.http, http.MethodPost, s.url+"/api/v1/namespaces/"+benchNamespace+"/configmaps", goodUserAgent, "application/json", []byte(cm)); err != nil {
			return nil, fmt.Errorf("create the informed ConfigMaps: %w", err)
		}
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	const informersPerConnection = 100
	var client kubernetes.Interface
	synced := make([]cache.InformerSynced, p.NamespacedInformers)
	start := time.Now()
	for i := range synced {
		if i%informersPerConnection == 0 {
			cfg := ownConnection(s.cfg, "bench-operator/1.0")
			cfg.ContentType = protobufAccept
			var err error
			if client, err = kubernetes.NewForConfig(cfg); err != nil {
				return nil, err
			}
		}
		factory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(benchNamespace))
		informer := factory.Core().V1().ConfigMaps().Informer()
		factory.Start(ctx.Done())
		synced[i] = informer.HasSynced
	}
	all := func() bool {
		for _, hasSynced := range synced {
			if !hasSynced() {
				return false
			}
		}
		return true
	}
	if err := pollServing(ctx, s, watchersTimeout(len(synced)), all); err != nil {
		return nil, fmt.Errorf("initial sync of %d informers: %w", len(synced), err)
	}
	took := time.Since(start)
	cancel()
	return &measurement{
		values: []namedValue{
			{"informers", "count", float64(len(synced))},
			{"ConfigMaps of the cluster", "count", float64(p.ConfigMaps + informerConfigMaps)},
			{"initial sync of every informer", "s", took.Seconds()},
		},
		cleanup: deleteInformed,
	}, nil
}

package main

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"k8s.io/client-go/rest"

	"github.com/bulwark-k8s/bulwark/internal/seed"
)

// costScenario sends p.CostRequests small LISTs with 16 workers and reports
// the apiserver's CPU seconds for them and how they were answered. It
// compares what a request costs when it is turned away at different depths
// of the handler chain.
func costScenario(cfg func(s *server) *rest.Config, userAgent string) func(context.Context, *server, Params) (*measurement, error) {
	return func(ctx context.Context, s *server, p Params) (*measurement, error) {
		client, err := rest.HTTPClientFor(cfg(s))
		if err != nil {
			return nil, err
		}
		var codes [600]atomic.Int64
		before, err := cpuSeconds(s.proc.Pid())
		if err != nil {
			return nil, err
		}
		_, wall, err := parallel(ctx, p.CostRequests, 16, func(i int) (time.Duration, error) {
			d, _, err := timed(ctx, client, http.MethodGet, s.url+"/api/v1/namespaces/"+seed.NamespaceName(i%p.Namespaces)+"/pods?limit=1", userAgent, "", nil)
			if se, ok := err.(*statusError); ok && se.code < len(codes) {
				codes[se.code].Add(1)
				return d, nil
			}
			if err == nil {
				codes[http.StatusOK].Add(1)
			}
			return d, err
		})
		if err != nil {
			return nil, err
		}
		after, err := cpuSeconds(s.proc.Pid())
		if err != nil {
			return nil, err
		}
		m := &measurement{values: []namedValue{
			{"apiserver CPU per 1,000 requests", "s", (after - before) * 1000 / float64(p.CostRequests)},
			{"requests per second", "req/s", float64(p.CostRequests) / wall.Seconds()},
		}}
		for _, code := range []int{http.StatusOK, http.StatusUnauthorized, http.StatusTooManyRequests} {
			m.values = append(m.values, namedValue{fmt.Sprintf("answered %d", code), "count", float64(codes[code].Load())})
		}
		return m, nil
	}
}

// asFlooder is the flooder: a node agent's service account with the
// flooder's User-Agent, which ours throttles.
func asFlooder(s *server) *rest.Config { return ownConnection(s.flooder, floodUserAgent) }

// withBadToken has no client certificate and a token no authenticator
// accepts: every request runs authentication and fails it.
func withBadToken(s *server) *rest.Config {
	c := ownConnection(s.cfg, goodUserAgent)
	c.CertFile, c.KeyFile, c.BearerToken = "", "", "not-a-valid-token"
	return c
}

// Package filters holds Bulwark's HTTP filters. Each wraps an http.Handler,
// as upstream's k8s.io/apiserver/pkg/server/filters do, and
// cmd/kube-apiserver puts them around upstream's DefaultBuildHandlerChain:
// they run before authentication, because authentication (TLS client
// certificates, token reviews, webhooks) is the expensive part of a request
// and a limiter that runs after it protects too late.
//
// They read what a request asks for (verb, resource, namespace) from the
// RequestInfo that upstream's WithRequestInfo, put outside them, parses once
// from the URL.
//
// None of them ever rejects health checks (/healthz, /livez, /readyz),
// /metrics, or heartbeats (see package heartbeat); none of them changes who
// a request is authenticated as or what it may do.
package filters

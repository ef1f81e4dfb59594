package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"k8s.io/client-go/rest"
)

const (
	protobufAccept = "application/vnd.kubernetes.protobuf"
	goodUserAgent  = "bench-good-client/1.0"
	floodUserAgent = "bench-flooder/1.0"
)

// ownConnection returns a copy of cfg whose clients use a connection of
// their own: client-go shares one transport (one HTTP/2 connection) among
// equal configs, while real clients (kubelets, controllers) each have theirs.
func ownConnection(cfg *rest.Config, userAgent string) *rest.Config {
	c := rest.CopyConfig(cfg)
	c.Dial = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	c.UserAgent = userAgent
	c.QPS, c.Burst = -1, 0 // no client-side rate limit: the server is what is measured
	return c
}

func httpClient(cfg *rest.Config, userAgent string) (*http.Client, error) {
	return rest.HTTPClientFor(ownConnection(cfg, userAgent))
}

func get(ctx context.Context, client *http.Client, url, accept, userAgent string) (*http.Response, error) {
	return do(ctx, client, http.MethodGet, url, accept, userAgent, "", nil)
}

func do(ctx context.Context, client *http.Client, method, url, accept, userAgent, contentType string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", accept)
	if userAgent != "" {
		req.Header.Set("User-Agent", userAgent)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return client.Do(req)
}

// statusError is a response outside 2xx.
type statusError struct {
	code int
	body string
}

func (e *statusError) Error() string { return fmt.Sprintf("HTTP %d: %.200s", e.code, e.body) }

// timed sends a request, reads the whole body, and returns the time it took
// and the body; the body is not decoded, so the client's cost stays small.
func timed(ctx context.Context, client *http.Client, method, url, userAgent, contentType string, body []byte) (time.Duration, []byte, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	start := time.Now()
	resp, err := do(ctx, client, method, url, protobufAccept+", application/json", userAgent, contentType, r)
	if err != nil {
		return 0, nil, err
	}
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	elapsed := time.Since(start)
	if err != nil {
		return elapsed, nil, err
	}
	if resp.StatusCode/100 != 2 {
		return elapsed, data, &statusError{code: resp.StatusCode, body: string(data)}
	}
	return elapsed, data, nil
}

// Package embeddedetcd runs a single-member etcd inside the kube-apiserver
// process, so that a newcomer can start a working apiserver with no etcd of
// their own. It is used only when no --etcd-servers is given; production
// clusters point the apiserver at an external etcd and never reach this code.
//
// The defaults carry the lessons of large clusters: bbolt's hash-map freelist
// (the array freelist makes every commit scan the free pages, which grows
// with a fragmented multi-gigabyte database) and an 8 GiB backend quota
// (etcd's 2 GiB default is reached by a few hundred thousand objects).
package embeddedetcd

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// Defaults for Config.
const (
	DefaultListenClientURL   = "http://127.0.0.1:2379"
	DefaultListenPeerURL     = "http://127.0.0.1:2380"
	DefaultQuotaBackendBytes = 8 << 30
	DefaultStartTimeout      = time.Minute
)

// Config is what the embedded etcd needs. The zero value of any field but
// DataDir means its default.
type Config struct {
	// DataDir holds etcd's WAL and database; data survives restarts.
	DataDir string
	// ListenClientURL is where the apiserver reaches etcd. Loopback only.
	ListenClientURL string
	// ListenPeerURL is required by etcd even for one member. Loopback only.
	ListenPeerURL string
	// QuotaBackendBytes is the database size at which etcd raises a NOSPACE alarm.
	QuotaBackendBytes int64
	// StartTimeout bounds how long Start waits for etcd to serve.
	StartTimeout time.Duration
}

// WithDefaults returns c with every unset field set to its default.
func (c Config) WithDefaults() Config {
	if c.ListenClientURL == "" {
		c.ListenClientURL = DefaultListenClientURL
	}
	if c.ListenPeerURL == "" {
		c.ListenPeerURL = DefaultListenPeerURL
	}
	if c.QuotaBackendBytes == 0 {
		c.QuotaBackendBytes = DefaultQuotaBackendBytes
	}
	if c.StartTimeout == 0 {
		c.StartTimeout = DefaultStartTimeout
	}
	return c
}

// Validate reports every field that cannot work, after defaults are applied.
func (c Config) Validate() error {
	c = c.WithDefaults()
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("embedded etcd: data dir must be set"))
	}
	if _, err := loopbackURL(c.ListenClientURL); err != nil {
		errs = append(errs, fmt.Errorf("embedded etcd: client URL: %w", err))
	}
	if _, err := loopbackURL(c.ListenPeerURL); err != nil {
		errs = append(errs, fmt.Errorf("embedded etcd: peer URL: %w", err))
	}
	if c.QuotaBackendBytes < 0 {
		errs = append(errs, fmt.Errorf("embedded etcd: quota backend bytes must not be negative, got %d", c.QuotaBackendBytes))
	}
	return errors.Join(errs...)
}

// loopbackURL parses raw and rejects anything that would expose the
// embedded etcd, which has no TLS and no auth, beyond this machine.
func loopbackURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "http" {
		return nil, fmt.Errorf("%q: scheme must be http", raw)
	}
	switch u.Hostname() {
	case "127.0.0.1", "localhost", "::1":
	default:
		return nil, fmt.Errorf("%q: host must be a loopback address", raw)
	}
	if u.Port() == "" {
		return nil, fmt.Errorf("%q: port must be set", raw)
	}
	return u, nil
}

// Server is a running embedded etcd.
type Server struct {
	etcd      *embed.Etcd
	clientURL string
}

// Start starts etcd and waits until it serves clients, ctx is done, or the
// start timeout passes.
func Start(ctx context.Context, c Config) (*Server, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	c = c.WithDefaults()
	e, err := embed.StartEtcd(c.embedConfig())
	if err != nil {
		return nil, fmt.Errorf("embedded etcd: %w", err)
	}
	timer := time.NewTimer(c.StartTimeout)
	defer timer.Stop()
	select {
	case <-e.Server.ReadyNotify():
		return &Server{etcd: e, clientURL: c.ListenClientURL}, nil
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd: %w", err)
	case <-ctx.Done():
		e.Close()
		return nil, fmt.Errorf("embedded etcd: %w", ctx.Err())
	case <-timer.C:
		e.Close()
		return nil, fmt.Errorf("embedded etcd: not ready after %s", c.StartTimeout)
	}
}

// embedConfig translates a validated, defaulted Config into etcd's own.
func (c Config) embedConfig() *embed.Config {
	client, _ := loopbackURL(c.ListenClientURL)
	peer, _ := loopbackURL(c.ListenPeerURL)
	cfg := embed.NewConfig()
	cfg.Name = "bulwark"
	cfg.Dir = c.DataDir
	cfg.ListenClientUrls = []url.URL{*client}
	cfg.AdvertiseClientUrls = []url.URL{*client}
	cfg.ListenPeerUrls = []url.URL{*peer}
	cfg.AdvertisePeerUrls = []url.URL{*peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.BackendFreelistType = "map"
	cfg.QuotaBackendBytes = c.QuotaBackendBytes
	// The apiserver logs what matters to its users; etcd's info-level
	// chatter would drown it.
	cfg.LogLevel = "warn"
	return cfg
}

// ClientURL is the URL the apiserver uses as its --etcd-servers.
func (s *Server) ClientURL() string { return s.clientURL }

// Err reports a fatal error of the running etcd.
func (s *Server) Err() <-chan error { return s.etcd.Err() }

// Close stops etcd gracefully: in-flight requests finish and the database is
// synced before it returns.
func (s *Server) Close() { s.etcd.Close() }

package framework

import (
	"testing"

	"github.com/bulwark-k8s/bulwark/internal/localcluster"
	"github.com/bulwark-k8s/bulwark/internal/pki"
)

// EtcdOptions configure StartEtcd.
type EtcdOptions struct {
	// TLS, when set, secures etcd with the bundle's etcd certificates.
	TLS *pki.Bundle
}

// StartEtcd starts an etcd process that is stopped when the test ends.
func StartEtcd(t testing.TB, opts EtcdOptions) *localcluster.Etcd {
	t.Helper()
	e, err := localcluster.StartEtcd(localcluster.EtcdConfig{Binary: Bins(t).Etcd, Dir: t.TempDir(), TLS: opts.TLS})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { finish(t, e.Process) })
	return e
}

// StartEtcdCluster starts an etcd cluster of n members that is stopped
// when the test ends.
func StartEtcdCluster(t testing.TB, n int) []*localcluster.Etcd {
	t.Helper()
	members, err := localcluster.StartEtcdCluster(localcluster.EtcdConfig{Binary: Bins(t).Etcd, Dir: t.TempDir()}, n)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range members {
		t.Cleanup(func() { finish(t, m.Process) })
	}
	return members
}

// APIServerOptions configure StartAPIServer; see localcluster.APIServerConfig.
type APIServerOptions struct {
	// Binary defaults to Bulwark's kube-apiserver.
	Binary string
	// Etcd nil means Bulwark's embedded etcd.
	Etcd *localcluster.Etcd
	// PKI defaults to a new bundle in a temporary directory.
	PKI     *pki.Bundle
	Port    int
	Args    []string
	Replace bool
	// Name names the process and its log (several servers in one test).
	Name string
}

// APIServer is a running apiserver of a test.
type APIServer struct {
	*localcluster.APIServer
}

// StartAPIServer starts an apiserver that is stopped when the test ends and
// waits until it is ready.
func StartAPIServer(t testing.TB, opts APIServerOptions) *APIServer {
	t.Helper()
	if opts.Binary == "" {
		opts.Binary = Bins(t).APIServer
	}
	if opts.PKI == nil {
		var err error
		if opts.PKI, err = pki.Ensure(t.TempDir(), nil); err != nil {
			t.Fatal(err)
		}
	}
	s, err := localcluster.StartAPIServer(localcluster.APIServerConfig{
		Binary: opts.Binary, Name: opts.Name, Dir: t.TempDir(), PKI: opts.PKI, Port: opts.Port,
		Etcd: opts.Etcd, Args: opts.Args, Replace: opts.Replace,
	})
	if err != nil {
		t.Fatal(err)
	}
	server := &APIServer{s}
	t.Cleanup(func() { finish(t, server.Process) })
	return server
}

// Restart stops the server gracefully and starts it again with the same
// command line; it fails the test if the server did not exit cleanly.
func (s *APIServer) Restart(t testing.TB) {
	t.Helper()
	if err := s.Stop(); err != nil {
		t.Fatalf("graceful stop: %v", err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
}

// FreePort returns a free loopback port or fails the test.
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := localcluster.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// finish stops p and, if the test failed, shows the end of its log.
func finish(t testing.TB, p *localcluster.Process) {
	p.Stop()
	if t.Failed() {
		t.Logf("--- tail of %s log (%s) ---\n%s", p.Name, p.LogPath, p.LogTail(60))
	}
}

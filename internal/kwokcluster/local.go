package kwokcluster

import (
	"context"
	"errors"
	"os"
	"path/filepath"

	"github.com/bulwark-k8s/bulwark/internal/localcluster"
	"github.com/bulwark-k8s/bulwark/internal/pki"
)

// BinariesIn are the components in dir, as `make cluster-binaries` leaves
// them in _output/bin.
func BinariesIn(dir string) Binaries {
	return Binaries{
		Scheduler:         filepath.Join(dir, "kube-scheduler"),
		ControllerManager: filepath.Join(dir, "kube-controller-manager"),
		Kwok:              filepath.Join(dir, "kwok"),
	}
}

// LocalConfig configures StartLocal.
type LocalConfig struct {
	// BinDir holds etcd and the components (BinariesIn).
	BinDir string
	// APIServer is the kube-apiserver binary; Name names its process and
	// log (default kube-apiserver).
	APIServer, Name string
	// Args are the apiserver's flags besides localcluster.DefaultArgs and
	// AuditArgs.
	Args []string
	// Dir is emptied, then holds data, certificates, kubeconfigs and logs.
	Dir   string
	Nodes int
}

// Local is a whole cluster on this machine: an etcd of its own, an
// apiserver that logs every request's metadata (CountRequests reads
// AuditLog(Dir)), and the components around it.
type Local struct {
	Etcd      *localcluster.Etcd
	APIServer *localcluster.APIServer
	*Cluster
}

// StartLocal starts etcd, the apiserver and the cluster around it.
func StartLocal(ctx context.Context, c LocalConfig) (*Local, error) {
	if err := os.RemoveAll(c.Dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return nil, err
	}
	bundle, err := pki.Ensure(filepath.Join(c.Dir, "pki"), nil)
	if err != nil {
		return nil, err
	}
	audit, err := AuditArgs(c.Dir)
	if err != nil {
		return nil, err
	}
	l := &Local{}
	if l.Etcd, err = localcluster.StartEtcd(localcluster.EtcdConfig{Binary: filepath.Join(c.BinDir, "etcd"), Dir: c.Dir}); err != nil {
		return nil, err
	}
	l.APIServer, err = localcluster.StartAPIServer(localcluster.APIServerConfig{
		Binary: c.APIServer, Name: c.Name, Dir: c.Dir, PKI: bundle, Etcd: l.Etcd, Args: append(audit, c.Args...),
	})
	if err == nil {
		l.Cluster, err = Start(ctx, Config{Binaries: BinariesIn(c.BinDir), Dir: c.Dir, APIServer: l.APIServer, Nodes: c.Nodes})
	}
	if err != nil {
		l.Stop()
		return nil, err
	}
	return l, nil
}

// Stop stops the components, the apiserver and etcd.
func (l *Local) Stop() error {
	var errs []error
	if l.Cluster != nil {
		errs = append(errs, l.Cluster.Stop())
	}
	if l.APIServer != nil {
		errs = append(errs, l.APIServer.Stop())
	}
	return errors.Join(append(errs, l.Etcd.Stop())...)
}

package localcluster

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/bulwark-k8s/bulwark/internal/pki"
)

// ReadyTimeout bounds an apiserver's start: a cold start on a loaded 2-core
// machine (RBAC bootstrap, CRD and APF controllers, watch caches of a large
// data set) takes tens of seconds.
const ReadyTimeout = 3 * time.Minute

// APIServerConfig configure StartAPIServer.
type APIServerConfig struct {
	// Binary is the kube-apiserver executable.
	Binary string
	// Name names the process and its log file in Dir.
	Name string
	Dir  string
	// PKI is the certificate bundle of the server and its admin client.
	PKI *pki.Bundle
	// Port is the secure port; it defaults to a free one.
	Port int
	// Etcd is the etcd to use; nil starts the apiserver without
	// --etcd-servers (Bulwark's embedded etcd).
	Etcd *Etcd
	// Args are appended to DefaultArgs, or replace them when Replace is set
	// (the caller then passes --secure-port=Port itself).
	Args    []string
	Replace bool
}

// APIServer is a running kube-apiserver process with a client for it.
type APIServer struct {
	*Process
	URL    string
	PKI    *pki.Bundle
	Config *rest.Config
	Client kubernetes.Interface

	bin, logPath string
	args         []string
}

// DefaultArgs is a secure, minimal flag set for an apiserver on port.
func DefaultArgs(b *pki.Bundle, port int, etcd *Etcd) []string {
	args := []string{
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		// The lease reconciler refuses a loopback advertise address: it
		// would publish 127.0.0.1 as the kubernetes service's endpoint.
		"--endpoint-reconciler-type=none",
		fmt.Sprintf("--secure-port=%d", port),
		"--authorization-mode=Node,RBAC",
		"--client-ca-file=" + b.CA.Cert,
		"--tls-cert-file=" + b.Serving.Cert,
		"--tls-private-key-file=" + b.Serving.Key,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + b.ServiceAccountPub,
		"--service-account-signing-key-file=" + b.ServiceAccountKey,
		"--service-cluster-ip-range=10.0.0.0/24",
	}
	if etcd != nil {
		args = append(args, "--etcd-servers="+etcd.ClientURL)
	}
	return args
}

// StartAPIServer starts an apiserver and waits until /readyz is ok.
func StartAPIServer(c APIServerConfig) (*APIServer, error) {
	port := c.Port
	if port == 0 {
		var err error
		if port, err = FreePort(); err != nil {
			return nil, err
		}
	}
	args := c.Args
	if !c.Replace {
		args = append(DefaultArgs(c.PKI, port, c.Etcd), c.Args...)
	}
	name := c.Name
	if name == "" {
		name = "kube-apiserver"
	}
	s := &APIServer{
		URL:     fmt.Sprintf("https://127.0.0.1:%d", port),
		PKI:     c.PKI,
		bin:     c.Binary,
		logPath: filepath.Join(c.Dir, name+".log"),
		args:    args,
	}
	s.Config = c.PKI.AdminRESTConfig(s.URL)
	var err error
	if s.Client, err = kubernetes.NewForConfig(s.Config); err != nil {
		return nil, err
	}
	if err := s.Start(); err != nil {
		return nil, err
	}
	return s, nil
}

// Start starts the server process with its command line and waits for
// /readyz; after Stop or Kill it starts the server again.
func (s *APIServer) Start() error { return s.StartWithin(ReadyTimeout) }

// StartWithin starts the server as Start does, waiting for /readyz as long
// as timeout: a restart that thousands of clients wait for takes longer
// than a start.
func (s *APIServer) StartWithin(timeout time.Duration) error {
	p, err := StartProcess(filepath.Base(s.bin), s.logPath, s.bin, s.args...)
	if err != nil {
		return err
	}
	s.Process = p
	if err := waitFor(p, timeout, s.ready); err != nil {
		p.Kill()
		return err
	}
	return nil
}

func (s *APIServer) ready() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	body, err := s.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
	if err != nil {
		return fmt.Errorf("%v: %s", err, body)
	}
	if string(body) != "ok" {
		return fmt.Errorf("/readyz: %s", body)
	}
	return nil
}

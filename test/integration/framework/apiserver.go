package framework

import (
	"context"
	"fmt"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/bulwark-k8s/bulwark/internal/pki"
)

// ReadyTimeout bounds an apiserver's start: a cold start on a loaded 2-core
// machine (RBAC bootstrap, CRD and APF controllers) takes tens of seconds.
const ReadyTimeout = 3 * time.Minute

// APIServerOptions configure StartAPIServer.
type APIServerOptions struct {
	// Binary defaults to Bulwark's kube-apiserver.
	Binary string
	// Etcd is the etcd to use; nil starts the apiserver without
	// --etcd-servers (Bulwark's embedded etcd).
	Etcd *Etcd
	// PKI defaults to a new bundle in a temporary directory.
	PKI *pki.Bundle
	// Port is the secure port; it defaults to a free one.
	Port int
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

	bin  string
	args []string
}

// DefaultArgs is a secure, minimal flag set for an apiserver on port.
func DefaultArgs(b *pki.Bundle, port int, etcd *Etcd) []string {
	args := []string{
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		// The lease reconciler refuses a loopback advertise address: it
		// would publish 127.0.0.1 as the kubernetes service's endpoint.
		"--endpoint-reconciler-type=none",
		"--secure-port=" + itoa(port),
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
func StartAPIServer(t testing.TB, opts APIServerOptions) *APIServer {
	t.Helper()
	bin := opts.Binary
	if bin == "" {
		bin = Bins(t).APIServer
	}
	bundle := opts.PKI
	if bundle == nil {
		var err error
		if bundle, err = pki.Ensure(t.TempDir(), nil); err != nil {
			t.Fatal(err)
		}
	}
	port := opts.Port
	if port == 0 {
		port = FreePort(t)
	}
	args := opts.Args
	if !opts.Replace {
		args = append(DefaultArgs(bundle, port, opts.Etcd), opts.Args...)
	}
	s := &APIServer{URL: fmt.Sprintf("https://127.0.0.1:%d", port), PKI: bundle, bin: bin, args: args}
	s.Config = bundle.AdminRESTConfig(s.URL)
	s.Client = kubernetes.NewForConfigOrDie(s.Config)
	s.start(t)
	return s
}

func (s *APIServer) start(t testing.TB) {
	t.Helper()
	s.Process = StartProcess(t, "kube-apiserver", s.bin, s.args...)
	if err := waitFor(s.Process, ReadyTimeout, s.ready); err != nil {
		t.Fatal(err)
	}
}

// Restart stops the server gracefully and starts it again with the same
// command line; it fails the test if the server did not exit cleanly.
func (s *APIServer) Restart(t testing.TB) {
	t.Helper()
	if err := s.Stop(); err != nil {
		t.Fatalf("graceful stop: %v", err)
	}
	s.start(t)
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

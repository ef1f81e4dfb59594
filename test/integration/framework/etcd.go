package framework

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/transport"

	"github.com/bulwark-k8s/bulwark/internal/pki"
)

// EtcdOptions configure StartEtcd.
type EtcdOptions struct {
	// TLS, when set, makes etcd serve clients over TLS with client-certificate
	// auth, with the bundle's etcd certificates, as a kubeadm cluster does.
	TLS *pki.Bundle
}

// Etcd is a running etcd process.
type Etcd struct {
	*Process
	ClientURL string
	DataDir   string
}

// StartEtcd starts a single-member etcd on free loopback ports and waits
// until it is healthy.
func StartEtcd(t testing.TB, opts EtcdOptions) *Etcd {
	t.Helper()
	scheme := "http"
	if opts.TLS != nil {
		scheme = "https"
	}
	clientURL := fmt.Sprintf("%s://127.0.0.1:%d", scheme, FreePort(t))
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", FreePort(t))
	dataDir := t.TempDir()
	args := []string{
		"--name=test",
		"--data-dir=" + dataDir,
		"--listen-client-urls=" + clientURL,
		"--advertise-client-urls=" + clientURL,
		"--listen-peer-urls=" + peerURL,
		"--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=test=" + peerURL,
		"--log-level=warn",
	}
	if opts.TLS != nil {
		args = append(args,
			"--client-cert-auth",
			"--trusted-ca-file="+opts.TLS.EtcdCA.Cert,
			"--cert-file="+opts.TLS.EtcdServer.Cert,
			"--key-file="+opts.TLS.EtcdServer.Key,
		)
	}
	e := &Etcd{
		Process:   StartProcess(t, "etcd", Bins(t).Etcd, args...),
		ClientURL: clientURL,
		DataDir:   dataDir,
	}
	client := http.DefaultClient
	if opts.TLS != nil {
		rt, err := transport.New(&transport.Config{TLS: transport.TLSConfig{
			CAFile: opts.TLS.EtcdCA.Cert, CertFile: opts.TLS.EtcdClient.Cert, KeyFile: opts.TLS.EtcdClient.Key,
		}})
		if err != nil {
			t.Fatal(err)
		}
		client = &http.Client{Transport: rt}
	}
	if err := waitFor(e.Process, time.Minute, func() error { return etcdHealthy(client, clientURL) }); err != nil {
		t.Fatal(err)
	}
	return e
}

func etcdHealthy(client *http.Client, clientURL string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, clientURL+"/health", nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(body), `"health":"true"`) {
		return fmt.Errorf("etcd /health: %s", body)
	}
	return nil
}

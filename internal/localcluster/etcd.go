package localcluster

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/client-go/transport"

	"github.com/bulwark-k8s/bulwark/internal/pki"
)

// EtcdConfig configure StartEtcd.
type EtcdConfig struct {
	// Binary is the etcd executable.
	Binary string
	// Dir holds the data directory and the log.
	Dir string
	// TLS, when set, makes etcd serve clients over TLS with client-certificate
	// auth, with the bundle's etcd certificates, as a kubeadm cluster does.
	TLS *pki.Bundle
	// ExtraArgs are appended to the command line.
	ExtraArgs []string
}

// Etcd is a running etcd process.
type Etcd struct {
	*Process
	ClientURL string
	DataDir   string
}

// StartEtcd starts a single-member etcd on free loopback ports and waits
// until it is healthy.
func StartEtcd(c EtcdConfig) (*Etcd, error) {
	clientPort, err := FreePort()
	if err != nil {
		return nil, err
	}
	peerPort, err := FreePort()
	if err != nil {
		return nil, err
	}
	scheme := "http"
	if c.TLS != nil {
		scheme = "https"
	}
	clientURL := fmt.Sprintf("%s://127.0.0.1:%d", scheme, clientPort)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", peerPort)
	dataDir := filepath.Join(c.Dir, "etcd-data")
	args := []string{
		"--name=local",
		"--data-dir=" + dataDir,
		"--listen-client-urls=" + clientURL,
		"--advertise-client-urls=" + clientURL,
		"--listen-peer-urls=" + peerURL,
		"--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=local=" + peerURL,
		"--log-level=warn",
	}
	client := http.DefaultClient
	if c.TLS != nil {
		args = append(args,
			"--client-cert-auth",
			"--trusted-ca-file="+c.TLS.EtcdCA.Cert,
			"--cert-file="+c.TLS.EtcdServer.Cert,
			"--key-file="+c.TLS.EtcdServer.Key,
		)
		rt, err := transport.New(&transport.Config{TLS: transport.TLSConfig{
			CAFile: c.TLS.EtcdCA.Cert, CertFile: c.TLS.EtcdClient.Cert, KeyFile: c.TLS.EtcdClient.Key,
		}})
		if err != nil {
			return nil, err
		}
		client = &http.Client{Transport: rt}
	}
	p, err := StartProcess("etcd", filepath.Join(c.Dir, "etcd.log"), c.Binary, append(args, c.ExtraArgs...)...)
	if err != nil {
		return nil, err
	}
	e := &Etcd{Process: p, ClientURL: clientURL, DataDir: dataDir}
	if err := waitFor(p, time.Minute, func() error { return etcdHealthy(client, clientURL) }); err != nil {
		p.Kill()
		return nil, err
	}
	return e, nil
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

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

	bin, logPath string
	args         []string
	client       *http.Client
}

// Start starts a stopped or killed member again with its command line (its
// data directory makes it rejoin its cluster) and waits until it is healthy,
// which for a member of a cluster needs a quorum.
func (e *Etcd) Start() error {
	p, err := StartProcess(e.Process.Name, e.logPath, e.bin, e.args...)
	if err != nil {
		return err
	}
	e.Process = p
	if err := waitFor(p, time.Minute, func() error { return etcdHealthy(e.client, e.ClientURL) }); err != nil {
		p.Kill()
		return err
	}
	return nil
}

// StartEtcd starts a single-member etcd on free loopback ports and waits
// until it is healthy.
func StartEtcd(c EtcdConfig) (*Etcd, error) {
	members, err := StartEtcdCluster(c, 1)
	if err != nil {
		return nil, err
	}
	return members[0], nil
}

// StartEtcdCluster starts an etcd cluster of n members on free loopback
// ports (data and logs in Dir, one per member) and waits until every member
// is healthy.
func StartEtcdCluster(c EtcdConfig, n int) ([]*Etcd, error) {
	scheme := "http"
	if c.TLS != nil {
		scheme = "https"
	}
	type member struct{ name, clientURL, peerURL, dataDir, log string }
	members := make([]member, n)
	var initialCluster []string
	for i := range members {
		clientPort, err := FreePort()
		if err != nil {
			return nil, err
		}
		peerPort, err := FreePort()
		if err != nil {
			return nil, err
		}
		m := member{name: "local", dataDir: filepath.Join(c.Dir, "etcd-data"), log: "etcd.log"}
		if n > 1 {
			m = member{name: fmt.Sprintf("member-%d", i), dataDir: filepath.Join(c.Dir, fmt.Sprintf("etcd-data-%d", i)), log: fmt.Sprintf("etcd-%d.log", i)}
		}
		m.clientURL = fmt.Sprintf("%s://127.0.0.1:%d", scheme, clientPort)
		m.peerURL = fmt.Sprintf("http://127.0.0.1:%d", peerPort)
		members[i] = m
		initialCluster = append(initialCluster, m.name+"="+m.peerURL)
	}
	client := http.DefaultClient
	var tlsArgs []string
	if c.TLS != nil {
		tlsArgs = []string{
			"--client-cert-auth",
			"--trusted-ca-file=" + c.TLS.EtcdCA.Cert,
			"--cert-file=" + c.TLS.EtcdServer.Cert,
			"--key-file=" + c.TLS.EtcdServer.Key,
		}
		rt, err := transport.New(&transport.Config{TLS: transport.TLSConfig{
			CAFile: c.TLS.EtcdCA.Cert, CertFile: c.TLS.EtcdClient.Cert, KeyFile: c.TLS.EtcdClient.Key,
		}})
		if err != nil {
			return nil, err
		}
		client = &http.Client{Transport: rt}
	}
	var started []*Etcd
	stopAll := func() {
		for _, e := range started {
			e.Kill()
		}
	}
	// Every member starts before any is waited for: a cluster needs a quorum.
	for _, m := range members {
		args := []string{
			"--name=" + m.name,
			"--data-dir=" + m.dataDir,
			"--listen-client-urls=" + m.clientURL,
			"--advertise-client-urls=" + m.clientURL,
			"--listen-peer-urls=" + m.peerURL,
			"--initial-advertise-peer-urls=" + m.peerURL,
			"--initial-cluster=" + strings.Join(initialCluster, ","),
			"--log-level=warn",
		}
		args = append(append(args, tlsArgs...), c.ExtraArgs...)
		logPath := filepath.Join(c.Dir, m.log)
		p, err := StartProcess("etcd", logPath, c.Binary, args...)
		if err != nil {
			stopAll()
			return nil, err
		}
		started = append(started, &Etcd{Process: p, ClientURL: m.clientURL, DataDir: m.dataDir, bin: c.Binary, logPath: logPath, args: args, client: client})
	}
	for _, e := range started {
		if err := waitFor(e.Process, time.Minute, func() error { return etcdHealthy(client, e.ClientURL) }); err != nil {
			stopAll()
			return nil, err
		}
	}
	return started, nil
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

package pki

import (
	"bytes"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"

	"k8s.io/client-go/tools/clientcmd"
	certutil "k8s.io/client-go/util/cert"
)

func TestEnsureCreatesVerifiableCertificates(t *testing.T) {
	b, err := Ensure(t.TempDir(), []string{"10.1.2.3", "api.example"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		pair  Pair
		ca    Pair
		usage x509.ExtKeyUsage
		host  string
	}{
		{"serving", b.Serving, b.CA, x509.ExtKeyUsageServerAuth, "127.0.0.1"},
		{"serving extra IP", b.Serving, b.CA, x509.ExtKeyUsageServerAuth, "10.1.2.3"},
		{"serving extra DNS", b.Serving, b.CA, x509.ExtKeyUsageServerAuth, "api.example"},
		{"serving in-cluster name", b.Serving, b.CA, x509.ExtKeyUsageServerAuth, "kubernetes.default.svc"},
		{"admin", b.Admin, b.CA, x509.ExtKeyUsageClientAuth, ""},
		{"kubelet client", b.KubeletClient, b.CA, x509.ExtKeyUsageClientAuth, ""},
		{"front proxy client", b.FrontProxyClient, b.FrontProxyCA, x509.ExtKeyUsageClientAuth, ""},
		{"etcd server", b.EtcdServer, b.EtcdCA, x509.ExtKeyUsageServerAuth, "127.0.0.1"},
		{"etcd client", b.EtcdClient, b.EtcdCA, x509.ExtKeyUsageClientAuth, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			roots, err := certutil.NewPool(tt.ca.Cert)
			if err != nil {
				t.Fatal(err)
			}
			certs, err := certutil.CertsFromFile(tt.pair.Cert)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(tt.pair.Key); err != nil {
				t.Fatal(err)
			}
			opts := x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{tt.usage}, DNSName: tt.host}
			if _, err := certs[0].Verify(opts); err != nil {
				t.Fatal(err)
			}
		})
	}

	admin, err := certutil.CertsFromFile(b.Admin.Cert)
	if err != nil {
		t.Fatal(err)
	}
	if got := admin[0].Subject.Organization; len(got) != 1 || got[0] != "system:masters" {
		t.Errorf("admin organizations = %v, want [system:masters]", got)
	}
}

func TestEnsureKeepsExistingFiles(t *testing.T) {
	dir := t.TempDir()
	first, err := Ensure(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	before := readAll(t, dir)
	if err := os.Remove(first.Admin.Cert); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(first.Admin.Key); err != nil {
		t.Fatal(err)
	}
	second, err := Ensure(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	after := readAll(t, dir)
	for path, data := range before {
		if path == first.Admin.Cert || path == first.Admin.Key {
			continue
		}
		if !bytes.Equal(data, after[path]) {
			t.Errorf("%s changed on the second Ensure", path)
		}
	}
	// The recreated admin certificate is signed by the kept CA.
	roots, _ := certutil.NewPool(second.CA.Cert)
	certs, err := certutil.CertsFromFile(second.Admin.Cert)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("recreated admin certificate: %v", err)
	}
}

func TestWriteAdminKubeconfig(t *testing.T) {
	b, err := Ensure(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "admin.kubeconfig")
	if err := b.WriteAdminKubeconfig(path, "https://127.0.0.1:6443"); err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != "https://127.0.0.1:6443" || len(cfg.CAData) == 0 || len(cfg.CertData) == 0 || len(cfg.KeyData) == 0 {
		t.Errorf("kubeconfig lacks server or embedded credentials: host=%q ca=%d cert=%d key=%d",
			cfg.Host, len(cfg.CAData), len(cfg.CertData), len(cfg.KeyData))
	}
}

func readAll(t *testing.T, dir string) map[string][]byte {
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		files[path] = data
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

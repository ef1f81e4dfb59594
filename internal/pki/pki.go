// Package pki creates the certificates and keys a secure kube-apiserver needs,
// laid out as kubeadm lays out /etc/kubernetes/pki, for `make run` and for the
// integration tests. Existing files are kept, so restarting a local cluster
// keeps its identities and every kubeconfig written for it stays valid.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	certutil "k8s.io/client-go/util/cert"
	"k8s.io/client-go/util/keyutil"
)

const validity = 10 * 365 * 24 * time.Hour

// Pair is a certificate and its private key on disk.
type Pair struct{ Cert, Key string }

// Bundle is every file under Dir, by role.
type Bundle struct {
	Dir string
	// CA signs the serving certificate and the client certificates.
	CA Pair
	// Serving is the apiserver's serving certificate.
	Serving Pair
	// Admin is a client certificate in group system:masters.
	Admin Pair
	// KubeletClient is what the apiserver presents to kubelets.
	KubeletClient Pair
	// FrontProxyCA and FrontProxyClient serve the aggregation layer.
	FrontProxyCA, FrontProxyClient Pair
	// ServiceAccountKey and ServiceAccountPub sign and verify service account tokens.
	ServiceAccountKey, ServiceAccountPub string
	// EtcdCA, EtcdServer and EtcdClient secure an external etcd, as kubeadm does.
	EtcdCA, EtcdServer, EtcdClient Pair
}

// Ensure creates every missing file of the bundle under dir; the serving
// certificate is valid for hosts (IPs or DNS names) besides the in-cluster
// names of the kubernetes service.
func Ensure(dir string, hosts []string) (*Bundle, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	pair := func(name string) Pair {
		return Pair{Cert: filepath.Join(dir, name+".crt"), Key: filepath.Join(dir, name+".key")}
	}
	b := &Bundle{
		Dir:               dir,
		CA:                pair("ca"),
		Serving:           pair("apiserver"),
		Admin:             pair("admin"),
		KubeletClient:     pair("apiserver-kubelet-client"),
		FrontProxyCA:      pair("front-proxy-ca"),
		FrontProxyClient:  pair("front-proxy-client"),
		ServiceAccountKey: filepath.Join(dir, "sa.key"),
		ServiceAccountPub: filepath.Join(dir, "sa.pub"),
		EtcdCA:            pair("etcd/ca"),
		EtcdServer:        pair("etcd/server"),
		EtcdClient:        pair("apiserver-etcd-client"),
	}
	if err := os.MkdirAll(filepath.Join(dir, "etcd"), 0o700); err != nil {
		return nil, err
	}

	ca, err := ensureCA(b.CA, "kubernetes")
	if err != nil {
		return nil, err
	}
	frontProxyCA, err := ensureCA(b.FrontProxyCA, "front-proxy-ca")
	if err != nil {
		return nil, err
	}
	etcdCA, err := ensureCA(b.EtcdCA, "etcd-ca")
	if err != nil {
		return nil, err
	}

	serving := leaf{cn: "kube-apiserver", server: true,
		dns: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		ips: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1"), net.ParseIP("10.0.0.1")}}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			serving.ips = append(serving.ips, ip)
		} else {
			serving.dns = append(serving.dns, h)
		}
	}
	leaves := []struct {
		pair Pair
		ca   *authority
		leaf leaf
	}{
		{b.Serving, ca, serving},
		{b.Admin, ca, leaf{cn: "kubernetes-admin", orgs: []string{"system:masters"}}},
		{b.KubeletClient, ca, leaf{cn: "kube-apiserver-kubelet-client", orgs: []string{"system:masters"}}},
		{b.FrontProxyClient, frontProxyCA, leaf{cn: "front-proxy-client"}},
		{b.EtcdServer, etcdCA, leaf{cn: "etcd-server", server: true, client: true,
			dns: []string{"localhost"}, ips: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}}},
		{b.EtcdClient, etcdCA, leaf{cn: "kube-apiserver-etcd-client"}},
	}
	for _, l := range leaves {
		if err := ensureLeaf(l.pair, l.ca, l.leaf); err != nil {
			return nil, err
		}
	}
	if err := ensureServiceAccountKeys(b.ServiceAccountKey, b.ServiceAccountPub); err != nil {
		return nil, err
	}
	return b, nil
}

type authority struct {
	cert *x509.Certificate
	key  crypto.Signer
}

type leaf struct {
	cn             string
	orgs           []string
	dns            []string
	ips            []net.IP
	server, client bool
}

func exists(paths ...string) (bool, error) {
	for _, p := range paths {
		if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
			return false, nil
		} else if err != nil {
			return false, err
		}
	}
	return true, nil
}

func ensureCA(p Pair, cn string) (*authority, error) {
	if ok, err := exists(p.Cert, p.Key); err != nil {
		return nil, err
	} else if ok {
		return loadCA(p)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	cert, err := certutil.NewSelfSignedCACert(certutil.Config{CommonName: cn}, key)
	if err != nil {
		return nil, err
	}
	if err := write(p, cert, key); err != nil {
		return nil, err
	}
	return &authority{cert: cert, key: key}, nil
}

func loadCA(p Pair) (*authority, error) {
	certs, err := certutil.CertsFromFile(p.Cert)
	if err != nil {
		return nil, err
	}
	key, err := keyutil.PrivateKeyFromFile(p.Key)
	if err != nil {
		return nil, err
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: not a signing key", p.Key)
	}
	return &authority{cert: certs[0], key: signer}, nil
}

func ensureLeaf(p Pair, ca *authority, l leaf) error {
	if ok, err := exists(p.Cert, p.Key); err != nil || ok {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: l.cn, Organization: l.orgs},
		DNSNames:     l.dns,
		IPAddresses:  l.ips,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
	}
	if l.server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if l.client || !l.server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return err
	}
	return write(p, cert, key)
}

func write(p Pair, cert *x509.Certificate, key crypto.PrivateKey) error {
	keyPEM, err := keyutil.MarshalPrivateKeyToPEM(key)
	if err != nil {
		return err
	}
	if err := keyutil.WriteKey(p.Key, keyPEM); err != nil {
		return err
	}
	return certutil.WriteCert(p.Cert, pem.EncodeToMemory(&pem.Block{Type: certutil.CertificateBlockType, Bytes: cert.Raw}))
}

func ensureServiceAccountKeys(keyPath, pubPath string) error {
	if ok, err := exists(keyPath, pubPath); err != nil || ok {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	keyPEM, err := keyutil.MarshalPrivateKeyToPEM(key)
	if err != nil {
		return err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return err
	}
	if err := keyutil.WriteKey(keyPath, keyPEM); err != nil {
		return err
	}
	return os.WriteFile(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644)
}

// EnsureClient returns the client certificate <name>.crt of user cn, in no
// group, signed by the bundle's CA, creating it if it is missing: the
// identities of the other control-plane components (kube-scheduler,
// kube-controller-manager) and of simulated agents, which APF does not
// exempt as it exempts system:masters.
func (b *Bundle) EnsureClient(name, cn string) (Pair, error) {
	ca, err := loadCA(b.CA)
	if err != nil {
		return Pair{}, err
	}
	p := Pair{Cert: filepath.Join(b.Dir, name+".crt"), Key: filepath.Join(b.Dir, name+".key")}
	return p, ensureLeaf(p, ca, leaf{cn: cn})
}

package pki

import (
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// AdminRESTConfig is a client config for server (https://host:port) that
// authenticates with the bundle's admin certificate.
func (b *Bundle) AdminRESTConfig(server string) *rest.Config {
	return &rest.Config{
		Host: server,
		TLSClientConfig: rest.TLSClientConfig{
			CAFile:   b.CA.Cert,
			CertFile: b.Admin.Cert,
			KeyFile:  b.Admin.Key,
		},
	}
}

// WriteAdminKubeconfig writes a kubeconfig for server that authenticates
// with the bundle's admin certificate; certificates are embedded so the file
// works from any directory.
func (b *Bundle) WriteAdminKubeconfig(path, server string) error {
	return b.WriteKubeconfig(path, server, "admin", b.Admin)
}

// WriteKubeconfig writes a kubeconfig for server that authenticates as
// user with the client certificate client, embedded as in
// WriteAdminKubeconfig.
func (b *Bundle) WriteKubeconfig(path, server, user string, client Pair) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["bulwark"] = &clientcmdapi.Cluster{Server: server, CertificateAuthority: b.CA.Cert}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificate: client.Cert, ClientKey: client.Key}
	cfg.Contexts[user+"@bulwark"] = &clientcmdapi.Context{Cluster: "bulwark", AuthInfo: user}
	cfg.CurrentContext = user + "@bulwark"
	if err := clientcmdapi.FlattenConfig(cfg); err != nil {
		return err
	}
	return clientcmd.WriteToFile(*cfg, path)
}

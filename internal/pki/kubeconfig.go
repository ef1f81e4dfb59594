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
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["bulwark"] = &clientcmdapi.Cluster{Server: server, CertificateAuthority: b.CA.Cert}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificate: b.Admin.Cert, ClientKey: b.Admin.Key}
	cfg.Contexts["admin@bulwark"] = &clientcmdapi.Context{Cluster: "bulwark", AuthInfo: "admin"}
	cfg.CurrentContext = "admin@bulwark"
	if err := clientcmdapi.FlattenConfig(cfg); err != nil {
		return err
	}
	return clientcmd.WriteToFile(*cfg, path)
}

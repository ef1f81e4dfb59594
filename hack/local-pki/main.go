// Command local-pki creates (or keeps) the certificates and keys of a local
// Bulwark apiserver and writes an admin kubeconfig for it. `make run` uses it.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/bulwark-k8s/bulwark/internal/pki"
)

func main() {
	dir := flag.String("dir", "_output/local/pki", "directory for certificates and keys")
	kubeconfig := flag.String("kubeconfig", "_output/local/admin.kubeconfig", "admin kubeconfig to write")
	server := flag.String("server", "https://127.0.0.1:6443", "apiserver URL written into the kubeconfig")
	flag.Parse()

	bundle, err := pki.Ensure(*dir, nil)
	if err == nil {
		err = bundle.WriteAdminKubeconfig(*kubeconfig, *server)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "local-pki:", err)
		os.Exit(1)
	}
}

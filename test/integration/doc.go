// Package integration tests the real kube-apiserver binary against a real
// etcd process. Run with `make test-integration`, which builds the binaries.
package integration

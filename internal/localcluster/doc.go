// Package localcluster runs the real processes of a control plane on this
// machine: etcd and kube-apiserver binaries on free loopback ports, with
// clients for them. The integration tests (through test/integration/framework)
// and the benchmark harness (hack/bench) share it, so both start servers the
// same way.
package localcluster

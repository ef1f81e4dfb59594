// Package framework starts the real parts an integration test needs, through
// internal/localcluster: an etcd process, Bulwark's kube-apiserver binary (or
// the upstream baseline) on free loopback ports, and a client-go client for it. Every process and temporary
// directory is removed when the test ends, also when it fails; a failed test
// prints the tail of each process's log.
//
// The binaries come from BULWARK_BIN_DIR, which `make test-integration` sets
// after building them. A test run without it fails rather than skips: an
// integration suite that silently tests nothing is worse than none.
package framework

// Command etcd is etcd's own server main, built from the module graph of the
// apiserver (the version upstream's etcd client is tested with) instead of
// being downloaded: `go build -o _output/bin/etcd ./hack/etcd`.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}

package app

import (
	"github.com/spf13/pflag"

	"github.com/bulwark-k8s/bulwark/pkg/embeddedetcd"
)

// flagSectionName names the --help section that lists Bulwark's own flags,
// apart from upstream's.
const flagSectionName = "bulwark"

// Options are Bulwark's own flags.
type Options struct {
	EmbeddedEtcd embeddedetcd.Config
	// UserAgentLimitsConfig is the path of the User-Agent limiter's rules.
	UserAgentLimitsConfig string
	// CacheNotReadyGate answers LIST/WATCH with 429 while a watch cache fills.
	CacheNotReadyGate bool
}

// NewOptions returns the defaults.
func NewOptions() *Options {
	return &Options{
		EmbeddedEtcd:      embeddedetcd.Config{DataDir: "bulwark.etcd"}.WithDefaults(),
		CacheNotReadyGate: true,
	}
}

// AddFlags registers the flags on fs.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	e := &o.EmbeddedEtcd
	fs.StringVar(&e.DataDir, "embedded-etcd-data-dir", e.DataDir,
		"Data directory of the etcd started in-process when --etcd-servers is not set. Data survives restarts.")
	fs.StringVar(&e.ListenClientURL, "embedded-etcd-listen-client-url", e.ListenClientURL,
		"Loopback URL on which the embedded etcd serves the apiserver (and etcdctl).")
	fs.StringVar(&e.ListenPeerURL, "embedded-etcd-listen-peer-url", e.ListenPeerURL,
		"Loopback peer URL of the embedded etcd; etcd needs one even as a single member.")
	fs.Int64Var(&e.QuotaBackendBytes, "embedded-etcd-quota-backend-bytes", e.QuotaBackendBytes,
		"Database size at which the embedded etcd raises its NOSPACE alarm. The default suits about a million objects.")
	fs.StringVar(&o.UserAgentLimitsConfig, "user-agent-limits-config", o.UserAgentLimitsConfig,
		"File with User-Agent rate-limit rules (kind UserAgentLimits), applied before authentication. "+
			"Changes take effect within 2s without restart; an invalid file is rejected and the rules in force stay. Empty: no limits.")
	fs.BoolVar(&o.CacheNotReadyGate, "cache-not-ready-gate", o.CacheNotReadyGate,
		"Answer LIST and WATCH requests with 429 and Retry-After while the watch cache of their resource is filling, "+
			"instead of serving them from etcd, so that a restart does not become an etcd stampede.")
	fs.DurationVar(&e.StartTimeout, "embedded-etcd-start-timeout", e.StartTimeout,
		"How long to wait for the embedded etcd to serve before giving up.")
}

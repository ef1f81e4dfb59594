// Package app builds Bulwark's kube-apiserver command: upstream's command and
// server, configured with upstream's own functions, with Bulwark's flags in a
// section of their own and its additions hooked in where upstream exposes them.
//
// NewAPIServerCommand and Run are copies of upstream's, which offer no hook
// for either: upstream_test.go fails when upstream's change, so that an
// upgrade carries the change over. Upstream's package init (the logging
// feature gates) runs, as this package imports upstream's.
package app

import (
	"context"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/apiserver/pkg/server/flagz"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	cliflag "k8s.io/component-base/cli/flag"
	"k8s.io/component-base/cli/globalflag"
	basecompatibility "k8s.io/component-base/compatibility"
	"k8s.io/component-base/featuregate"
	"k8s.io/component-base/logs"
	logsapi "k8s.io/component-base/logs/api/v1"
	_ "k8s.io/component-base/metrics/prometheus/workqueue" // workqueue metrics, as upstream
	"k8s.io/component-base/term"
	utilversion "k8s.io/component-base/version"
	"k8s.io/component-base/version/verflag"
	"k8s.io/klog/v2"
	upstream "k8s.io/kubernetes/cmd/kube-apiserver/app"
	"k8s.io/kubernetes/cmd/kube-apiserver/app/options"

	"github.com/bulwark-k8s/bulwark/pkg/embeddedetcd"
)

// NewAPIServerCommand is upstream's kube-apiserver command with Bulwark's
// flags added in their own section and an in-process etcd when no
// --etcd-servers is given.
func NewAPIServerCommand() *cobra.Command {
	s := options.NewServerRunOptions()
	bulwark := NewOptions()
	ctx := genericapiserver.SetupSignalContext()
	featureGate := s.GenericServerRunOptions.ComponentGlobalsRegistry.FeatureGateFor(basecompatibility.DefaultKubeComponent)

	cmd := &cobra.Command{
		Use: "kube-apiserver",
		Long: `The Kubernetes API server validates and configures data
for the api objects which include pods, services, replicationcontrollers, and
others. The API Server services REST operations and provides the frontend to the
cluster's shared state through which all other components interact.

This is Bulwark's build of it: every upstream flag and API, plus the flags in
the "bulwark" section below.`,

		SilenceUsage: true,
		PersistentPreRunE: func(*cobra.Command, []string) error {
			if err := s.GenericServerRunOptions.ComponentGlobalsRegistry.Set(); err != nil {
				return err
			}
			// kube-apiserver loopback clients should not log self-issued warnings.
			rest.SetDefaultWarningHandler(rest.NoWarnings{})
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			verflag.PrintAndExitIfRequested()
			if err := logsapi.ValidateAndApply(s.Logs, featureGate); err != nil {
				return err
			}
			cliflag.PrintFlags(cmd.Flags())
			// Before the embedded etcd starts: a refused flag leaves nothing behind.
			if errs := bulwark.Validate(); len(errs) != 0 {
				return utilerrors.NewAggregate(errs)
			}

			runCtx := ctx
			if len(s.Etcd.StorageConfig.Transport.ServerList) == 0 {
				etcd, err := embeddedetcd.Start(ctx, bulwark.EmbeddedEtcd)
				if err != nil {
					return err
				}
				defer etcd.Close()
				klog.InfoS("No --etcd-servers given: started embedded etcd", "url", etcd.ClientURL(), "dataDir", bulwark.EmbeddedEtcd.DataDir)
				s.Etcd.StorageConfig.Transport.ServerList = []string{etcd.ClientURL()}
				runCtx = stopOnError(ctx, etcd.Err())
			}

			completedOptions, err := s.Complete(runCtx)
			if err != nil {
				return err
			}
			if errs := completedOptions.Validate(); len(errs) != 0 {
				return utilerrors.NewAggregate(errs)
			}
			featureGate.(featuregate.MutableFeatureGate).AddMetrics()
			s.GenericServerRunOptions.ComponentGlobalsRegistry.AddMetrics()
			if err := Run(runCtx, completedOptions, bulwark); err != nil {
				return err
			}
			// A server stopped by its embedded etcd failing must not exit 0.
			if cause := context.Cause(runCtx); cause != nil && cause != context.Canceled {
				return cause
			}
			return nil
		},
		Args: func(cmd *cobra.Command, args []string) error {
			for _, arg := range args {
				if len(arg) > 0 {
					return fmt.Errorf("%q does not take any arguments, got %q", cmd.CommandPath(), args)
				}
			}
			return nil
		},
	}
	cmd.SetContext(ctx)

	fs := cmd.Flags()
	namedFlagSets := s.Flags()
	bulwark.AddFlags(namedFlagSets.FlagSet(flagSectionName))
	s.Flagz = flagz.NamedFlagSetsReader{FlagSets: namedFlagSets}
	verflag.AddFlags(namedFlagSets.FlagSet("global"))
	globalflag.AddGlobalFlags(namedFlagSets.FlagSet("global"), cmd.Name(), logs.SkipLoggingConfigurationFlags())
	for _, f := range namedFlagSets.FlagSets {
		fs.AddFlagSet(f)
	}

	cols, _, _ := term.TerminalSize(cmd.OutOrStdout())
	cliflag.SetUsageAndHelpFunc(cmd, namedFlagSets, cols)

	return cmd
}

// stopOnError returns a context that is cancelled with the first error
// received from errc, so a dead embedded etcd stops the server instead of
// leaving it unready forever.
func stopOnError(ctx context.Context, errc <-chan error) context.Context {
	ctx, cancel := context.WithCancelCause(ctx)
	go func() {
		select {
		case err, ok := <-errc:
			if ok && err != nil {
				klog.ErrorS(err, "Embedded etcd failed; stopping")
				cancel(fmt.Errorf("embedded etcd: %w", err))
			}
		case <-ctx.Done():
		}
	}()
	return ctx
}

// Run runs the apiserver until ctx is done. It is upstream's Run with
// Bulwark's additions put in at the points upstream exposes: the config
// built by upstream's NewConfig is adjusted before it is completed, and
// debug endpoints are added to the server chain before it runs.
func Run(ctx context.Context, opts options.CompletedOptions, bulwark *Options) error {
	klog.Infof("Version: %+v", utilversion.Get())
	klog.InfoS("Golang settings", "GOGC", os.Getenv("GOGC"), "GOMAXPROCS", os.Getenv("GOMAXPROCS"), "GOTRACEBACK", os.Getenv("GOTRACEBACK"))

	if opts.InformerName == nil {
		informerName, err := cache.NewInformerName("kube-apiserver")
		if err != nil {
			return err
		}
		opts.InformerName = informerName
	}

	bulwarkParts, err := newAdditions(ctx, bulwark)
	if err != nil {
		return err
	}
	config, err := upstream.NewConfig(opts)
	if err != nil {
		return err
	}
	bulwarkParts.customizeConfig(ctx, config)
	completed, err := config.Complete()
	if err != nil {
		return err
	}
	server, err := upstream.CreateServerChain(completed)
	if err != nil {
		return err
	}
	bulwarkParts.installDebugHandlers(server.GenericAPIServer.Handler.NonGoRestfulMux)
	// Graceful termination: the watch caches destroyed after this send
	// their watchers a last bookmark first.
	server.GenericAPIServer.AddPreShutdownHookOrDie("bulwark-last-bookmarks", func() error {
		bulwarkParts.bookmarks.Terminating()
		return nil
	})
	prepared, err := server.PrepareRun()
	if err != nil {
		return err
	}
	return prepared.Run(ctx)
}

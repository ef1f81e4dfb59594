// Command bulwarkctl installs Bulwark into a kubeadm control plane: it swaps
// Bulwark's image into the kube-apiserver static-pod manifest kubeadm wrote,
// adds Bulwark's flags and the mounts of its config files, keeps everything
// else (every flag, probe, mount, resource and annotation kubeadm set), and
// rolls the swap back from the backup it keeps.
//
//	bulwarkctl swap --image bulwark/kube-apiserver:v1.37.2-bulwark.1 \
//	    --arg watch-bookmark-interval=10s \
//	    --user-agent-limits-config /etc/bulwark/user-agent-limits.yaml
//	bulwarkctl rollback
//
// The kubelet restarts the static pod when the manifest changes. kubeadm
// upgrade writes upstream's manifest again: swap again after it.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
)

const usage = `usage:
  bulwarkctl swap --image IMAGE [--manifest PATH] [--backup-dir DIR] [--arg NAME=VALUE]... [--user-agent-limits-config PATH]
  bulwarkctl rollback [--manifest PATH] [--backup-dir DIR]
`

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "bulwarkctl:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	manifest := fs.String("manifest", DefaultManifest, "the kube-apiserver static-pod manifest")
	backupDir := fs.String("backup-dir", "", "where the original manifest is kept (default: bulwark-backup beside the manifests directory, where the kubelet does not read it)")
	switch args[0] {
	case "swap":
		var s Swap
		fs.StringVar(&s.Image, "image", "", "Bulwark's kube-apiserver image")
		fs.Var((*argList)(&s.Args), "arg", "a Bulwark flag for kube-apiserver, NAME=VALUE without the dashes (repeatable); it replaces a flag of that name")
		fs.StringVar(&s.UserAgentLimitsConfig, "user-agent-limits-config", "", "host path of the User-Agent limits file: passed to kube-apiserver and its directory mounted read-only")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		s.Manifest, s.BackupDir = *manifest, *backupDir
		backup, err := s.Run()
		if err != nil {
			return err
		}
		fmt.Printf("swapped %s to %s; the original is in %s (bulwarkctl rollback restores it)\n", s.Manifest, s.Image, backup)
		return nil
	case "rollback":
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		backup, err := Rollback(*manifest, *backupDir)
		if err != nil {
			return err
		}
		fmt.Printf("restored %s from %s\n", *manifest, backup)
		return nil
	default:
		return fmt.Errorf("unknown command %q\n%s", args[0], usage)
	}
}

// argList collects repeated NAME=VALUE flags.
type argList []Arg

func (l *argList) String() string { return fmt.Sprint(*l) }

func (l *argList) Set(v string) error {
	name, value, ok := strings.Cut(strings.TrimLeft(v, "-"), "=")
	if !ok || name == "" {
		return fmt.Errorf("%q: want NAME=VALUE", v)
	}
	*l = append(*l, Arg{Name: name, Value: value})
	return nil
}

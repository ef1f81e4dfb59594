package integration

import (
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/bulwark-k8s/bulwark/test/integration/framework"
)

func run(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", bin, strings.Join(args, " "), err, out)
	}
	return string(out)
}

var flagName = regexp.MustCompile(`(?m)^\s+(?:-\w, )?(--[a-z0-9][a-z0-9-]*)`)

func flagNames(help string) map[string]bool {
	names := map[string]bool{}
	for _, m := range flagName.FindAllStringSubmatch(help, -1) {
		names[m[1]] = true
	}
	return names
}

// TestHelpKeepsEveryUpstreamFlag compares the two binaries' --help: every
// upstream flag is accepted, and ours are listed in a section of their own.
func TestHelpKeepsEveryUpstreamFlag(t *testing.T) {
	bins := framework.Bins(t)
	upstreamHelp := run(t, bins.Upstream, "--help")
	ourHelp := run(t, bins.APIServer, "--help")

	upstreamFlags, ourFlags := flagNames(upstreamHelp), flagNames(ourHelp)
	if len(upstreamFlags) < 100 {
		t.Fatalf("parsed only %d flags from upstream --help; the parser is broken", len(upstreamFlags))
	}
	for f := range upstreamFlags {
		if !ourFlags[f] {
			t.Errorf("upstream flag %s is missing from our --help", f)
		}
	}

	_, section, found := strings.Cut(ourHelp, "\nBulwark flags:\n")
	if !found {
		t.Fatalf("no \"Bulwark flags:\" section in --help:\n%s", ourHelp)
	}
	section, _, _ = strings.Cut(section, " flags:\n")
	for f := range ourFlags {
		if !upstreamFlags[f] && !strings.Contains(section, f+" ") {
			t.Errorf("our flag %s is not in the Bulwark section", f)
		}
	}
	if !strings.Contains(section, "--embedded-etcd-data-dir") {
		t.Errorf("Bulwark section lacks --embedded-etcd-data-dir:\n%s", section)
	}
}

// TestVersionCarriesUpstreamVersion checks that version checks of kubectl
// and kubeadm see the upstream release: ours is upstream's plus a suffix.
func TestVersionCarriesUpstreamVersion(t *testing.T) {
	bins := framework.Bins(t)
	upstream := strings.TrimSpace(run(t, bins.Upstream, "--version"))
	ours := strings.TrimSpace(run(t, bins.APIServer, "--version"))
	if !regexp.MustCompile(`^Kubernetes v1\.\d+\.\d+$`).MatchString(upstream) {
		t.Fatalf("upstream --version = %q, want a release version", upstream)
	}
	if !regexp.MustCompile("^" + regexp.QuoteMeta(upstream) + `-bulwark\.\d+$`).MatchString(ours) {
		t.Errorf("our --version = %q, want %q followed by -bulwark.<n>", ours, upstream)
	}
}

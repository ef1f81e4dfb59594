package integration

import (
	"sort"
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/discovery"

	"github.com/bulwark-k8s/bulwark/test/integration/framework"
)

// resourceKey is what a client learns of a resource from discovery.
type resourceKey struct {
	GroupVersion, Name, Kind, SingularName string
	Namespaced                             bool
	Verbs, ShortNames, Categories          []string
}

func discoveredResources(t *testing.T, s *framework.APIServer) ([]string, []resourceKey) {
	t.Helper()
	client := discovery.NewDiscoveryClientForConfigOrDie(s.Config)
	groups, lists, err := client.ServerGroupsAndResources()
	if err != nil {
		t.Fatal(err)
	}
	var versions []string
	for _, g := range groups {
		for _, v := range g.Versions {
			versions = append(versions, v.GroupVersion)
		}
		versions = append(versions, "preferred:"+g.PreferredVersion.GroupVersion)
	}
	sort.Strings(versions)
	var resources []resourceKey
	for _, l := range lists {
		for _, r := range l.APIResources {
			resources = append(resources, key(l, r))
		}
	}
	sort.Slice(resources, func(i, j int) bool {
		a, b := resources[i], resources[j]
		if a.GroupVersion != b.GroupVersion {
			return a.GroupVersion < b.GroupVersion
		}
		return a.Name < b.Name
	})
	return versions, resources
}

func key(l *metav1.APIResourceList, r metav1.APIResource) resourceKey {
	sorted := func(s []string) []string {
		s = append([]string(nil), s...)
		sort.Strings(s)
		return s
	}
	return resourceKey{
		GroupVersion: l.GroupVersion, Name: r.Name, Kind: r.Kind, SingularName: r.SingularName,
		Namespaced: r.Namespaced, Verbs: sorted(r.Verbs), ShortNames: sorted(r.ShortNames), Categories: sorted(r.Categories),
	}
}

// TestAPIParity starts our binary and upstream's on the same etcd and
// compares what their discovery serves: every group, version and resource,
// with verbs, kinds and scope.
func TestAPIParity(t *testing.T) {
	bins := framework.Bins(t)
	etcd := framework.StartEtcd(t, framework.EtcdOptions{})
	upstream := framework.StartAPIServer(t, framework.APIServerOptions{Binary: bins.Upstream, Etcd: etcd})
	ours := framework.StartAPIServer(t, framework.APIServerOptions{Etcd: etcd, PKI: upstream.PKI})

	upstreamVersions, upstreamResources := discoveredResources(t, upstream)
	ourVersions, ourResources := discoveredResources(t, ours)
	if len(upstreamResources) < 50 {
		t.Fatalf("upstream discovery lists only %d resources; discovery did not work", len(upstreamResources))
	}
	if diff := cmp.Diff(upstreamVersions, ourVersions); diff != "" {
		t.Errorf("group versions differ (-upstream +ours):\n%s", diff)
	}
	if diff := cmp.Diff(upstreamResources, ourResources); diff != "" {
		t.Errorf("resources differ (-upstream +ours):\n%s", diff)
	}
}

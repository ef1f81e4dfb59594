// Package heartbeat recognises the requests that keep a cluster alive —
// node Lease renewals, node status updates and leader-election Lease
// renewals — from the request line alone, before authentication, so that
// Bulwark's pre-authentication limiters never shed them. Shedding them
// makes nodes NotReady and starts an eviction cascade; each is tiny.
//
// The classification trusts the path, which any client can send; a request
// that poses as a heartbeat only skips Bulwark's limiters. Authentication,
// authorization (the Node authorizer restricts a kubelet to its own Lease
// and Node) and upstream's API Priority and Fairness still apply to it.
package heartbeat

import (
	"context"
	"net/url"
	"strings"
)

// Kind is the kind of heartbeat a request is.
type Kind int

const (
	// None is any request that is not a heartbeat.
	None Kind = iota
	// NodeLease is a kubelet reading or renewing its Lease in kube-node-lease.
	NodeLease
	// NodeStatus is a kubelet reading its Node or updating its status.
	NodeStatus
	// LeaderElection is a controller's leader-election Lease in kube-system.
	LeaderElection
)

// String is the value of the "kind" label of heartbeat metrics.
func (k Kind) String() string {
	switch k {
	case NodeLease:
		return "node_lease"
	case NodeStatus:
		return "node_status"
	case LeaderElection:
		return "leader_election"
	default:
		return "none"
	}
}

// Classify tells what kind of heartbeat a request with this method, URL
// path and raw query is. Only single-object reads and writes qualify: a LIST
// or WATCH of Leases or Nodes is not a heartbeat, and neither is a path that
// is not in canonical form.
func Classify(method, path, rawQuery string) Kind {
	if strings.Contains(path, "//") || strings.Contains(path, "/.") || isWatch(rawQuery) {
		return None
	}
	parts := strings.Split(strings.TrimPrefix(path, "/"), "/")
	switch {
	// /apis/coordination.k8s.io/<version>/namespaces/<ns>/leases/<name>
	case len(parts) == 7 && parts[0] == "apis" && parts[1] == "coordination.k8s.io" && parts[3] == "namespaces" && parts[5] == "leases" && parts[6] != "":
		if !leaseVersion(parts[2]) || (method != "GET" && method != "PUT" && method != "PATCH") {
			return None
		}
		switch parts[4] {
		case "kube-node-lease":
			return NodeLease
		case "kube-system":
			return LeaderElection
		}
	// /apis/coordination.k8s.io/<version>/namespaces/<ns>/leases: creating a Lease
	case len(parts) == 6 && parts[0] == "apis" && parts[1] == "coordination.k8s.io" && parts[3] == "namespaces" && parts[5] == "leases" && method == "POST":
		if !leaseVersion(parts[2]) {
			return None
		}
		switch parts[4] {
		case "kube-node-lease":
			return NodeLease
		case "kube-system":
			return LeaderElection
		}
	// /api/v1/nodes/<name>/status: the kubelet's status update
	case len(parts) == 5 && parts[0] == "api" && parts[1] == "v1" && parts[2] == "nodes" && parts[3] != "" && parts[4] == "status":
		if method == "PUT" || method == "PATCH" || method == "GET" {
			return NodeStatus
		}
	// /api/v1/nodes/<name>: the kubelet reads its Node before updating its status
	case len(parts) == 4 && parts[0] == "api" && parts[1] == "v1" && parts[2] == "nodes" && parts[3] != "":
		if method == "GET" {
			return NodeStatus
		}
	}
	return None
}

func leaseVersion(v string) bool { return v == "v1" || v == "v1beta1" }

// isWatch reports a watch by query (?watch=true), which the apiserver still
// serves on a single object's path.
func isWatch(rawQuery string) bool {
	if rawQuery == "" {
		return false
	}
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return true // the apiserver rejects it; no reason to exempt it
	}
	w := q.Get("watch")
	return w != "" && w != "0" && w != "false"
}

type kindKey struct{}

// WithKind returns ctx carrying the kind of heartbeat its request is, so that
// a request is classified once, by the first filter that sees it.
func WithKind(ctx context.Context, kind Kind) context.Context {
	return context.WithValue(ctx, kindKey{}, kind)
}

// KindFrom returns the kind WithKind put in ctx; None when it put none.
func KindFrom(ctx context.Context) Kind {
	kind, _ := ctx.Value(kindKey{}).(Kind)
	return kind
}

package filters

import (
	"net/http"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/endpoints/request"
)

// otherLabel stands for any value of a label that a client chose and the
// server does not know.
const otherLabel = "other"

// ServedResources tells whether the apiserver has storage for a resource.
type ServedResources interface {
	Serves(gr schema.GroupResource) bool
}

// resourceVerbs are the verbs RequestInfo gives resource requests.
var resourceVerbs = map[string]bool{
	"get": true, "list": true, "watch": true, "create": true, "update": true, "patch": true,
	"delete": true, "deletecollection": true, "proxy": true,
}

// nonResourceMethods are the HTTP methods a label names for requests that
// are not for a resource.
var nonResourceMethods = map[string]bool{
	http.MethodGet: true, http.MethodHead: true, http.MethodPost: true, http.MethodPut: true,
	http.MethodPatch: true, http.MethodDelete: true, http.MethodOptions: true,
}

// boundedLabels returns the verb and resource labels of a request, bounded
// to values the server knows: a resource request's verb and its resource,
// if the server serves it; else the HTTP method and no resource; anything
// else is "other".
func boundedLabels(r *http.Request, info *request.RequestInfo, resources ServedResources) (verb, resource string) {
	if !info.IsResourceRequest {
		if !nonResourceMethods[r.Method] {
			return otherLabel, ""
		}
		return r.Method, ""
	}
	verb, resource = info.Verb, info.Resource
	if !resourceVerbs[verb] {
		verb = otherLabel
	}
	if resources == nil || !resources.Serves(schema.GroupResource{Group: info.APIGroup, Resource: resource}) {
		resource = otherLabel
	}
	return verb, resource
}

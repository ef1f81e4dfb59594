package seed

import (
	"fmt"
	"iter"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// The custom resource of Data.Widgets.
const (
	WidgetGroup    = "bench.bulwark.io"
	WidgetResource = "widgets"
)

// endpointsPerSlice is the EndpointSlice controller's default
// (--max-endpoints-per-slice).
const endpointsPerSlice = 100

// workloadObjects are, for each app in each namespace, its Deployment,
// the Deployment's current ReplicaSet (which owns the pods) and an older
// one scaled to zero, its Service (with its cluster IP's IPAddress) and
// the Service's EndpointSlices.
func (d Data) workloadObjects(now metav1.Time) iter.Seq[Object] {
	return func(yield func(Object) bool) {
		for ns := range d.Namespaces {
			for a := range d.Apps {
				namespace, app := NamespaceName(ns), AppName(a)
				dep := d.Deployment(ns, a, now)
				objects := []Object{
					{"/registry/deployments/" + namespace + "/" + app, dep},
					{"/registry/replicasets/" + namespace + "/" + replicaSetName(a), ReplicaSet(dep, replicaSetName(a), *dep.Spec.Replicas, now)},
					{"/registry/replicasets/" + namespace + "/" + app + "-old", ReplicaSet(dep, app+"-old", 0, now)},
					{"/registry/services/specs/" + namespace + "/" + app, d.Service(ns, a, now)},
					{"/registry/ipaddresses/" + d.serviceIP(ns, a), d.IPAddress(ns, a, now)},
				}
				for _, s := range d.EndpointSlices(ns, a, now) {
					objects = append(objects, Object{"/registry/endpointslices/" + namespace + "/" + s.Name, s})
				}
				for _, o := range objects {
					if !yield(o) {
						return
					}
				}
			}
		}
	}
}

// podsOf are the indexes of the pods of app a in namespace ns.
func (d Data) podsOf(ns, a int) []int {
	var pods []int
	for k := ns; a+d.Apps*k < d.Pods; k += d.Namespaces {
		pods = append(pods, a+d.Apps*k)
	}
	return pods
}

func podTemplateHash(app string) string { return fmt.Sprintf("%08x", hash(app)) }

func replicaSetName(a int) string { return AppName(a) + "-" + podTemplateHash(AppName(a)) }

func podIP(i int) string {
	return fmt.Sprintf("10.%d.%d.%d", 64+(i/65536)%64, (i/256)%256, i%256)
}

func (d Data) hostIP(i int) string {
	n := i % d.Nodes
	return fmt.Sprintf("192.0.%d.%d", n/256, n%256)
}

// controllerRef is the owner reference a controller sets on what it creates.
func controllerRef(apiVersion, kind string, owner metav1.ObjectMeta) []metav1.OwnerReference {
	return []metav1.OwnerReference{{APIVersion: apiVersion, Kind: kind, Name: owner.Name, UID: owner.UID, Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}}
}

// Deployment is app a's Deployment in namespace ns, available.
func (d Data) Deployment(ns, a int, now metav1.Time) *appsv1.Deployment {
	app := AppName(a)
	replicas := int32(len(d.podsOf(ns, a)))
	dep := &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: objectMeta(app, NamespaceName(ns), now),
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}},
			Template: podTemplate(app),
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType, RollingUpdate: &appsv1.RollingUpdateDeployment{
				MaxUnavailable: ptr.To(intstr.FromString("25%")), MaxSurge: ptr.To(intstr.FromString("25%")),
			}},
			RevisionHistoryLimit:    ptr.To[int32](10),
			ProgressDeadlineSeconds: ptr.To[int32](600),
		},
		Status: appsv1.DeploymentStatus{
			ObservedGeneration: 2, Replicas: replicas, UpdatedReplicas: replicas, ReadyReplicas: replicas, AvailableReplicas: replicas,
			Conditions: []appsv1.DeploymentCondition{
				{Type: appsv1.DeploymentAvailable, Status: corev1.ConditionTrue, Reason: "MinimumReplicasAvailable", Message: "Deployment has minimum availability.", LastUpdateTime: now, LastTransitionTime: now},
				{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionTrue, Reason: "NewReplicaSetAvailable", Message: fmt.Sprintf("ReplicaSet %q has successfully progressed.", replicaSetName(a)), LastUpdateTime: now, LastTransitionTime: now},
			},
		},
	}
	dep.Generation = 2
	dep.Labels = map[string]string{"app": app}
	dep.Annotations = map[string]string{"deployment.kubernetes.io/revision": "2"}
	return dep
}

// ReplicaSet is one of dep's ReplicaSets, of the given size.
func ReplicaSet(dep *appsv1.Deployment, name string, replicas int32, now metav1.Time) *appsv1.ReplicaSet {
	app := dep.Name
	hash := podTemplateHash(app)
	revision := "2"
	if replicas == 0 {
		hash, revision = "old", "1"
	}
	template := podTemplate(app)
	template.Labels["pod-template-hash"] = hash
	rs := &appsv1.ReplicaSet{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "ReplicaSet"},
		ObjectMeta: objectMeta(name, dep.Namespace, now),
		Spec: appsv1.ReplicaSetSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": app, "pod-template-hash": hash}},
			Template: template,
		},
		Status: appsv1.ReplicaSetStatus{Replicas: replicas, FullyLabeledReplicas: replicas, ReadyReplicas: replicas, AvailableReplicas: replicas, ObservedGeneration: 1},
	}
	rs.Generation = 1
	rs.Labels = map[string]string{"app": app, "pod-template-hash": hash}
	rs.Annotations = map[string]string{
		"deployment.kubernetes.io/desired-replicas": fmt.Sprint(*dep.Spec.Replicas),
		"deployment.kubernetes.io/max-replicas":     fmt.Sprint(*dep.Spec.Replicas + (*dep.Spec.Replicas+3)/4),
		"deployment.kubernetes.io/revision":         revision,
	}
	rs.OwnerReferences = controllerRef("apps/v1", "Deployment", dep.ObjectMeta)
	return rs
}

// ServiceCIDR holds the Services' cluster IPs (kubeadm's default); a
// server given the Services of Data.Workloads needs it as its
// --service-cluster-ip-range. Its first address is the kubernetes
// Service's, its first 256 are left to the server.
const ServiceCIDR = "10.96.0.0/12"

// serviceIP is the cluster IP of app a's Service in namespace ns.
func (d Data) serviceIP(ns, a int) string {
	n := 256 + ns*d.Apps + a
	return fmt.Sprintf("10.%d.%d.%d", 96+n/65536, (n/256)%256, n%256)
}

// Service is app a's ClusterIP Service in namespace ns.
func (d Data) Service(ns, a int, now metav1.Time) *corev1.Service {
	app := AppName(a)
	ip := d.serviceIP(ns, a)
	s := &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: objectMeta(app, NamespaceName(ns), now),
		Spec: corev1.ServiceSpec{
			Type:                  corev1.ServiceTypeClusterIP,
			Selector:              map[string]string{"app": app},
			Ports:                 []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080)}},
			ClusterIP:             ip,
			ClusterIPs:            []string{ip},
			IPFamilies:            []corev1.IPFamily{corev1.IPv4Protocol},
			IPFamilyPolicy:        ptr.To(corev1.IPFamilyPolicySingleStack),
			SessionAffinity:       corev1.ServiceAffinityNone,
			InternalTrafficPolicy: ptr.To(corev1.ServiceInternalTrafficPolicyCluster),
		},
	}
	s.Labels = map[string]string{"app": app}
	return s
}

// IPAddress is the allocation of app a's Service's cluster IP, as the
// apiserver's allocator stores it.
func (d Data) IPAddress(ns, a int, now metav1.Time) *networkingv1.IPAddress {
	ip := &networkingv1.IPAddress{
		TypeMeta:   metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "IPAddress"},
		ObjectMeta: objectMeta(d.serviceIP(ns, a), "", now),
		Spec:       networkingv1.IPAddressSpec{ParentRef: &networkingv1.ParentReference{Resource: "services", Namespace: NamespaceName(ns), Name: AppName(a)}},
	}
	ip.Labels = map[string]string{networkingv1.LabelIPAddressFamily: string(corev1.IPv4Protocol), networkingv1.LabelManagedBy: "ipallocator.k8s.io"}
	return ip
}

// EndpointSlices are the EndpointSlices of app a's Service in namespace
// ns: its pods, ready, at most endpointsPerSlice each.
func (d Data) EndpointSlices(ns, a int, now metav1.Time) []*discoveryv1.EndpointSlice {
	app, namespace := AppName(a), NamespaceName(ns)
	svc := objectMeta(app, namespace, now)
	pods := d.podsOf(ns, a)
	var slices []*discoveryv1.EndpointSlice
	for first := 0; first == 0 || first < len(pods); first += endpointsPerSlice {
		name := fmt.Sprintf("%s-%05x", app, hash(fmt.Sprintf("%s/%s/%d", namespace, app, first))&0xfffff)
		s := &discoveryv1.EndpointSlice{
			TypeMeta:    metav1.TypeMeta{APIVersion: "discovery.k8s.io/v1", Kind: "EndpointSlice"},
			ObjectMeta:  objectMeta(name, namespace, now),
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To[int32](8080)}},
		}
		s.GenerateName = app + "-"
		s.Labels = map[string]string{
			"app":                        app,
			discoveryv1.LabelServiceName: app,
			discoveryv1.LabelManagedBy:   "endpointslice-controller.k8s.io",
		}
		s.OwnerReferences = controllerRef("v1", "Service", svc)
		for _, i := range pods[first:min(first+endpointsPerSlice, len(pods))] {
			s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
				Addresses:  []string{podIP(i)},
				Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)},
				NodeName:   ptr.To(NodeName(i % d.Nodes)),
				TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: namespace, Name: d.PodName(i), UID: objectMeta(d.PodName(i), namespace, now).UID},
			})
		}
		slices = append(slices, s)
	}
	return slices
}

// Secret is the i-th Secret: an application's credentials, about 600 bytes.
func (d Data) Secret(i int, now metav1.Time) *corev1.Secret {
	name := fmt.Sprintf("secret-%d", i)
	return &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: objectMeta(name, NamespaceName(i%d.Namespaces), now),
		Type:       corev1.SecretTypeOpaque,
		Data: map[string][]byte{
			"username": []byte(AppName(i % d.Apps)),
			"password": []byte(fmt.Sprintf("%032x", hash(name))),
			"config":   []byte(strings.Repeat("c", 512)),
		},
	}
}

// eventReasons are what the scheduler and a kubelet report of a pod that
// starts, in order.
var eventReasons = []struct{ reason, message, component string }{
	{"Scheduled", "Successfully assigned %s/%s to %s", "default-scheduler"},
	{"Pulled", "Container image \"registry.example/app:v1\" already present on machine and can be accessed by the pod (%s/%s on %s)", "kubelet"},
	{"Created", "Created container: main (%s/%s on %s)", "kubelet"},
	{"Started", "Started container main (%s/%s on %s)", "kubelet"},
}

// Event is the i-th Event: one of the four a pod's start leaves, about
// the pod i/4 (modulo the pods).
func (d Data) Event(i int, now metav1.Time) *corev1.Event {
	p := (i / len(eventReasons)) % max(1, d.Pods)
	r := eventReasons[i%len(eventReasons)]
	namespace, pod, node := NamespaceName(d.PodNamespace(p)), d.PodName(p), NodeName(p%max(1, d.Nodes))
	name := fmt.Sprintf("%s.%016x", pod, hash(fmt.Sprint(i))<<16|uint64(i&0xffff))
	e := &corev1.Event{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Event"},
		ObjectMeta: objectMeta(name, namespace, now),
		InvolvedObject: corev1.ObjectReference{
			Kind: "Pod", Namespace: namespace, Name: pod, APIVersion: "v1",
			UID: objectMeta(pod, namespace, now).UID,
		},
		Reason:              r.reason,
		Message:             fmt.Sprintf(r.message, namespace, pod, node),
		Source:              corev1.EventSource{Component: r.component},
		FirstTimestamp:      now,
		LastTimestamp:       now,
		Count:               1,
		Type:                corev1.EventTypeNormal,
		ReportingController: r.component,
		ReportingInstance:   node,
	}
	if r.component == "kubelet" {
		e.InvolvedObject.FieldPath = "spec.containers{main}"
		e.Source.Host = node
	}
	return e
}

// WidgetCRD is the CustomResourceDefinition of Data.Widgets, established,
// as the apiserver stores it once its controllers accepted its names.
func WidgetCRD(now metav1.Time) *unstructured.Unstructured {
	crd := &apiextensionsv1.CustomResourceDefinition{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apiextensions.k8s.io/v1", Kind: "CustomResourceDefinition"},
		ObjectMeta: objectMeta(WidgetResource+"."+WidgetGroup, "", now),
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: WidgetGroup,
			Names: apiextensionsv1.CustomResourceDefinitionNames{Plural: WidgetResource, Singular: "widget", Kind: "Widget", ListKind: "WidgetList"},
			Scope: apiextensionsv1.NamespaceScoped,
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{
				Name: "v1", Served: true, Storage: true,
				Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{
					Type: "object",
					Properties: map[string]apiextensionsv1.JSONSchemaProps{
						"spec": {Type: "object", XPreserveUnknownFields: ptr.To(true)},
					},
				}},
			}},
			Conversion: &apiextensionsv1.CustomResourceConversion{Strategy: apiextensionsv1.NoneConverter},
		},
	}
	crd.Generation = 1
	crd.Status = apiextensionsv1.CustomResourceDefinitionStatus{
		AcceptedNames: crd.Spec.Names,
		Conditions: []apiextensionsv1.CustomResourceDefinitionCondition{
			{Type: apiextensionsv1.NamesAccepted, Status: apiextensionsv1.ConditionTrue, Reason: "NoConflicts", Message: "no conflicts found", LastTransitionTime: now},
			{Type: apiextensionsv1.Established, Status: apiextensionsv1.ConditionTrue, Reason: "InitialNamesAccepted", Message: "the initial names have been accepted", LastTransitionTime: now},
		},
		StoredVersions: []string{"v1"},
	}
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(crd)
	if err != nil {
		panic(err) // a typed object always converts
	}
	return &unstructured.Unstructured{Object: u}
}

// Widget is the i-th object of the custom resource, labelled with an app
// as pods are.
func (d Data) Widget(i int, now metav1.Time) *unstructured.Unstructured {
	app := AppName(i % d.Apps)
	u := &unstructured.Unstructured{Object: map[string]any{
		"spec": map[string]any{"app": app, "replicas": int64(1 + i%5), "image": "registry.example/" + app + ":v1", "tier": []string{"frontend", "backend", "cache"}[i%3]},
	}}
	u.SetAPIVersion(WidgetGroup + "/v1")
	u.SetKind("Widget")
	meta := objectMeta(fmt.Sprintf("widget-%d", i), NamespaceName(i%d.Namespaces), now)
	u.SetName(meta.Name)
	u.SetNamespace(meta.Namespace)
	u.SetUID(meta.UID)
	u.SetCreationTimestamp(now)
	u.SetGeneration(1)
	u.SetLabels(map[string]string{"app": app})
	return u
}

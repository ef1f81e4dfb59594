package seed

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// podTemplate is the template of app's pods, as its Deployment holds it
// (defaulted): one container with a port, requests and a memory limit,
// environment from a value and from the pod's name, a readiness probe.
func podTemplate(app string) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": app}},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{
				Name:  "main",
				Image: "registry.example/" + app + ":v1",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}},
				Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
					Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")},
				},
				Env: []corev1.EnvVar{
					{Name: "APP", Value: app},
					{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.name"}}},
				},
				ReadinessProbe: &corev1.Probe{
					ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http"), Scheme: corev1.URISchemeHTTP}},
					TimeoutSeconds:   1,
					PeriodSeconds:    10,
					SuccessThreshold: 1,
					FailureThreshold: 3,
				},
				TerminationMessagePath:   "/dev/termination-log",
				TerminationMessagePolicy: corev1.TerminationMessageReadFile,
				ImagePullPolicy:          corev1.PullIfNotPresent,
			}},
			RestartPolicy:                 corev1.RestartPolicyAlways,
			DNSPolicy:                     corev1.DNSClusterFirst,
			SchedulerName:                 corev1.DefaultSchedulerName,
			TerminationGracePeriodSeconds: ptr.To[int64](30),
			ServiceAccountName:            "default",
			SecurityContext:               &corev1.PodSecurityContext{},
		},
	}
}

// PodWrites are the writes through the API that make pod i what Pod
// returns: its ReplicaSet's controller (kube-controller-manager) creates
// it, kube-scheduler binds it to its node, its kubelet reports it running.
type PodWrites struct {
	Create  *corev1.Pod
	Binding *corev1.Binding
	Status  corev1.PodStatus
}

// PodWrites are pod i's writes, the kubelet's at time now.
func (d Data) PodWrites(i int, now metav1.Time) PodWrites {
	app := AppName(i % d.Apps)
	template := podTemplate(app)
	p := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: d.PodName(i), Namespace: NamespaceName(d.PodNamespace(i))},
		Spec:       template.Spec,
	}
	p.Labels = map[string]string{"app": app, "pod-template-hash": podTemplateHash(app), "tier": []string{"frontend", "backend", "cache"}[i%3]}
	if d.Workloads {
		rs := objectMeta(replicaSetName(i%d.Apps), p.Namespace, now)
		p.OwnerReferences = controllerRef("apps/v1", "ReplicaSet", rs)
		p.GenerateName = rs.Name + "-"
	}
	if d.PodAnnotationBytes > 0 {
		p.Annotations = map[string]string{"note": strings.Repeat("n", d.PodAnnotationBytes)}
	}
	node := NodeName(i % d.Nodes)
	ready := func(t corev1.PodConditionType) corev1.PodCondition {
		return corev1.PodCondition{Type: t, Status: corev1.ConditionTrue, ObservedGeneration: 1, LastTransitionTime: now}
	}
	return PodWrites{
		Create: p,
		Binding: &corev1.Binding{
			ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace},
			Target:     corev1.ObjectReference{Kind: "Node", Name: node},
		},
		Status: corev1.PodStatus{
			ObservedGeneration: 1,
			Phase:              corev1.PodRunning,
			Conditions: []corev1.PodCondition{
				ready(corev1.PodReadyToStartContainers), ready(corev1.PodInitialized), ready(corev1.PodReady),
				ready(corev1.ContainersReady), ready(corev1.PodScheduled),
			},
			HostIP:    d.hostIP(i),
			HostIPs:   []corev1.HostIP{{IP: d.hostIP(i)}},
			PodIP:     podIP(i),
			PodIPs:    []corev1.PodIP{{IP: podIP(i)}},
			StartTime: &now,
			ContainerStatuses: []corev1.ContainerStatus{{
				Name: "main", Ready: true, Started: ptr.To(true), Image: "registry.example/" + app + ":v1",
				ImageID: "registry.example/" + app + "@sha256:" + fmt.Sprintf("%064x", hash(app)), ContainerID: fmt.Sprintf("containerd://%064x", i),
				State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
				VolumeMounts: []corev1.VolumeMountStatus{{
					Name: serviceAccountVolume(p.Name), MountPath: serviceAccountMountPath, ReadOnly: true,
					RecursiveReadOnly: ptr.To(corev1.RecursiveReadOnlyDisabled),
				}},
			}},
			QOSClass: corev1.PodQOSBurstable,
		},
	}
}

const serviceAccountMountPath = "/var/run/secrets/kubernetes.io/serviceaccount"

// serviceAccountVolume is the name the ServiceAccount admission plugin
// gives a pod's token volume (five random characters there).
func serviceAccountVolume(pod string) string {
	return "kube-api-access-" + randomSuffix(hash(pod))
}

// Pod is the i-th pod as etcd holds it after its writes (PodWrites), byte
// for byte what the apiserver stores: its defaults and admission (the
// token volume, the default tolerations, priority), the node's zone label
// the binding adds, the managed fields of kube-controller-manager and the
// kubelet. About 3.5 KiB in storage (protobuf), 5 KiB as JSON.
func (d Data) Pod(i int, now metav1.Time) *corev1.Pod {
	w := d.PodWrites(i, now)
	p := w.Create
	createdMetadata := createdMetadataFields(p) // before the binding's label
	p.UID = objectMeta(p.Name, p.Namespace, now).UID
	p.CreationTimestamp = now
	p.Generation = 1
	p.Labels["topology.kubernetes.io/zone"] = nodeZone(i % d.Nodes)
	s := &p.Spec
	s.NodeName = w.Binding.Target.Name
	s.DeprecatedServiceAccount = s.ServiceAccountName
	s.EnableServiceLinks = ptr.To(true)
	s.Priority = ptr.To[int32](0)
	s.PreemptionPolicy = ptr.To(corev1.PreemptLowerPriority)
	s.Tolerations = []corev1.Toleration{
		{Key: "node.kubernetes.io/not-ready", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](300)},
		{Key: "node.kubernetes.io/unreachable", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](300)},
	}
	volume := serviceAccountVolume(p.Name)
	s.Volumes = append(s.Volumes, corev1.Volume{Name: volume, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		Sources: []corev1.VolumeProjection{
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{ExpirationSeconds: ptr.To[int64](3607), Path: "token"}},
			{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"}, Items: []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
			{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{{Path: "namespace", FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.namespace"}}}}},
		},
		DefaultMode: ptr.To[int32](420),
	}}})
	for c := range s.Containers {
		s.Containers[c].VolumeMounts = append(s.Containers[c].VolumeMounts, corev1.VolumeMount{Name: volume, ReadOnly: true, MountPath: serviceAccountMountPath})
	}
	p.Status = w.Status
	p.ManagedFields = []metav1.ManagedFieldsEntry{
		{Manager: "kube-controller-manager", Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "v1", Time: &now, FieldsType: "FieldsV1",
			FieldsV1: &metav1.FieldsV1{Raw: []byte(`{"f:metadata":{` + createdMetadata + `},"f:spec":` + createdSpecFields + `}`)}},
		{Manager: "kubelet", Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "v1", Time: &now, FieldsType: "FieldsV1",
			FieldsV1: &metav1.FieldsV1{Raw: []byte(fmt.Sprintf(kubeletStatusFields, w.Status.PodIP))}, Subresource: "status"},
	}
	return p
}

// createdMetadataFields are the metadata fields of the ReplicaSet
// controller's create, as the apiserver's field manager records them.
func createdMetadataFields(p *corev1.Pod) string {
	var f []string
	if len(p.Annotations) > 0 {
		f = append(f, `"f:annotations":{".":{}`+keyFields(p.Annotations)+`}`)
	}
	if p.GenerateName != "" {
		f = append(f, `"f:generateName":{}`)
	}
	f = append(f, `"f:labels":{".":{}`+keyFields(p.Labels)+`}`)
	if len(p.OwnerReferences) > 0 {
		f = append(f, `"f:ownerReferences":{".":{},"k:{\"uid\":\"`+string(p.OwnerReferences[0].UID)+`\"}":{}}`)
	}
	return strings.Join(f, ",")
}

// keyFields are a map's keys as managed fields, in order.
func keyFields(m map[string]string) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(m)) {
		b.WriteString(`,"f:` + k + `":{}`)
	}
	return b.String()
}

// createdSpecFields are the spec fields of the ReplicaSet controller's
// create (podTemplate's), as the apiserver's field manager records them.
const createdSpecFields = `{"f:containers":{"k:{\"name\":\"main\"}":{".":{},"f:env":{".":{},"k:{\"name\":\"APP\"}":{".":{},"f:name":{},"f:value":{}},"k:{\"name\":\"POD_NAME\"}":{".":{},"f:name":{},"f:valueFrom":{".":{},"f:fieldRef":{}}}},"f:image":{},"f:imagePullPolicy":{},"f:name":{},"f:ports":{".":{},"k:{\"containerPort\":8080,\"protocol\":\"TCP\"}":{".":{},"f:containerPort":{},"f:name":{},"f:protocol":{}}},"f:readinessProbe":{".":{},"f:failureThreshold":{},"f:httpGet":{".":{},"f:path":{},"f:port":{},"f:scheme":{}},"f:periodSeconds":{},"f:successThreshold":{},"f:timeoutSeconds":{}},"f:resources":{".":{},"f:limits":{".":{},"f:memory":{}},"f:requests":{".":{},"f:cpu":{},"f:memory":{}}},"f:terminationMessagePath":{},"f:terminationMessagePolicy":{}}},"f:dnsPolicy":{},"f:enableServiceLinks":{},"f:restartPolicy":{},"f:schedulerName":{},"f:securityContext":{},"f:serviceAccount":{},"f:serviceAccountName":{},"f:terminationGracePeriodSeconds":{}}`

// kubeletStatusFields are the kubelet's status update's fields (of the
// pod IP %s), as the apiserver's field manager records them.
const kubeletStatusFields = `{"f:status":{"f:conditions":{"k:{\"type\":\"ContainersReady\"}":{".":{},"f:lastProbeTime":{},"f:lastTransitionTime":{},"f:observedGeneration":{},"f:status":{},"f:type":{}},"k:{\"type\":\"Initialized\"}":{".":{},"f:lastProbeTime":{},"f:lastTransitionTime":{},"f:observedGeneration":{},"f:status":{},"f:type":{}},"k:{\"type\":\"PodReadyToStartContainers\"}":{".":{},"f:lastProbeTime":{},"f:lastTransitionTime":{},"f:observedGeneration":{},"f:status":{},"f:type":{}},"k:{\"type\":\"PodScheduled\"}":{"f:lastTransitionTime":{},"f:observedGeneration":{}},"k:{\"type\":\"Ready\"}":{".":{},"f:lastProbeTime":{},"f:lastTransitionTime":{},"f:observedGeneration":{},"f:status":{},"f:type":{}}},"f:containerStatuses":{},"f:hostIP":{},"f:hostIPs":{},"f:observedGeneration":{},"f:phase":{},"f:podIP":{},"f:podIPs":{".":{},"k:{\"ip\":\"%s\"}":{".":{},"f:ip":{}}},"f:startTime":{}}}`

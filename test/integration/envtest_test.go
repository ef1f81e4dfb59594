package integration

import (
	"context"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/bulwark-k8s/bulwark/internal/localcluster"
	"github.com/bulwark-k8s/bulwark/test/integration/framework"
)

// TestEnvtest runs controller-runtime's envtest on our binary, as a
// controller project's test suite would, with KUBEBUILDER_ASSETS pointing at
// what `make envtest-assets` made: envtest probes --help, passes its own
// default flags, installs a CRD, and the test round-trips an object.
func TestEnvtest(t *testing.T) {
	t.Setenv("KUBEBUILDER_ASSETS", framework.Bins(t).EnvtestAssets)

	gvk := schema.GroupVersionKind{Group: "bulwark.test", Version: "v1", Kind: "Widget"}
	env := &envtest.Environment{
		CRDs:                     []*apiextensionsv1.CustomResourceDefinition{widgetCRD(gvk)},
		ErrorIfCRDPathMissing:    false,
		ControlPlaneStartTimeout: localcluster.ReadyTimeout,
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("envtest start: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("envtest stop: %v", err)
		}
	})

	c, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	widget := &unstructured.Unstructured{}
	widget.SetGroupVersionKind(gvk)
	widget.SetNamespace("default")
	widget.SetName("w1")
	if err := unstructured.SetNestedField(widget.Object, "large", "spec", "size"); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, widget); err != nil {
		t.Fatal(err)
	}

	got := &unstructured.Unstructured{}
	got.SetGroupVersionKind(gvk)
	if err := c.Get(ctx, client.ObjectKey{Namespace: "default", Name: "w1"}, got); err != nil {
		t.Fatal(err)
	}
	if size, _, _ := unstructured.NestedString(got.Object, "spec", "size"); size != "large" {
		t.Errorf("read back spec.size = %q, want large", size)
	}
}

func widgetCRD(gvk schema.GroupVersionKind) *apiextensionsv1.CustomResourceDefinition {
	preserve := true
	return &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: "widgets." + gvk.Group},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: gvk.Group,
			Names: apiextensionsv1.CustomResourceDefinitionNames{Plural: "widgets", Singular: "widget", Kind: gvk.Kind, ListKind: gvk.Kind + "List"},
			Scope: apiextensionsv1.NamespaceScoped,
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{
				Name: gvk.Version, Served: true, Storage: true,
				Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{
					Type: "object",
					Properties: map[string]apiextensionsv1.JSONSchemaProps{
						"spec": {Type: "object", XPreserveUnknownFields: &preserve},
					},
				}},
			}},
		},
	}
}

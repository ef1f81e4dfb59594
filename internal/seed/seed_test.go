package seed

import (
	"bytes"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// TestEncoding: built-in objects are stored as the apiserver stores them,
// protobuf in its envelope, and decode to what was built; custom objects
// as JSON; a pod is about 750 bytes.
func TestEncoding(t *testing.T) {
	d := Data{Pods: 10, Nodes: 3, Namespaces: 2, Apps: 5}
	now := Now()
	n := 0
	for o := range d.Objects(now) {
		n++
		data, err := encode(o.Object)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(data, []byte("k8s\x00")) {
			t.Fatalf("%s: not the apiserver's protobuf encoding", o.Key)
		}
		decoded, err := runtime.Decode(protobufCodec, data)
		if err != nil {
			t.Fatalf("%s: %v", o.Key, err)
		}
		if pod, ok := decoded.(*corev1.Pod); ok {
			if want := d.Pod(0, now); pod.Name == want.Name && pod.Spec.NodeName != want.Spec.NodeName {
				t.Errorf("decoded %s differs", pod.Name)
			}
			if len(data) < 600 || len(data) > 1000 {
				t.Errorf("pod %s is %d bytes in storage, want about 750", pod.Name, len(data))
			}
		}
	}
	if want := 2*2 + 3*2 + 10; n != want {
		t.Errorf("%d objects, want %d", n, want)
	}
	gvk := schema.GroupVersionKind{Group: "example.com", Version: "v1", Kind: "Widget"}
	for o := range CustomObjects(gvk, "widgets", "default", 1, map[string]any{"size": "large"}, now) {
		data, err := encode(o.Object)
		if err != nil {
			t.Fatal(err)
		}
		if o.Key != "/registry/example.com/widgets/default/w-0" || !bytes.HasPrefix(data, []byte(`{"apiVersion":"example.com/v1","kind":"Widget"`)) {
			t.Errorf("custom object %s: %s", o.Key, data)
		}
	}
}

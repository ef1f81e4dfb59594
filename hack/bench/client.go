package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"

	"github.com/bulwark-k8s/bulwark/internal/nodeagent"
)

const (
	protobufAccept = "application/vnd.kubernetes.protobuf"
	goodUserAgent  = "bench-good-client/1.0"
	floodUserAgent = "bench-flooder/1.0"
)

// ownConnection returns a copy of cfg whose clients use a connection of
// their own: client-go shares one transport (one HTTP/2 connection) among
// equal configs, while real clients (kubelets, controllers) each have theirs.
func ownConnection(cfg *rest.Config, userAgent string) *rest.Config {
	c := rest.CopyConfig(cfg)
	c.Dial = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	c.UserAgent = userAgent
	c.QPS, c.Burst = -1, 0 // no client-side rate limit: the server is what is measured
	return c
}

func httpClient(cfg *rest.Config, userAgent string) (*http.Client, error) {
	return rest.HTTPClientFor(ownConnection(cfg, userAgent))
}

func get(ctx context.Context, client *http.Client, url, accept, userAgent string) (*http.Response, error) {
	return do(ctx, client, http.MethodGet, url, accept, userAgent, "", nil)
}

func do(ctx context.Context, client *http.Client, method, url, accept, userAgent, contentType string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", accept)
	if userAgent != "" {
		req.Header.Set("User-Agent", userAgent)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return client.Do(req)
}

// statusError is a response outside 2xx.
type statusError struct {
	code int
	body string
}

func (e *statusError) Error() string { return fmt.Sprintf("HTTP %d: %.200s", e.code, e.body) }

// timed sends a request, reads the whole body, and returns the time it took
// and the body; the body is not decoded, so the client's cost stays small.
func timed(ctx context.Context, client *http.Client, method, url, userAgent, contentType string, body []byte) (time.Duration, []byte, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	start := time.Now()
	resp, err := do(ctx, client, method, url, protobufAccept+", application/json", userAgent, contentType, r)
	if err != nil {
		return 0, nil, err
	}
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	elapsed := time.Since(start)
	if err != nil {
		return elapsed, nil, err
	}
	if resp.StatusCode/100 != 2 {
		return elapsed, data, &statusError{code: resp.StatusCode, body: string(data)}
	}
	return elapsed, data, nil
}

// flooderConfig returns a config of a node agent's service account (which
// may list pods), without the admin's certificate.
func flooderConfig(ctx context.Context, admin *rest.Config) (*rest.Config, error) {
	client, err := kubernetes.NewForConfig(admin)
	if err != nil {
		return nil, err
	}
	token, err := nodeagent.Token(ctx, client)
	if err != nil {
		return nil, err
	}
	c := rest.AnonymousClientConfig(admin)
	c.BearerToken = token
	return c, nil
}

// applyTuning creates the API Priority and Fairness objects in file and
// waits until the server acts on them: it marks a FlowSchema's Dangling
// condition once it has taken the schema and its priority level in.
func applyTuning(ctx context.Context, admin *rest.Config, file string) error {
	var schemas []string
	err := eachTuningObject(admin, file, func(client kubernetes.Interface, obj runtime.Object) error {
		var err error
		switch o := obj.(type) {
		case *flowcontrolv1.PriorityLevelConfiguration:
			_, err = client.FlowcontrolV1().PriorityLevelConfigurations().Create(ctx, o, metav1.CreateOptions{})
		case *flowcontrolv1.FlowSchema:
			_, err = client.FlowcontrolV1().FlowSchemas().Create(ctx, o, metav1.CreateOptions{})
			schemas = append(schemas, o.Name)
		}
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
		return err
	})
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(admin)
	if err != nil {
		return err
	}
	for _, name := range schemas {
		err := poll(ctx, time.Minute, func() bool {
			fs, err := client.FlowcontrolV1().FlowSchemas().Get(ctx, name, metav1.GetOptions{})
			return err == nil && slices.ContainsFunc(fs.Status.Conditions, func(c flowcontrolv1.FlowSchemaCondition) bool {
				return c.Type == flowcontrolv1.FlowSchemaConditionDangling && c.Status == flowcontrolv1.ConditionFalse
			})
		})
		if err != nil {
			return fmt.Errorf("FlowSchema %s taken in: %w", name, err)
		}
	}
	return nil
}

// removeTuning deletes the objects applyTuning created.
func removeTuning(ctx context.Context, admin *rest.Config, file string) error {
	return eachTuningObject(admin, file, func(client kubernetes.Interface, obj runtime.Object) error {
		var err error
		switch o := obj.(type) {
		case *flowcontrolv1.PriorityLevelConfiguration:
			err = client.FlowcontrolV1().PriorityLevelConfigurations().Delete(ctx, o.Name, metav1.DeleteOptions{})
		case *flowcontrolv1.FlowSchema:
			err = client.FlowcontrolV1().FlowSchemas().Delete(ctx, o.Name, metav1.DeleteOptions{})
		}
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	})
}

// eachTuningObject calls do with each object of file, which holds
// FlowSchemas and PriorityLevelConfigurations only.
func eachTuningObject(admin *rest.Config, file string, do func(kubernetes.Interface, runtime.Object) error) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(admin)
	if err != nil {
		return err
	}
	for _, doc := range strings.Split(string(data), "\n---\n") {
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(doc), nil, nil)
		if err != nil {
			return err
		}
		switch obj.(type) {
		case *flowcontrolv1.PriorityLevelConfiguration, *flowcontrolv1.FlowSchema:
		default:
			return fmt.Errorf("%T: want FlowSchemas and PriorityLevelConfigurations", obj)
		}
		if err := do(client, obj); err != nil {
			return err
		}
	}
	return nil
}

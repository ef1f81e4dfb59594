package podwatch

import (
	"context"
	"errors"
	"maps"
	"net/url"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// TestRelistCauses drives a watcher's list and watch functions as a
// reflector does and checks that each list after the first is counted
// under how the watch before it ended.
func TestRelistCauses(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset()
	type answer struct {
		events []watch.Event
		hold   time.Duration // before the watch closes
		err    error
	}
	var next answer
	client.PrependWatchReactor("pods", func(k8stesting.Action) (bool, watch.Interface, error) {
		if next.err != nil {
			return true, nil, next.err
		}
		w := watch.NewFake()
		go func(a answer) {
			for _, e := range a.events {
				w.Action(e.Type, e.Object)
			}
			time.Sleep(a.hold)
			w.Stop()
		}(next)
		return true, w, nil
	})
	w := ForNode("node-1")
	lw := w.listWatch(client)
	list := func() {
		if _, err := lw.ListWithContext(ctx, metav1.ListOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// watch starts a watch and reads it to its end, as a reflector does.
	watchToEnd := func(a answer) {
		next = a
		wi, err := lw.WatchWithContext(ctx, metav1.ListOptions{})
		if err != nil {
			return
		}
		for range wi.ResultChan() {
		}
	}
	gone := watch.Event{Type: watch.Error, Object: &metav1.Status{Status: metav1.StatusFailure, Code: 410, Reason: metav1.StatusReasonExpired}}
	pod := watch.Event{Type: watch.Added, Object: &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns"}}}

	list() // the first list has no cause
	watchToEnd(answer{})
	list()
	watchToEnd(answer{events: []watch.Event{gone}})
	list()
	watchToEnd(answer{err: apierrors.NewServiceUnavailable("stopping")})
	list()
	list() // a retried list keeps its cause
	// Neither a refused connection's retry nor 429 lists again (client-go
	// watches again): the cause stays the watch's that ended before.
	watchToEnd(answer{err: apierrors.NewTooManyRequests("filling", 1)})
	watchToEnd(answer{events: []watch.Event{{Type: watch.Error, Object: &metav1.Status{Code: 500, Reason: metav1.StatusReasonInternalError}}}})
	list()
	// A watch that lasted, with events, and closed: no cause.
	watchToEnd(answer{events: []watch.Event{pod}, hold: 10 * time.Millisecond})
	list()
	// An error of no known kind: its text, without the URL, numbers as N.
	watchToEnd(answer{err: &url.Error{Op: "Get", URL: "https://server/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1",
		Err: errors.New("http2: stream 31 refused by the server")}})
	list()

	want := map[string]int64{
		endVeryShort:                            1,
		endGone:                                 1,
		"watch refused: 503 ServiceUnavailable": 2,
		"watch ended with error 500 InternalError": 1,
		"unknown": 1,
		"watch refused: other: http2: stream N refused by the server": 1,
	}
	if got := RelistCauses([]*Watcher{w}); !maps.Equal(got, want) {
		t.Errorf("RelistCauses = %v, want %v", got, want)
	}
	if w.Gone() != 1 {
		t.Errorf("Gone = %d, want 1", w.Gone())
	}
	if w.Lists() != 8 {
		t.Errorf("Lists = %d, want 8", w.Lists())
	}
}

package integration

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bulwark-k8s/bulwark/test/integration/framework"
)

// TestEtcdMemberFailures runs readers and writers against an apiserver on a
// three-member etcd cluster while members fail. With one member killed
// (SIGKILL) and restarted the apiserver keeps serving and stays ready; with
// two killed, quorum is lost and it reports not-ready; once quorum returns
// it is ready again, and every write it acknowledged, before, during or
// after the failures, is there.
func TestEtcdMemberFailures(t *testing.T) {
	members := framework.StartEtcdCluster(t, 3)
	var urls []string
	for _, m := range members {
		urls = append(urls, m.ClientURL)
	}
	s := framework.StartAPIServer(t, framework.APIServerOptions{Args: []string{"--etcd-servers=" + strings.Join(urls, ",")}})
	if _, err := s.Client.CoreV1().PodTemplates("default").Create(context.Background(), &corev1.PodTemplate{
		ObjectMeta: metav1.ObjectMeta{Name: "scale-out"},
		Template:   corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ready := func() bool {
		code, _ := call(t, s, "GET", "/readyz", "readiness-probe", false)
		return code == http.StatusOK
	}
	phase := sized(10*time.Second, time.Minute)

	r := startReaders(t, s.Config, 8)
	w := startWriters(t, s.Config, "default", 4)
	time.Sleep(phase / 2)

	// One member down: served throughout, and ready throughout.
	readsBefore, writesBefore, writeFailuresBefore := r.snapshot(), w.ok.Load(), w.failed.Load()
	members[0].Kill()
	notReady := 0
	for deadline := time.Now().Add(phase); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if !ready() {
			notReady++
		}
	}
	if err := members[0].Start(); err != nil {
		t.Fatal("restarting the killed member: ", err)
	}
	reads := r.since(readsBefore)
	readsOK, readsFailed := sumOK(reads), 0
	for _, c := range reads {
		readsFailed += c.failed
	}
	writesOK, writesFailed := w.ok.Load()-writesBefore, w.failed.Load()-writeFailuresBefore
	figure(t, "one member down: reads served", float64(readsOK), "requests")
	figure(t, "one member down: reads failed", float64(readsFailed), "requests")
	figure(t, "one member down: writes acknowledged", float64(writesOK), "requests")
	figure(t, "one member down: writes failed", float64(writesFailed), "requests")
	figure(t, "one member down: /readyz not ok", float64(notReady), "probes")
	if notReady > 0 {
		t.Errorf("/readyz failed %d times with one etcd member of three down", notReady)
	}
	if readsOK == 0 || writesOK == 0 {
		t.Errorf("with one etcd member of three down: %d reads, %d writes served; want both served", readsOK, writesOK)
	}
	// A request the killed member was serving can fail once; no more.
	if readsFailed+int(writesFailed) > 8 {
		t.Errorf("with one etcd member of three down: %d reads and %d writes failed", readsFailed, writesFailed)
	}

	// Quorum lost: not ready. Quorum back: ready again.
	lost := time.Now()
	members[1].Kill()
	members[2].Kill()
	waitUntil(t, 30*time.Second, "not ready without an etcd quorum", func() bool { return !ready() })
	figure(t, "quorum lost: not ready after", time.Since(lost).Seconds(), "s")
	time.Sleep(sized(5*time.Second, 30*time.Second))
	if err := members[1].Start(); err != nil {
		t.Fatal("restoring quorum: ", err)
	}
	back := time.Now()
	waitUntil(t, time.Minute, "ready once the etcd quorum is back", ready)
	figure(t, "quorum back: ready after", time.Since(back).Seconds(), "s")
	if err := members[2].Start(); err != nil {
		t.Fatal(err)
	}

	readsBefore, writesBefore = r.snapshot(), w.ok.Load()
	time.Sleep(phase / 2)
	if sumOK(r.since(readsBefore)) == 0 || w.ok.Load() == writesBefore {
		t.Error("reads or writes not served after quorum came back")
	}
	r.stop()
	checkNothingLost(t, s.Config, "default", w.stop())
}

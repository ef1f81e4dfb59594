package filters

import (
	"crypto/subtle"
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/bulwark-k8s/bulwark/pkg/heartbeat"
)

// tooManyRequests answers 429 with a metav1.Status (reason TooManyRequests)
// and a Retry-After header, the shape client-go backs off on, as for
// upstream's own 429s.
func tooManyRequests(w http.ResponseWriter, message string, retryAfter time.Duration) {
	seconds := max(1, int(math.Ceil(retryAfter.Seconds())))
	status := apierrors.NewTooManyRequests(message, seconds).Status()
	status.APIVersion, status.Kind = "v1", "Status"
	body, _ := json.Marshal(status)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Retry-After", strconv.Itoa(seconds))
	w.WriteHeader(http.StatusTooManyRequests)
	_, _ = w.Write(body)
}

// exempt reports requests no Bulwark filter may reject: health checks,
// metrics, and heartbeats (as WithHeartbeats classified them).
func exempt(r *http.Request) bool {
	switch p := r.URL.Path; {
	case p == "/healthz" || p == "/livez" || p == "/readyz" || p == "/metrics",
		strings.HasPrefix(p, "/healthz/"), strings.HasPrefix(p, "/livez/"), strings.HasPrefix(p, "/readyz/"):
		return true
	}
	return heartbeat.KindFrom(r.Context()) != heartbeat.None
}

// loopbackCheck recognises the apiserver's own loopback client by its bearer
// token, which only the apiserver knows; compared in constant time.
func loopbackCheck(token string) func(r *http.Request) bool {
	want := []byte("Bearer " + token)
	return func(r *http.Request) bool {
		return token != "" && subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) == 1
	}
}

package filters

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/bulwark-k8s/bulwark/internal/pki"
)

// startGuardedTLSServer serves TLS as upstream's secure serving does
// (net/http, ReadHeaderTimeout 32 s unless readHeaderTimeout says otherwise)
// on a listener guarded by a handshake limit of 1.
func startGuardedTLSServer(t *testing.T, readHeaderTimeout, wait, maxHold time.Duration) (*handshakeLimitListener, *tls.Config) {
	t.Helper()
	b, err := pki.Ensure(t.TempDir(), []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(b.Serving.Cert, b.Serving.Key)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(b.CA.Cert)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	guard := newHandshakeLimitListener(ln, 1, wait, maxHold)
	srv := &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}),
		ReadHeaderTimeout: readHeaderTimeout,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}},
		ErrorLog:          nil,
	}
	go srv.Serve(tls.NewListener(guard, srv.TLSConfig))
	t.Cleanup(func() { srv.Close() })
	return guard, &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}
}

// stalledClientConn lets its TLS client send the ClientHello, then holds
// every later write until unblock is closed: the server's side of the
// handshake waits for the client's Finished, holding its slot.
type stalledClientConn struct {
	net.Conn
	writes  int
	unblock chan struct{}
}

func (c *stalledClientConn) Write(b []byte) (int, error) {
	if c.writes++; c.writes > 1 {
		<-c.unblock
	}
	return c.Conn.Write(b)
}

func handshake(addr string, config *tls.Config) error {
	conn, err := tls.Dial("tcp", addr, config)
	if err != nil {
		return err
	}
	defer conn.Close()
	// TLS 1.3: the server reports a failed handshake on the first read.
	conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	_, err = conn.Read(make([]byte, 1))
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return nil
	}
	return err
}

func waitForSlots(t *testing.T, guard *handshakeLimitListener, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(guard.slots) != want {
		if time.Now().After(deadline) {
			t.Fatalf("handshake slots in use: %d, want %d", len(guard.slots), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestLimitTLSHandshakes(t *testing.T) {
	const wait = 300 * time.Millisecond
	guard, clientConfig := startGuardedTLSServer(t, 32*time.Second, wait, time.Hour)
	addr := guard.Addr().String()

	// A completed handshake gives its slot back while its connection stays open.
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: clientConfig}}
	resp, err := client.Get("https://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	waitForSlots(t, guard, 0)

	// A connection that sends nothing holds no slot.
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if err := handshake(addr, clientConfig); err != nil {
		t.Fatalf("handshake beside an idle connection: %v", err)
	}

	// A handshake in progress holds the only slot: the next one waits, then
	// its connection is closed.
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	stalled := &stalledClientConn{Conn: raw, unblock: make(chan struct{})}
	stalledDone := make(chan error, 1)
	go func() { stalledDone <- tls.Client(stalled, clientConfig).HandshakeContext(context.Background()) }()
	waitForSlots(t, guard, 1)
	start := time.Now()
	if err := handshake(addr, clientConfig); err == nil {
		t.Fatal("second handshake succeeded while the only slot was held")
	}
	if waited := time.Since(start); waited < wait {
		t.Errorf("second handshake refused after %v, before the %v wait", waited, wait)
	}

	// Once the stalled handshake completes, its slot is free again.
	close(stalled.unblock)
	if err := <-stalledDone; err != nil {
		t.Fatalf("stalled handshake: %v", err)
	}
	waitForSlots(t, guard, 0)
	if err := handshake(addr, clientConfig); err != nil {
		t.Fatalf("handshake after the slot was freed: %v", err)
	}

	// A client that leaves mid-handshake frees its slot too.
	raw, err = net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	stalled = &stalledClientConn{Conn: raw, unblock: make(chan struct{})}
	go tls.Client(stalled, clientConfig).HandshakeContext(context.Background())
	waitForSlots(t, guard, 1)
	raw.Close()
	close(stalled.unblock)
	waitForSlots(t, guard, 0)
}

// TestLimitTLSHandshakesMaxHold: a server that never reports the end of its
// handshakes (no handshake deadline) still gets its slots back.
func TestLimitTLSHandshakesMaxHold(t *testing.T) {
	guard, clientConfig := startGuardedTLSServer(t, 0, time.Second, 200*time.Millisecond)
	conn, err := tls.Dial("tcp", guard.Addr().String(), clientConfig)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	waitForSlots(t, guard, 0)
	if err := handshake(guard.Addr().String(), clientConfig); err != nil {
		t.Fatalf("handshake after the first one's slot expired: %v", err)
	}
}

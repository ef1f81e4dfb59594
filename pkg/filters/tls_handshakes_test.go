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

// The server names whose handshakes the test server holds until its hold
// channel is closed: before it computes its reply (heldServerName), and
// while it checks the client's answer (heldCheckServerName).
const (
	heldServerName      = "held.test"
	heldCheckServerName = "held-check.test"
)

// startGuardedTLSServer serves TLS as upstream's secure serving does
// (net/http, ReadHeaderTimeout 32 s unless readHeaderTimeout says otherwise)
// on a listener guarded by a handshake limit of 1. A handshake for
// heldServerName waits, before the server computes its reply, until hold is
// closed.
func startGuardedTLSServer(t *testing.T, readHeaderTimeout, wait, maxHold time.Duration, hold <-chan struct{}) (*handshakeLimitListener, *tls.Config) {
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
	// As upstream's secure serving with a client CA: certificates asked for, not required.
	serverConfig := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}, ClientAuth: tls.RequestClientCert}
	serverConfig.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		if hello.ServerName == heldServerName {
			<-hold
		}
		return nil, nil
	}
	serverConfig.VerifyConnection = func(cs tls.ConnectionState) error {
		if cs.ServerName == heldCheckServerName {
			<-hold
		}
		return nil
	}
	srv := &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}),
		ReadHeaderTimeout: readHeaderTimeout,
		TLSConfig:         serverConfig,
	}
	go srv.Serve(tls.NewListener(guard, srv.TLSConfig))
	t.Cleanup(func() { srv.Close() })
	return guard, &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}
}

// held is config for a handshake the server holds (see heldServerName).
func held(config *tls.Config, serverName string) *tls.Config {
	c := config.Clone()
	c.ServerName = serverName
	c.InsecureSkipVerify = true // the serving certificate is not for that name
	return c
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
	hold := make(chan struct{})
	guard, clientConfig := startGuardedTLSServer(t, 32*time.Second, wait, time.Hour, hold)
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

	// Neither a connection that sends nothing nor one that trickles its
	// ClientHello holds a slot.
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	trickling, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer trickling.Close()
	if _, err := trickling.Write([]byte{recordTypeHandshake, 3, 1, 2, 0, 1, 0}); err != nil { // a ClientHello of 512 bytes, begun
		t.Fatal(err)
	}
	if err := handshake(addr, clientConfig); err != nil {
		t.Fatalf("handshake beside an idle and a trickling connection: %v", err)
	}

	// Nor does a client that stalls after the server's reply.
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	stalled := &stalledClientConn{Conn: raw, unblock: make(chan struct{})}
	stalledDone := make(chan error, 1)
	go func() { stalledDone <- tls.Client(stalled, clientConfig).HandshakeContext(context.Background()) }()
	if err := handshake(addr, clientConfig); err != nil {
		t.Fatalf("handshake beside a stalled client: %v", err)
	}
	close(stalled.unblock)
	if err := <-stalledDone; err != nil {
		t.Fatalf("stalled handshake: %v", err)
	}

	// A handshake the server is computing holds the only slot: the next one
	// waits, then its connection is closed.
	heldDone := make(chan error, 1)
	go func() { heldDone <- handshake(addr, held(clientConfig, heldServerName)) }()
	waitForSlots(t, guard, 1)
	start := time.Now()
	if err := handshake(addr, clientConfig); err == nil {
		t.Fatal("second handshake succeeded while the only slot was held")
	}
	if waited := time.Since(start); waited < wait {
		t.Errorf("second handshake refused after %v, before the %v wait", waited, wait)
	}

	// Once the server has replied, the slot is free again.
	close(hold)
	if err := <-heldDone; err != nil {
		t.Fatalf("held handshake: %v", err)
	}
	waitForSlots(t, guard, 0)
	if err := handshake(addr, clientConfig); err != nil {
		t.Fatalf("handshake after the slot was freed: %v", err)
	}
}

// TestLimitTLSHandshakesHoldsWhileCheckingTheClient: the server's check of
// the client's answer (its certificate, its Finished) is computation too,
// and holds a slot.
func TestLimitTLSHandshakesHoldsWhileCheckingTheClient(t *testing.T) {
	hold := make(chan struct{})
	guard, clientConfig := startGuardedTLSServer(t, 32*time.Second, 300*time.Millisecond, time.Hour, hold)
	addr := guard.Addr().String()
	// TLS 1.3: the client is done with its side before the server checks it.
	go handshake(addr, held(clientConfig, heldCheckServerName))
	waitForSlots(t, guard, 1)
	if err := handshake(addr, clientConfig); err == nil {
		t.Fatal("a handshake succeeded while the server was checking another client with the only slot")
	}
	close(hold)
	waitForSlots(t, guard, 0)
	if err := handshake(addr, clientConfig); err != nil {
		t.Fatalf("handshake after the check: %v", err)
	}
}

// TestLimitTLSHandshakesMaxHold: a server that never replies still gets its
// slots back.
func TestLimitTLSHandshakesMaxHold(t *testing.T) {
	hold := make(chan struct{})
	defer close(hold)
	guard, clientConfig := startGuardedTLSServer(t, 0, time.Second, 200*time.Millisecond, hold)
	go handshake(guard.Addr().String(), held(clientConfig, heldServerName))
	waitForSlots(t, guard, 1)
	waitForSlots(t, guard, 0)
	if err := handshake(guard.Addr().String(), clientConfig); err != nil {
		t.Fatalf("handshake after the first one's slot expired: %v", err)
	}
}

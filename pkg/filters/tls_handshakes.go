package filters

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// handshakeSlotWait bounds how long a connection waits for a handshake
	// slot before it is closed. client-go gives up a handshake after 10 s;
	// handshaking for a client that has already left wastes the CPU the
	// guard is there to save, so the wait stays well below that.
	handshakeSlotWait = 5 * time.Second
	// handshakeMaxHold frees a slot whose handshake never reported its end.
	// net/http reports it by clearing the deadlines it set for the
	// handshake; this bound keeps the guard safe should it ever stop doing
	// so, at the price of precision only.
	handshakeMaxHold = 10 * time.Second
	// upstreamKeepAlivePeriod is the TCP keep-alive upstream's serving sets
	// on each *net.TCPConn it accepts; a wrapped connection is no longer
	// one, so the guard sets it instead.
	upstreamKeepAlivePeriod = 3 * time.Minute
)

// errNoHandshakeSlot is what the server's TLS layer reads from a connection
// that waited too long for a handshake slot; the connection is closed.
var errNoHandshakeSlot = errors.New("too many TLS handshakes in progress; connection closed")

// LimitTLSHandshakes bounds the TLS handshakes that the connections of ln
// run at once to limit, so that a reconnect storm (every client of a
// restarted or failed-over replica arriving in the same second) spends at
// most that many goroutines on handshake cryptography and leaves the CPU to
// the requests already being served. A connection takes a slot when its
// first bytes (the ClientHello) arrive, so idle or slow clients hold none,
// and gives it back when the handshake ends: when net/http clears the
// handshake deadlines, or the connection closes. A connection that waits
// longer than handshakeSlotWait for a slot is closed; its client retries,
// through a load balancer perhaps on another replica.
//
// ln is the plain TCP listener the apiserver wraps in TLS itself.
func LimitTLSHandshakes(ln net.Listener, limit int) net.Listener {
	return newHandshakeLimitListener(ln, limit, handshakeSlotWait, handshakeMaxHold)
}

func newHandshakeLimitListener(ln net.Listener, limit int, wait, maxHold time.Duration) *handshakeLimitListener {
	return &handshakeLimitListener{Listener: ln, slots: make(chan struct{}, limit), wait: wait, maxHold: maxHold}
}

type handshakeLimitListener struct {
	net.Listener
	slots         chan struct{}
	wait, maxHold time.Duration
}

func (l *handshakeLimitListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetKeepAlive(true)
		_ = tc.SetKeepAlivePeriod(upstreamKeepAlivePeriod)
	}
	return &handshakeLimitConn{Conn: c, guard: l}, nil
}

// handshakeLimitConn holds a slot of its listener from its first read until
// its TLS handshake ends.
type handshakeLimitConn struct {
	net.Conn
	guard *handshakeLimitListener

	started atomic.Bool // the first bytes arrived: every later read is plain

	mu      sync.Mutex
	holding bool        // holds a slot now
	expiry  *time.Timer // frees the slot after maxHold
}

func (c *handshakeLimitConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 && !c.started.Load() && c.started.CompareAndSwap(false, true) && !c.acquire() {
		tlsHandshakesRejected.Inc()
		c.Conn.Close()
		return 0, errNoHandshakeSlot
	}
	return n, err
}

func (c *handshakeLimitConn) acquire() bool {
	wait := time.NewTimer(c.guard.wait)
	defer wait.Stop()
	select {
	case c.guard.slots <- struct{}{}:
	case <-wait.C:
		return false
	}
	tlsHandshakesInProgress.Inc()
	c.mu.Lock()
	c.holding = true
	c.expiry = time.AfterFunc(c.guard.maxHold, c.release)
	c.mu.Unlock()
	return true
}

func (c *handshakeLimitConn) release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.holding {
		return
	}
	c.holding = false
	c.expiry.Stop()
	<-c.guard.slots
	tlsHandshakesInProgress.Dec()
}

// SetReadDeadline with a zero time is how net/http ends the handshake phase
// of a connection (it sets a deadline for the handshake and clears it once
// the handshake succeeded).
func (c *handshakeLimitConn) SetReadDeadline(t time.Time) error {
	if t.IsZero() {
		c.release()
	}
	return c.Conn.SetReadDeadline(t)
}

func (c *handshakeLimitConn) Close() error {
	c.release()
	return c.Conn.Close()
}

package filters

import (
	"encoding/binary"
	"errors"
	"io"
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
	// handshakeMaxHold bounds a connection's handshake phase as the guard
	// sees it: a slot held that long is freed, and a connection that began
	// its handshake that long ago reads plainly, should net/http ever stop
	// reporting the end of its handshakes (a server computes its part in
	// well under a second). It keeps the guard safe at the price of
	// precision only.
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
// compute at once to limit, so that a reconnect storm (every client of a
// restarted or failed-over replica arriving in the same second) spends at
// most that many goroutines on handshake cryptography and leaves the CPU to
// the requests already being served. A connection holds a slot only while
// the server computes its side of the handshake: from the moment the
// client's whole ClientHello has arrived until the server sends its reply
// (key exchange and signature), and again from the moment the client's
// next flight arrives until the server has checked it (its certificate) and
// the handshake ends. Waiting on the network holds none: neither an idle
// connection nor one that trickles its ClientHello or stalls after the
// server's reply (a slowloris client), which net/http closes at its
// handshake deadline. A connection that waits longer than handshakeSlotWait
// for a slot is closed; its client retries, through a load balancer perhaps
// on another replica.
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

// handshakeLimitConn holds a slot of its listener while the server
// computes its part of the handshake.
type handshakeLimitConn struct {
	net.Conn
	guard *handshakeLimitListener

	// Only the TLS layer's reader touches these.
	helloRead bool      // the first record was read
	hello     []byte    // what of it the TLS layer has yet to read
	helloAt   time.Time // when it was read

	handshakeOver atomic.Bool // reads are plain from now on
	holding       atomic.Bool // holds a slot now
	mu            sync.Mutex
	expiry        *time.Timer // frees the slot after maxHold
}

func (c *handshakeLimitConn) Read(b []byte) (int, error) {
	if !c.helloRead {
		c.helloRead = true
		record, complete, err := readFirstRecord(c.Conn)
		c.helloAt = time.Now()
		if err != nil {
			return 0, err
		}
		if complete && !c.acquire() {
			return 0, c.reject()
		}
		c.hello = record
	}
	if len(c.hello) > 0 {
		n := copy(b, c.hello)
		c.hello = c.hello[n:]
		return n, nil
	}
	if c.handshakeOver.Load() || time.Since(c.helloAt) > c.guard.maxHold {
		return c.Conn.Read(b)
	}
	// Still handshaking: wait for the client's next flight without a slot,
	// then let the server check it with one.
	c.release()
	n, err := c.Conn.Read(b)
	if n > 0 && !c.handshakeOver.Load() && !c.acquire() {
		return 0, c.reject()
	}
	return n, err
}

// reject closes a connection that found no slot in time.
func (c *handshakeLimitConn) reject() error {
	tlsHandshakesRejected.Inc()
	c.Conn.Close()
	return errNoHandshakeSlot
}

const (
	recordHeaderLen     = 5
	recordTypeHandshake = 0x16
	// maxRecordLen is the largest TLS record a peer may send (RFC 8446, 5.2).
	maxRecordLen = 1<<14 + 256
)

// readFirstRecord reads the first TLS record a client sends: its header and,
// for a handshake record (the ClientHello), its whole body, which complete
// reports. Anything else is returned after its header, for the TLS layer to
// refuse without a slot.
func readFirstRecord(r io.Reader) (record []byte, complete bool, err error) {
	record = make([]byte, recordHeaderLen)
	if _, err := io.ReadFull(r, record); err != nil {
		return nil, false, err
	}
	n := int(binary.BigEndian.Uint16(record[3:]))
	if record[0] != recordTypeHandshake || n > maxRecordLen {
		return record, false, nil
	}
	record = append(record, make([]byte, n)...)
	if _, err := io.ReadFull(r, record[recordHeaderLen:]); err != nil {
		return nil, false, err
	}
	return record, true, nil
}

// Write sends what the server computed: the slot is free while it waits
// for the client's answer.
func (c *handshakeLimitConn) Write(b []byte) (int, error) {
	c.release()
	return c.Conn.Write(b)
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
	c.holding.Store(true)
	c.expiry = time.AfterFunc(c.guard.maxHold, c.endHandshake)
	c.mu.Unlock()
	return true
}

func (c *handshakeLimitConn) release() {
	if !c.holding.Load() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.holding.Load() {
		return
	}
	c.holding.Store(false)
	c.expiry.Stop()
	<-c.guard.slots
	tlsHandshakesInProgress.Dec()
}

// endHandshake frees the slot for good: every later read is plain.
func (c *handshakeLimitConn) endHandshake() {
	c.handshakeOver.Store(true)
	c.release()
}

// SetReadDeadline with a zero time is how net/http ends the handshake phase
// of a connection (it sets a deadline for the handshake and clears it once
// the handshake succeeded).
func (c *handshakeLimitConn) SetReadDeadline(t time.Time) error {
	if t.IsZero() {
		c.endHandshake()
	}
	return c.Conn.SetReadDeadline(t)
}

func (c *handshakeLimitConn) Close() error {
	c.release()
	return c.Conn.Close()
}

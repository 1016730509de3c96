package zkcoord

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/kvstore/kvstore/clock"
)

// link is one ZooKeeper client connection, and so one ZooKeeper session,
// with its TCP connections tracked so that it can be abandoned as a crash
// would (no closeSession sent) and with the session timeout the server
// negotiated read off the wire.
type link struct {
	conn *zk.Conn
	hp   *hostProvider
	// handshake bounds the wait for a connect response, so that a server
	// that accepts connections but does not answer is given up on in time to
	// try another (the client itself waits 20 session timeouts/3).
	handshake time.Duration
	tls       *tls.Config // nil: plaintext
	clk       clock.Clock // what connInfo.sent is read on

	mu      sync.Mutex // guards the fields below
	raw     map[*sniffConn]struct{}
	cut     bool     // refusing: dial nothing more
	last    connInfo // from the latest connect response
	dialErr error    // why the latest dial failed; nil once one succeeds

	// refused is closed when a TLS handshake failed for good with every
	// server: each refused this client's certificate, or its own did not
	// verify. More attempts cannot succeed, so dial gives up at once
	// instead of waiting out its context, as it does for a server that is
	// only slow.
	refused     chan struct{}
	refusedOnce sync.Once
	servers     int             // how many servers dial may try
	definiteBy  map[string]bool // the servers whose handshake failed for good
}

// definite reports whether a failed TLS handshake would fail again: a
// certificate that did not verify, on either side. A timeout or a dropped
// connection is not definite: a busy server may answer the next attempt.
func definite(err error) bool {
	var alert tls.AlertError
	var verify *tls.CertificateVerificationError
	var unknown x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	var host x509.HostnameError
	return errors.As(err, &alert) || errors.As(err, &verify) || errors.As(err, &unknown) ||
		errors.As(err, &invalid) || errors.As(err, &host) ||
		// A remote alert read as a record: "remote error: tls: ...".
		strings.Contains(err.Error(), "remote error: tls:")
}

// connInfo is what one connection's handshake established.
type connInfo struct {
	sid     int64         // the session id the server granted or revalidated
	timeout time.Duration // the session timeout it negotiated
	sent    clock.Instant // when the connect request was written (link.clk)
}

// errAbandoned refuses dials of an abandoned link.
var errAbandoned = errors.New("zkcoord: connection abandoned")

// dial connects to cfg.Servers (over TLS with cfg.TLS) asking for a session
// of timeout and waits, bounded by ctx, until the ensemble grants one. With
// cfg.Auth ("user:password") it then adds digest credentials to the
// connection, which the client re-sends after every reconnect before any
// other request. onEvent, if set, sees every session event, synchronously on
// the client's event loop: it must not block.
func dial(ctx context.Context, cfg Config, timeout time.Duration, onEvent func(zk.Event)) (*link, error) {
	servers, auth := cfg.Servers, cfg.Auth
	l := &link{raw: map[*sniffConn]struct{}{}, handshake: max(timeout/2, 200*time.Millisecond), tls: cfg.TLS, clk: cfg.Clock, refused: make(chan struct{}), servers: len(servers), definiteBy: map[string]bool{}}
	granted := make(chan struct{})
	var once sync.Once
	cb := func(ev zk.Event) {
		if ev.Type == zk.EventSession && ev.State == zk.StateHasSession {
			once.Do(func() { close(granted) })
		}
		if onEvent != nil {
			onEvent(ev)
		}
	}
	l.hp = &hostProvider{quit: make(chan struct{})}
	conn, _, err := zk.Connect(servers, timeout,
		zk.WithDialer(l.dialRaw), zk.WithHostProvider(l.hp), zk.WithLogger(nopLogger{}), zk.WithLogInfo(false), zk.WithEventCallback(cb))
	if err != nil {
		return nil, err
	}
	l.conn = conn
	select {
	case <-granted:
	case <-l.refused:
		l.abandon()
		return nil, fmt.Errorf("refused (no retry can succeed): %w", l.lastDialErr())
	case <-ctx.Done():
		l.abandon()
		if err := l.lastDialErr(); err != nil {
			return nil, fmt.Errorf("%w (last connection attempt: %w)", ctx.Err(), err)
		}
		return nil, ctx.Err()
	}
	if auth == "" {
		return l, nil
	}
	res := make(chan error, 1)
	go func() { res <- conn.AddAuth("digest", []byte(auth)) }()
	select {
	case err := <-res:
		if err != nil {
			l.abandon()
			return nil, fmt.Errorf("add digest credentials: %w", err)
		}
		return l, nil
	case <-ctx.Done():
		l.abandon()
		<-res // the closed connection fails the request at once
		return nil, ctx.Err()
	}
}

// info returns what the latest connection's handshake established.
func (l *link) info() connInfo {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last
}

// lastDialErr is why the latest dial failed, or nil.
func (l *link) lastDialErr() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dialErr
}

func (l *link) dialRaw(network, addr string, timeout time.Duration) (net.Conn, error) {
	l.mu.Lock()
	cut := l.cut
	l.mu.Unlock()
	if cut {
		return nil, errAbandoned
	}
	c, conn, err := l.connect(network, addr, timeout)
	l.mu.Lock()
	l.dialErr = err
	l.mu.Unlock()
	if err != nil && l.tls != nil && definite(err) {
		// Given up only once every server refused: one misconfigured
		// server (a certificate being rotated) must not fail a dial
		// that another server would answer.
		l.mu.Lock()
		l.definiteBy[addr] = true
		all := len(l.definiteBy) >= l.servers
		l.mu.Unlock()
		if all {
			l.refusedOnce.Do(func() { close(l.refused) })
		}
	}
	if err != nil {
		return nil, err
	}
	sc := &sniffConn{Conn: conn, raw: c, l: l}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cut {
		_ = c.Close()
		return nil, errAbandoned
	}
	l.raw[sc] = struct{}{}
	return sc, nil
}

// connect dials addr and, with TLS, makes the handshake within timeout. It
// returns the TCP connection and the one to talk over (the same without
// TLS).
func (l *link) connect(network, addr string, timeout time.Duration) (raw, conn net.Conn, err error) {
	raw, err = net.DialTimeout(network, addr, timeout)
	if err != nil || l.tls == nil {
		return raw, raw, err
	}
	cfg := l.tls
	if cfg.ServerName == "" {
		cfg = cfg.Clone()
		cfg.ServerName, _, _ = net.SplitHostPort(addr)
	}
	tc := tls.Client(raw, cfg)
	_ = raw.SetDeadline(time.Now().Add(timeout))
	if err := tc.Handshake(); err != nil {
		_ = raw.Close()
		return nil, nil, fmt.Errorf("TLS handshake with %s: %w", addr, err)
	}
	_ = raw.SetDeadline(time.Time{})
	return raw, tc, nil
}

// close ends the session gracefully: the client sends closeSession, so the
// ensemble deletes its ephemeral znodes at once. It may take a second when
// the connection is down.
func (l *link) close() {
	l.hp.stop()
	l.conn.Close()
}

// abandon drops the TCP connections without ending the session, as a crash
// would: the ensemble keeps its ephemeral znodes until the session times out.
func (l *link) abandon() {
	l.refuse()
	l.hp.stop()
	l.conn.Close()
}

// refuse drops the TCP connections and refuses every later dial, at once
// and without blocking: safe on the client's event loop. Called when the
// session expired, it keeps the client from opening a new session and
// sending queued requests in it.
func (l *link) refuse() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cut = true
	for c := range l.raw {
		_ = c.raw.Close()
	}
}

// drop closes the current TCP connections, so that the client reconnects,
// to the next server first.
func (l *link) drop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for c := range l.raw {
		_ = c.raw.Close()
	}
}

// sniffConn reads the server's connect response as it passes: the first
// frame on every connection is [len][protocolVersion][timeOut][sessionId]...,
// and the client library does not expose the negotiated timeOut. It also
// notes when the connect request was written (a successful handshake
// touches the session at the ensemble's leader after that) and bounds the
// wait for the response.
type sniffConn struct {
	net.Conn
	raw  net.Conn // the TCP connection: Conn itself, or under Conn's TLS
	l    *link
	hdr  []byte // the first bytes read, until the connect response is parsed
	sent clock.Instant
	done bool
}

// Write is called by one goroutine at a time (the client's handshake, then
// its send loop).
func (c *sniffConn) Write(p []byte) (int, error) {
	if c.sent.IsZero() {
		c.sent = c.l.clk.Now()
	}
	return c.Conn.Write(p)
}

// SetReadDeadline shortens the client's deadline for the connect response.
func (c *sniffConn) SetReadDeadline(t time.Time) error {
	if !c.done && !t.IsZero() {
		if limit := time.Now().Add(c.l.handshake); limit.Before(t) {
			t = limit
		}
	}
	return c.Conn.SetReadDeadline(t)
}

const connectResponseHead = 4 + 4 + 4 + 8 // len, protocolVersion, timeOut, sessionId

// Read is called by one goroutine at a time (the client's handshake, then
// its receive loop).
func (c *sniffConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if !c.done && n > 0 {
		c.hdr = append(c.hdr, p[:n]...)
		if len(c.hdr) >= connectResponseHead {
			c.done = true
			timeout := time.Duration(int32(binary.BigEndian.Uint32(c.hdr[8:12]))) * time.Millisecond
			sid := int64(binary.BigEndian.Uint64(c.hdr[12:20]))
			c.hdr = nil
			c.l.mu.Lock()
			c.l.last = connInfo{sid: sid, timeout: timeout, sent: c.sent}
			c.l.mu.Unlock()
		}
	}
	return n, err
}

func (c *sniffConn) Close() error {
	c.l.mu.Lock()
	delete(c.l.raw, c)
	c.l.mu.Unlock()
	// The TCP connection, not the TLS one: a TLS close_notify could block
	// on a stalled connection, and ZooKeeper does not need it.
	return c.raw.Close()
}

// nopLogger silences the client library, which logs every reconnect.
type nopLogger struct{}

func (nopLogger) Printf(string, ...any) {}

// hostProvider hands the client its servers in a random order, like the
// client's default, but with a retry budget that suits short session
// timeouts: after a connection is lost every server is tried twice at once
// (the first try may have been spent on a stalled server that has just come
// back), then each further round after a pause of its own, 50 ms, then
// 100 ms for about 2 s, and only then does the client pause, a second,
// before each further round (failing the requests queued meanwhile). The
// default pauses a second before the first reconnect when there is one
// server, and after one round otherwise: when the ensemble's leader dies, every server
// refuses clients during the election (0.4 s to 1 s), so a node's client
// came back a second later, by when its own deadline had passed and it
// had ended its session, and the cluster elected a new leader (1.7 s
// without a write; FINDINGS). The ensemble keeps a session through its
// election: reconnecting within the deadline, the node keeps it.
type hostProvider struct {
	mu       sync.Mutex
	servers  []string
	curr     int
	attempts int // since the last successful connection

	quit     chan struct{} // closed by stop: pause no more
	quitOnce sync.Once
}

// firstRetryPause is the pause before the third round of attempts; the
// next round doubles it, up to maxRetryPause, for quickRetryRounds rounds
// (about 2 s, a default session timeout), after which the client pauses a
// second itself. An ensemble's election took 0.4 to 0.7 s on an idle
// machine and up to 1.2 s on a loaded one, and a node's deadline is 1.2
// to 1.7 s after the ensemble's leader died: pauses doubling to 800 ms
// left no attempt between 0.75 and 1.55 s, so an election that ended in
// that window cost every node its session.
const (
	firstRetryPause  = 50 * time.Millisecond
	maxRetryPause    = 100 * time.Millisecond
	quickRetryRounds = 21
)

// stop ends the pauses: the link is closing.
func (hp *hostProvider) stop() { hp.quitOnce.Do(func() { close(hp.quit) }) }

func (hp *hostProvider) Init(servers []string) error {
	if len(servers) == 0 {
		return errors.New("zkcoord: no servers")
	}
	hp.servers = slices.Clone(servers)
	rand.Shuffle(len(hp.servers), func(i, j int) { hp.servers[i], hp.servers[j] = hp.servers[j], hp.servers[i] })
	hp.curr = -1
	return nil
}

func (hp *hostProvider) Len() int {
	hp.mu.Lock()
	defer hp.mu.Unlock()
	return len(hp.servers)
}

// Next returns the next server, after the round's pause if it starts a
// round past the second; retryStart asks the client to pause a second
// first.
func (hp *hostProvider) Next() (server string, retryStart bool) {
	hp.mu.Lock()
	hp.curr = (hp.curr + 1) % len(hp.servers)
	hp.attempts++
	server, n, a := hp.servers[hp.curr], len(hp.servers), hp.attempts
	hp.mu.Unlock()
	pause, retryStart := retryPause(a, n)
	if pause > 0 {
		t := time.NewTimer(pause)
		defer t.Stop()
		select {
		case <-t.C:
		case <-hp.quit:
		}
	}
	return server, retryStart
}

// retryPause is the pause before attempt a (counted from 1 since the last
// connection) among n servers: none within the first two rounds, or
// within a round; then firstRetryPause doubling each round up to
// maxRetryPause, for quickRetryRounds rounds, and from then the client
// pauses a second itself (retryStart).
func retryPause(a, n int) (pause time.Duration, retryStart bool) {
	round := (a - 1) / n // 0 for the first round
	if round < 2 || (a-1)%n != 0 {
		return 0, false
	}
	if p := retryPauseAt(round); p < time.Second {
		return p, false
	}
	return 0, true
}

// retryPauseAt is the pause before round r (r >= 2).
func retryPauseAt(r int) time.Duration {
	if r-2 >= quickRetryRounds {
		return time.Second
	}
	return min(firstRetryPause<<min(r-2, 4), maxRetryPause)
}

func (hp *hostProvider) Connected() {
	hp.mu.Lock()
	defer hp.mu.Unlock()
	hp.attempts = 0
}

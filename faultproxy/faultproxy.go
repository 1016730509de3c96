// Package faultproxy is a real TCP proxy that injects network faults between
// a node and its coordinator (or between any two endpoints): it can cut every
// connection and refuse new ones (down), hold connections open while
// forwarding nothing (blackhole), or delay every chunk.
//
// Lifecycle: New listens on a free loopback port and starts accepting; Close
// stops accepting, closes every connection and waits for every goroutine.
package faultproxy

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy forwards TCP connections from Addr to a target. Its methods are safe
// for concurrent use.
type Proxy struct {
	target string
	lis    net.Listener
	wg     sync.WaitGroup

	mu        sync.Mutex // guards the fields below
	down      bool
	blackhole bool
	delay     time.Duration
	conns     map[*link]struct{}
	closed    bool

	chunks atomic.Int64 // chunks read to forward (not blackholed), for tests
}

// link is one proxied connection pair.
type link struct {
	client net.Conn

	mu     sync.Mutex // guards server and closed
	server net.Conn   // nil until dialed
	closed bool
	done   chan struct{} // closed by close: delayed chunks stop waiting
}

// close closes both sides, once; it may run while serve is still dialing.
func (l *link) close() {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	close(l.done)
	s := l.server
	l.mu.Unlock()
	_ = l.client.Close()
	if s != nil {
		_ = s.Close()
	}
}

// setServer records the dialed server side; false if the link was closed
// meanwhile (the caller then closes s).
func (l *link) setServer(s net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.server = s
	return true
}

// New starts a proxy on 127.0.0.1 with a free port that forwards to target.
func New(target string) (*Proxy, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{target: target, lis: lis, conns: make(map[*link]struct{})}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the host:port to dial instead of the target.
func (p *Proxy) Addr() string { return p.lis.Addr().String() }

// SetDown cuts (true) every proxied connection at once and, while down,
// closes each new connection as soon as it is accepted; false forwards new
// connections again.
func (p *Proxy) SetDown(down bool) {
	p.mu.Lock()
	p.down = down
	var cut []*link
	if down {
		for l := range p.conns {
			cut = append(cut, l)
		}
	}
	p.mu.Unlock()
	for _, l := range cut {
		l.close()
	}
}

// SetBlackhole holds (true) every connection open while forwarding nothing,
// like a peer that stopped answering. Lifting it (false) closes the
// connections that were black-holed; new ones are forwarded again.
func (p *Proxy) SetBlackhole(on bool) {
	p.mu.Lock()
	was := p.blackhole
	p.blackhole = on
	var cut []*link
	if was && !on {
		for l := range p.conns {
			cut = append(cut, l)
		}
	}
	p.mu.Unlock()
	for _, l := range cut {
		l.close()
	}
}

// SetDelay adds d of latency to every chunk forwarded in either direction.
func (p *Proxy) SetDelay(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

// State is "ok", "down" or "blackhole".
func (p *Proxy) State() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.down:
		return "down"
	case p.blackhole:
		return "blackhole"
	}
	return "ok"
}

// Conns is the number of open proxied connections.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Close stops the proxy, closes every connection and waits for its
// goroutines. It is idempotent.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	var cut []*link
	for l := range p.conns {
		cut = append(cut, l)
	}
	p.mu.Unlock()
	err := p.lis.Close()
	for _, l := range cut {
		l.close()
	}
	p.wg.Wait()
	return err
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.lis.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		p.mu.Lock()
		if p.down || p.closed {
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		l := &link{client: c, done: make(chan struct{})}
		p.conns[l] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go p.serve(l)
	}
}

func (p *Proxy) serve(l *link) {
	defer p.wg.Done()
	defer func() {
		l.close()
		p.mu.Lock()
		delete(p.conns, l)
		p.mu.Unlock()
	}()
	s, err := net.DialTimeout("tcp", p.target, time.Second)
	if err != nil {
		return
	}
	if !l.setServer(s) {
		_ = s.Close()
		return
	}
	p.mu.Lock()
	gone := p.down || p.closed
	if _, ok := p.conns[l]; !ok {
		gone = true
	}
	p.mu.Unlock()
	if gone {
		_ = s.Close()
		return
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pipe(l, s, l.client); l.close() }()
	go func() { defer wg.Done(); p.pipe(l, l.client, s); l.close() }()
	wg.Wait()
}

// pipe copies src to dst chunk by chunk, honouring blackhole and delay.
// A delay is latency, not a slower link: each chunk is forwarded delay
// after it was read, while the chunks behind it are read meanwhile (a
// delay line, as netem's), in order.
func (p *Proxy) pipe(l *link, dst, src net.Conn) {
	line := make(chan delayed, 256)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for c := range line {
			if wait := time.Until(c.due); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-t.C:
				case <-l.done:
					t.Stop()
				}
			}
			if _, err := dst.Write(c.data); err != nil {
				l.close() // the reader sees its source closed and stops
				for range line {
				}
				return
			}
		}
	}()
	defer func() { close(line); <-done }()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			hole, delay := p.blackhole, p.delay
			p.mu.Unlock()
			if !hole {
				p.chunks.Add(1)
				line <- delayed{data: append([]byte(nil), buf[:n]...), due: time.Now().Add(delay)}
			}
		}
		if err != nil {
			return
		}
	}
}

// delayed is a chunk on its way, and when it is due.
type delayed struct {
	data []byte
	due  time.Time
}

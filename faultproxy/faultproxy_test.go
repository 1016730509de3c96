package faultproxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/kvstore/kvstore/internal/soon"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echoServer echoes every connection until closed.
func echoServer(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); _ = c.Close() }()
		}
	}()
	t.Cleanup(func() { _ = lis.Close(); <-done })
	return lis.Addr().String()
}

func newProxy(t *testing.T) *Proxy {
	t.Helper()
	p, err := New(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// roundTrip writes msg and reads it back within d.
func roundTrip(c net.Conn, msg string, d time.Duration) error {
	_ = c.SetDeadline(time.Now().Add(d))
	if _, err := c.Write([]byte(msg)); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return errors.New("echo mismatch: " + string(buf))
	}
	return nil
}

func dial(t *testing.T, p *Proxy) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestForwards(t *testing.T) {
	p := newProxy(t)
	if err := roundTrip(dial(t, p), "hello", time.Second); err != nil {
		t.Fatal(err)
	}
	if p.State() != "ok" {
		t.Fatalf("state %s", p.State())
	}
}

func TestDownCutsAndRefuses(t *testing.T) {
	p := newProxy(t)
	c := dial(t, p)
	if err := roundTrip(c, "x", time.Second); err != nil {
		t.Fatal(err)
	}
	p.SetDown(true)
	if p.State() != "down" {
		t.Fatalf("state %s", p.State())
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("read on a cut connection: %v, want EOF or reset", err)
	}
	// New connections are closed at once.
	c2 := dial(t, p)
	if err := roundTrip(c2, "y", 2*time.Second); err == nil {
		t.Fatal("a connection made while down was forwarded")
	}
	p.SetDown(false)
	soon.Succeeds(t, 2*time.Second, func() error {
		c3, err := net.Dial("tcp", p.Addr())
		if err != nil {
			return err
		}
		defer c3.Close()
		return roundTrip(c3, "z", time.Second)
	})
}

// isTimeout reports whether err is a deadline, which never counts as the
// connection being cut.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestBlackholeHoldsBytes(t *testing.T) {
	p := newProxy(t)
	c := dial(t, p)
	if err := roundTrip(c, "a", time.Second); err != nil {
		t.Fatal(err)
	}
	p.SetBlackhole(true)
	err := roundTrip(c, "b", 200*time.Millisecond)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("black-holed round trip: %v, want a timeout", err)
	}
	if p.Conns() != 1 {
		t.Fatalf("black hole closed the connection (%d open)", p.Conns())
	}
	p.SetBlackhole(false)
	soon.Succeeds(t, 2*time.Second, func() error {
		c2, err := net.Dial("tcp", p.Addr())
		if err != nil {
			return err
		}
		defer c2.Close()
		return roundTrip(c2, "c", time.Second)
	})
}

func TestDelay(t *testing.T) {
	p := newProxy(t)
	c := dial(t, p)
	p.SetDelay(100 * time.Millisecond)
	start := time.Now()
	if err := roundTrip(c, "d", 2*time.Second); err != nil {
		t.Fatal(err)
	}
	// Both directions are delayed: at least 200ms (a lower bound only).
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Fatalf("round trip took %v with 100ms delay each way", d)
	}
}

// TestDelayIsLatencyNotALimit: a delay holds each chunk back for its own
// delay while the proxy reads on (a delay line), so calls in flight
// together are not made to take turns; Close ends chunks' waits at once.
// An hour's delay: the second chunk is read only if the first does not
// block the reader.
func TestDelayIsLatencyNotALimit(t *testing.T) {
	p := newProxy(t)
	c := dial(t, p)
	if err := roundTrip(c, "a", time.Second); err != nil {
		t.Fatal(err)
	}
	p.SetDelay(time.Hour)
	read := p.chunks.Load()
	for i, msg := range []string{"b", "c"} {
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		want := read + int64(i) + 1
		soon.Succeeds(t, 10*time.Second, func() error {
			if got := p.chunks.Load(); got != want {
				return fmt.Errorf("the proxy read %d chunks, want %d: a delayed chunk blocks the ones behind it", got-read, want-read)
			}
			return nil
		})
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestCloseIsIdempotentAndClosesConns(t *testing.T) {
	p := newProxy(t)
	c := dial(t, p)
	if err := roundTrip(c, "e", time.Second); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("connection still open after Close")
	}
}

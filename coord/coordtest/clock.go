package coordtest

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/kvstore/kvstore/clock"
	"github.com/kvstore/kvstore/coord"
)

// RunClock runs the tests of a backend's clock. newCoord must return a new,
// open connection, as Run's does, that measures session deadlines on clk
// (the backend's Config.Clock). RunClock closes every Coordinator newCoord
// returns.
func RunClock(t *testing.T, newCoord func(t *testing.T, clk clock.Clock) coord.Coordinator) {
	open := func(t *testing.T, clk clock.Clock) *conn {
		t.Helper()
		c := &conn{Coordinator: newCoord(t, clk)}
		t.Cleanup(func() { c.close(t) })
		return c
	}
	t.Run("DeadlineOnTheClock", func(t *testing.T) {
		clk := clock.NewFake()
		clk.Jump(time.Hour) // an hour apart from the system's readings
		testDeadlineOnTheClock(t, clk, open(t, clk))
	})
	t.Run("SuspendPastTTL", func(t *testing.T) {
		clk := clock.NewFake()
		testSuspendPastTTL(t, clk, open(t, clk))
	})
}

// testDeadlineOnTheClock: Deadline is an instant of the backend's clock,
// about a TTL after the session was asked for.
func testDeadlineOnTheClock(t *testing.T, clk clock.Clock, c coord.Coordinator) {
	before := clk.Now()
	s := newSession(t, c)
	d := s.Deadline()
	if lo, hi := before.Add(TTL/2), clk.Now().Add(TTL+time.Second); d.Before(lo) || d.After(hi) {
		t.Fatalf("Deadline is %v after the request on the backend's clock, want about TTL (%v): not measured on Config.Clock", d.Sub(before), TTL)
	}
}

// testSuspendPastTTL: the machine is suspended for longer than the TTL (the
// clock jumps, the monotonic clock and the coordinator see no time pass).
// At once on resume the deadline has passed: nothing measured before the
// suspend vouches for the session after it. Then the session is either
// renewed by a keep-alive sent after the resume (the coordinator still
// held it: in the test no time passed for it) or ends as expired; it is
// never live on an older deadline.
func testSuspendPastTTL(t *testing.T, clk *clock.Fake, c coord.Coordinator) {
	s := newSession(t, c)
	WaitFor(t, TTL+Slack, "a keep-alive answered", func() error {
		if !s.Healthy() || !clk.Now().Before(s.Deadline()) {
			return fmt.Errorf("healthy %v, deadline in %v", s.Healthy(), s.Deadline().Sub(clk.Now()))
		}
		return nil
	})
	// Longer than whatever TTL the backend granted.
	clk.Jump(s.Deadline().Sub(clk.Now()) + 2*TTL)
	resumed := clk.Now()
	// A keep-alive sent after the resume may be answered at any moment,
	// even before this check: a deadline that far ahead is a new one.
	check := func() error {
		now, d := clk.Now(), s.Deadline()
		if now.Before(d) && !d.After(resumed.Add(TTL/4)) {
			return fmt.Errorf("deadline %v after the resume, measured before the suspend", d.Sub(resumed))
		}
		return nil
	}
	if err := check(); err != nil {
		t.Fatalf("right after a suspend past the deadline: %v", err)
	}
	WaitFor(t, TTL+Slack, "renewed after the resume, or expired", func() error {
		if err := check(); err != nil {
			t.Fatal(err)
		}
		select {
		case <-s.Done():
			if !errors.Is(s.Err(), coord.ErrSessionExpired) {
				t.Fatalf("session ended with %v, want ErrSessionExpired", s.Err())
			}
			t.Logf("the session ended as expired")
			return nil
		default:
		}
		if d := s.Deadline(); s.Healthy() && d.After(resumed.Add(TTL/4)) {
			t.Logf("a keep-alive sent after the resume renewed the session")
			return nil
		}
		return errors.New("neither")
	})
}

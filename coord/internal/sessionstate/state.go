package sessionstate

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/kvstore/kvstore/clock"
)

// State is one session's state: until when it is known live, whether its
// last keep-alive succeeded, whether and why it ended, and the leadership
// and campaign of its election (campaign.go). L is the backend's record of
// a won election. Call Init before any other method.
type State[L any] struct {
	name  string      // the backend, prefixing errors ("etcdcoord")
	clock clock.Clock // the session's clock: the deadline is on it
	// ctx is canceled when the session ends (expired or closed); it stops
	// the backend's keep-alive loop, campaigns in flight and watches.
	ctx    context.Context
	cancel context.CancelFunc
	// spawn is the coordinator's: it runs f in a goroutine it counts and,
	// if owner is not nil, owner counts; false if it is closed.
	spawn func(owner *sync.WaitGroup, f func()) bool
	wg    sync.WaitGroup // the session's goroutines

	mu sync.Mutex // guards the fields below and the backend's own session fields
	// published is the deadline, readable without the lock; written only
	// with it held.
	published atomic.Pointer[clock.Instant]
	healthy   bool
	changed   chan struct{} // closed and replaced on every state change
	done      chan struct{} // closed when err is set
	err       error         // why the session ended; nil while live
	closing   bool          // Close was called
	leader    *L            // non-nil while this session leads
	campaign  *campaignRun  // the campaign in flight, nil if none
}

// Init sets a new session's state up: healthy, with a zero deadline. name
// prefixes the errors State makes; clk is the clock the deadline is on; ctx
// is the session's context and cancel cancels it (End does); spawn is the
// coordinator's way to run a goroutine (counted by owner too, if not nil),
// reporting false once the coordinator is closed.
func (s *State[L]) Init(name string, clk clock.Clock, ctx context.Context, cancel context.CancelFunc, spawn func(owner *sync.WaitGroup, f func()) bool) {
	s.name, s.clock = name, clk
	s.ctx, s.cancel, s.spawn = ctx, cancel, spawn
	s.healthy = true
	s.changed = make(chan struct{})
	s.done = make(chan struct{})
	s.published.Store(new(clock.Instant))
}

// Context returns the session's context, canceled when the session ends.
func (s *State[L]) Context() context.Context { return s.ctx }

// Lock locks the session's state (and the backend's session fields).
func (s *State[L]) Lock() { s.mu.Lock() }

// Unlock unlocks what Lock locked.
func (s *State[L]) Unlock() { s.mu.Unlock() }

// Deadline implements coord.Session. It takes no lock: nodes call it on
// every cached read.
func (s *State[L]) Deadline() clock.Instant { return *s.published.Load() }

// SetDeadlineLocked sets the deadline and publishes it to Deadline.
func (s *State[L]) SetDeadlineLocked(d clock.Instant) { s.published.Store(&d) }

// Changed implements coord.Session.
func (s *State[L]) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// Done implements coord.Session.
func (s *State[L]) Done() <-chan struct{} { return s.done }

// Err implements coord.Session.
func (s *State[L]) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// ErrLocked is Err with the lock held.
func (s *State[L]) ErrLocked() error { return s.err }

// Healthy implements coord.Session.
func (s *State[L]) Healthy() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.healthy && s.err == nil
}

// notifyLocked closes and replaces the Changed channel.
func (s *State[L]) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// KeptAliveLocked records a keep-alive that counted: the session is
// healthy, and Changed fires.
func (s *State[L]) KeptAliveLocked() {
	s.healthy = true
	s.notifyLocked()
}

// SetHealthy records a change of health, signaling Changed, unless the
// session has ended.
func (s *State[L]) SetHealthy(healthy bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.SetHealthyLocked(healthy)
}

// SetHealthyLocked is SetHealthy with the lock held.
func (s *State[L]) SetHealthyLocked(healthy bool) {
	if s.err == nil && s.healthy != healthy {
		s.healthy = healthy
		s.notifyLocked()
	}
}

// End ends the session with err unless it has ended already, and reports
// whether this call ended it. The deadline is pulled back to now: the
// session is no longer known live. The session's context is canceled.
func (s *State[L]) End(err error) bool {
	s.mu.Lock()
	first := s.err == nil
	if first {
		s.err = err
		s.healthy = false
		if now := s.clock.Now(); s.Deadline().After(now) {
			s.SetDeadlineLocked(now)
		}
		close(s.done)
		s.notifyLocked()
	}
	s.mu.Unlock()
	s.cancel()
	return first
}

// BeginClose reports whether this is the session's first Close: Close is
// idempotent, and later calls return nil at once.
func (s *State[L]) BeginClose() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.closing = true
	return true
}

// Go runs f as a goroutine owned by the session (and its coordinator). It
// reports false, running nothing, once the session has ended.
func (s *State[L]) Go(f func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return false
	}
	return s.spawn(&s.wg, f)
}

// AwaitGoroutines waits for the session's goroutines (Go) to finish, and
// then for also to be closed if it is not nil, bounded by ctx. What is left
// when ctx ends is blocked on the coordinator's client, which its Close
// ends.
func (s *State[L]) AwaitGoroutines(ctx context.Context, also <-chan struct{}) error {
	waited := make(chan struct{})
	waitAll := func() {
		s.wg.Wait()
		if also != nil {
			<-also
		}
		close(waited)
	}
	if !s.spawn(nil, waitAll) {
		waitAll() // the coordinator is closed: nothing can block for long
	}
	select {
	case <-waited:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s: close session: waiting for goroutines: %w", s.name, ctx.Err())
	}
}

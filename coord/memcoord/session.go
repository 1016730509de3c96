package memcoord

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kvstore/kvstore/clock"
	"github.com/kvstore/kvstore/coord"
)

// minExpiryWait is the shortest wait for the local deadline: a clock
// running slower than the time package would otherwise wake the loop ever
// closer to it.
const minExpiryWait = time.Millisecond

// session is a coord.Session on one server session.
type session struct {
	c   *Coordinator
	sid int64 // the server's session id
	ttl time.Duration

	// ctx is canceled when the session ends (expired or closed); it stops
	// the keep-alive loop, campaigns and watches.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // this session's goroutines
	// turn is held by the Campaign in flight (1-buffered): one at a time.
	turn chan struct{}

	mu       sync.Mutex    // guards the fields below
	deadline clock.Instant // on c.cfg.Clock
	// published is deadline, readable without the lock.
	published atomic.Pointer[clock.Instant]
	healthy   bool
	changed   chan struct{} // closed and replaced on every state change
	done      chan struct{} // closed when err is set
	err       error         // why the session ended; nil while live
	closing   bool          // Close was called
	leader    int64         // the epoch this session won; 0 if it does not lead
	// stopCampaign cancels the Campaign in flight; nil if none.
	stopCampaign context.CancelFunc
}

var _ coord.Session = (*session)(nil)

// NewSession opens a server session of exactly ttl and starts its
// keep-alive loop, which sends a keep-alive every third of ttl. The first
// deadline is measured from when the request reached the server (in
// memory, when it was sent). It blocks while the connection is cut.
func (c *Coordinator) NewSession(ctx context.Context, ttl time.Duration) (coord.Session, error) {
	if ttl <= 0 {
		return nil, fmt.Errorf("memcoord: new session: ttl must be positive, got %v", ttl)
	}
	var sent clock.Instant
	var sid int64
	err := c.call(ctx, func() {
		sent = c.cfg.Clock.Now()
		sid = c.srv.openSessionLocked(c.name, ttl)
	})
	if err != nil {
		return nil, fmt.Errorf("memcoord: new session: %w", err)
	}
	s := &session{
		c:        c,
		sid:      sid,
		ttl:      ttl,
		turn:     make(chan struct{}, 1),
		deadline: sent.Add(c.liveFor(ttl)),
		healthy:  true,
		changed:  make(chan struct{}),
		done:     make(chan struct{}),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	first := s.deadline
	s.published.Store(&first)
	if !c.goFunc(&s.wg, s.keepAlive) {
		s.cancel()
		c.srv.mu.Lock()
		c.srv.revokeLocked(sid)
		c.srv.mu.Unlock()
		return nil, fmt.Errorf("memcoord: new session: %w", errClosed)
	}
	return s, nil
}

// Deadline implements coord.Session. It takes no lock: nodes call it on
// every cached read.
func (s *session) Deadline() clock.Instant { return *s.published.Load() }

// setDeadlineLocked sets the deadline and publishes it to Deadline. s.mu
// must be held.
func (s *session) setDeadlineLocked(d clock.Instant) {
	s.deadline = d
	s.published.Store(&d)
}

// untilDeadline is how long until the deadline, on the session's clock.
func (s *session) untilDeadline() time.Duration {
	return s.Deadline().Sub(s.c.cfg.Clock.Now())
}

// Changed implements coord.Session.
func (s *session) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// Done implements coord.Session.
func (s *session) Done() <-chan struct{} { return s.done }

// Err implements coord.Session.
func (s *session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Healthy implements coord.Session.
func (s *session) Healthy() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.healthy && s.err == nil
}

// notifyLocked closes and replaces the Changed channel. s.mu must be held.
func (s *session) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// end ends the session with err unless it has ended already, and reports
// whether this call ended it. The deadline is pulled back to now: the
// session is no longer known live.
func (s *session) end(err error) bool {
	s.mu.Lock()
	first := s.err == nil
	if first {
		s.err = err
		s.healthy = false
		s.leader = 0
		if now := s.c.cfg.Clock.Now(); s.deadline.After(now) {
			s.setDeadlineLocked(now)
		}
		close(s.done)
		s.notifyLocked()
	}
	s.mu.Unlock()
	s.cancel()
	return first
}

// setHealthy records a state change and signals Changed.
func (s *session) setHealthy(healthy bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil && s.healthy != healthy {
		s.healthy = healthy
		s.notifyLocked()
	}
}

// renewed records a successful keep-alive sent at sent.
func (s *session) renewed(sent clock.Instant) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return
	}
	s.setDeadlineLocked(sent.Add(s.c.liveFor(s.ttl)))
	s.healthy = true
	s.notifyLocked()
}

// keepAlive is the session's keep-alive loop, the only writer of the
// deadline. Every third of the TTL, and at once when a cut connection
// heals, it sends a keep-alive; a cut turns the session unhealthy at once.
// When the deadline passes with no renewal the session ends as expired,
// whatever the server may still think (a node told its session is gone
// never gets it back), and, if the server is reachable, revokes it there.
// It runs until the session ends or the Coordinator closes.
func (s *session) keepAlive() {
	timer := time.NewTimer(s.ttl / 3)
	defer timer.Stop()
	expiry := time.NewTimer(max(s.untilDeadline(), minExpiryWait))
	defer expiry.Stop()
	for {
		up, linkChanged := s.c.srv.linkState(s.c.name)
		if !up {
			s.setHealthy(false)
		}
		renew := true
		select {
		case <-s.ctx.Done():
			return
		case <-s.c.done:
			s.end(fmt.Errorf("%w: coordinator closed, session left to expire by its TTL", coord.ErrSessionClosed))
			return
		case <-linkChanged:
			// Cut: the loop's top says so. Healed: renew at once.
			renew = !up
		case <-timer.C:
			timer.Reset(s.ttl / 3)
		case <-expiry.C:
			renew = false
		}
		if !s.c.cfg.Clock.Now().Before(s.Deadline()) {
			s.end(coord.ErrSessionExpired)
			s.c.tryCall(func() { s.c.srv.revokeLocked(s.sid) })
			return
		}
		if renew {
			s.renew()
		}
		expiry.Reset(max(s.untilDeadline(), minExpiryWait))
	}
}

// renew sends one keep-alive, if the connection is up. The server not
// holding the session any more ends it as expired.
func (s *session) renew() {
	var sent clock.Instant
	var err error
	if !s.c.tryCall(func() {
		sent = s.c.cfg.Clock.Now()
		err = s.c.srv.keepAliveLocked(s.sid)
	}) {
		s.setHealthy(false)
		return
	}
	if err != nil {
		s.end(coord.ErrSessionExpired)
		return
	}
	s.renewed(sent)
}

// goFunc runs f as a goroutine owned by the session (and the Coordinator). It
// reports false, running nothing, once the session has ended.
func (s *session) goFunc(f func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return false
	}
	return s.c.goFunc(&s.wg, f)
}

// call runs f on the server as the Coordinator's call does, and also stops
// waiting when the session ends (then returns why it ended).
func (s *session) call(ctx context.Context, f func()) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel)
	defer stop()
	err := s.c.call(ctx, f)
	if err != nil && s.ctx.Err() != nil {
		if serr := s.Err(); serr != nil {
			return serr
		}
	}
	return err
}

// opErr wraps an error of op. If the server no longer holds the session,
// it has expired: it ends, and the error says so.
func (s *session) opErr(op string, err error) error {
	if errors.Is(err, errSessionGone) {
		s.end(coord.ErrSessionExpired)
		return fmt.Errorf("memcoord: %s: %w: %w", op, coord.ErrSessionExpired, err)
	}
	return fmt.Errorf("memcoord: %s: %w", op, err)
}

// Register implements coord.Session: the entry is the session's, and goes
// with it.
func (s *session) Register(ctx context.Context, m coord.Member) error {
	op := "register " + m.ID
	if m.ID == "" {
		return errors.New("memcoord: register: empty member id")
	}
	if err := s.Err(); err != nil {
		return fmt.Errorf("memcoord: %s: %w", op, err)
	}
	var rerr error
	if err := s.call(ctx, func() { rerr = s.c.srv.registerLocked(s.sid, m) }); err != nil {
		return s.opErr(op, err)
	}
	if rerr != nil {
		return s.opErr(op, rerr)
	}
	return nil
}

// Watch implements coord.Session. The watch delivers nothing while the
// connection is cut, and the current View once it heals; it also stops
// when the session ends or the Coordinator closes.
func (s *session) Watch(ctx context.Context) <-chan coord.View {
	out := make(chan coord.View, 1)
	if !s.goFunc(func() {
		defer close(out)
		s.watch(ctx, out)
	}) {
		close(out)
	}
	return out
}

// watch sends every new View to out until ctx ends, the session ends or the
// Coordinator closes.
func (s *session) watch(ctx context.Context, out chan coord.View) {
	var last coord.View
	sent := false
	for {
		var v coord.View
		var changed <-chan struct{}
		ran, linkChanged := s.c.srv.do(s.c.name, func() {
			v = s.c.srv.viewLocked()
			changed = s.c.srv.changed
		})
		if ran && (!sent || !viewsEqual(v, last)) {
			coord.SendLatest(out, v)
			last, sent = v, true
		}
		select {
		case <-ctx.Done():
			return
		case <-s.ctx.Done():
			return
		case <-s.c.done:
			return
		case <-changed:
		case <-linkChanged:
		}
	}
}

// Close implements coord.Session: it ends the session, stops its
// goroutines, and revokes it on the server (its membership and election
// entries vanish in one change), waiting while the connection is cut,
// bounded by ctx. A session that had already ended deletes nothing. Close
// is idempotent; later calls return nil.
func (s *session) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return nil
	}
	s.closing = true
	s.mu.Unlock()

	var err error
	if s.end(coord.ErrSessionClosed) {
		err = s.c.call(ctx, func() { s.c.srv.revokeLocked(s.sid) })
		if errors.Is(err, errClosed) {
			err = nil // left to expire by its TTL, as Coordinator.Close does
		}
	}
	// Every goroutine of the session stops when its ctx ends, at once.
	s.wg.Wait()
	if err != nil {
		return fmt.Errorf("memcoord: close session: revoke: %w", err)
	}
	return nil
}

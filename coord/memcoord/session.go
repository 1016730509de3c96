package memcoord

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kvstore/kvstore/clock"
	"github.com/kvstore/kvstore/coord"
	"github.com/kvstore/kvstore/coord/internal/sessionstate"
)

// minExpiryWait is the shortest wait for the local deadline: a clock
// running slower than the time package would otherwise wake the loop ever
// closer to it.
const minExpiryWait = time.Millisecond

// session is a coord.Session on one server session. Its State (deadline
// on c.cfg.Clock, health, end, leadership, campaign) is shared with
// etcdcoord's and zkcoord's.
type session struct {
	sessionstate.State[leadership]

	c   *Coordinator
	sid int64 // the server's session id
	ttl time.Duration
}

// leadership is the election entry this session won.
type leadership struct {
	epoch int64 // the entry's epoch: the revision that created it
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
	s := &session{c: c, sid: sid, ttl: ttl}
	sctx, scancel := context.WithCancel(context.Background())
	s.Init("memcoord", c.cfg.Clock, sctx, scancel, c.routines.Go)
	s.Lock()
	s.SetDeadlineLocked(sent.Add(c.liveFor(ttl)))
	s.Unlock()
	if !s.Go(s.keepAlive) {
		scancel()
		c.srv.mu.Lock()
		c.srv.revokeLocked(sid)
		c.srv.mu.Unlock()
		return nil, fmt.Errorf("memcoord: new session: %w", errClosed)
	}
	return s, nil
}

// untilDeadline is how long until the deadline, on the session's clock.
func (s *session) untilDeadline() time.Duration {
	return s.Deadline().Sub(s.c.cfg.Clock.Now())
}

// renewed records a successful keep-alive sent at sent.
func (s *session) renewed(sent clock.Instant) {
	s.Lock()
	defer s.Unlock()
	if s.ErrLocked() != nil {
		return
	}
	s.SetDeadlineLocked(sent.Add(s.c.liveFor(s.ttl)))
	s.KeptAliveLocked()
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
			s.SetHealthy(false)
		}
		renew := true
		select {
		case <-s.Context().Done():
			return
		case <-s.c.done:
			s.End(fmt.Errorf("%w: coordinator closed, session left to expire by its TTL", coord.ErrSessionClosed))
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
			s.End(coord.ErrSessionExpired)
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
		s.SetHealthy(false)
		return
	}
	if err != nil {
		s.End(coord.ErrSessionExpired)
		return
	}
	s.renewed(sent)
}

// call runs f on the server as the Coordinator's call does, and also stops
// waiting when the session ends (then returns why it ended).
func (s *session) call(ctx context.Context, f func()) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.Context(), cancel)
	defer stop()
	err := s.c.call(ctx, f)
	if err != nil && s.Context().Err() != nil {
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
		s.End(coord.ErrSessionExpired)
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
	if !s.Go(func() {
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
		case <-s.Context().Done():
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
	if !s.BeginClose() {
		return nil
	}
	var err error
	if s.End(coord.ErrSessionClosed) {
		err = s.c.call(ctx, func() { s.c.srv.revokeLocked(s.sid) })
		if errors.Is(err, errClosed) {
			err = nil // left to expire by its TTL, as Coordinator.Close does
		}
	}
	if err != nil {
		err = fmt.Errorf("memcoord: close session: revoke: %w", err)
	}
	// Every goroutine of the session stops at once when it ends: the wait
	// is not bounded by ctx, so that none outlives Close.
	return errors.Join(err, s.AwaitGoroutines(context.WithoutCancel(ctx), nil))
}

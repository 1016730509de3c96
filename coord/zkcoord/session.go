package zkcoord

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/kvstore/kvstore/clock"
	"github.com/kvstore/kvstore/coord"
	"github.com/kvstore/kvstore/coord/internal/sessionstate"
)

// retryInterval is how soon a failed keep-alive or ZooKeeper call is retried.
const retryInterval = 100 * time.Millisecond

// session is a coord.Session on one ZooKeeper session (one link). Its State
// (deadline on c.cfg.Clock, health, end, leadership, campaign) is shared
// with etcdcoord's.
type session struct {
	sessionstate.State[leadership]

	c    *Coordinator
	l    *link
	sid  int64         // the ZooKeeper session id; any other id means this one is gone
	kick chan struct{} // 1-buffered: renew now (the connection came back)

	// started is set once l and sid are; events before it concern the
	// session being set up.
	started atomic.Bool
	// linkClosed is closed once the link's close or abandon has returned.
	linkClosed chan struct{}

	linkOnce sync.Once // the link is closed or abandoned once

	// Guarded by the State's lock:
	tau  time.Duration // the session timeout negotiated on the current connection
	gen  int           // connection generation: +1 on every loss and every new connection
	last *touch        // the latest answered keep-alive on this generation
}

// touch is one answered keep-alive.
type touch struct {
	gen            int
	sent, answered clock.Instant
}

// leadership is the election znode this session won.
type leadership struct {
	path  string
	epoch int64 // the znode's czxid
}

var _ coord.Session = (*session)(nil)

// NewSession opens a ZooKeeper connection asking for a session timeout of
// ttl (the ensemble clamps it to its [minSessionTimeout, maxSessionTimeout],
// by default 2 to 20 ticks) and starts the session's keep-alive loop. The
// first deadline is measured from when the connect request was written: the
// ensemble's leader creates the session after that.
func (c *Coordinator) NewSession(ctx context.Context, ttl time.Duration) (coord.Session, error) {
	if ttl <= 0 {
		return nil, fmt.Errorf("zkcoord: new session: ttl must be positive, got %v", ttl)
	}
	s := &session{
		c:          c,
		kick:       make(chan struct{}, 1),
		linkClosed: make(chan struct{}),
	}
	sctx, scancel := context.WithCancel(context.Background())
	s.Init("zkcoord", c.cfg.Clock, sctx, scancel, c.routines.Go)
	cctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	defer cancel()
	l, err := dial(cctx, c.cfg, ttl, s.onEvent)
	if err != nil {
		scancel()
		return nil, fmt.Errorf("zkcoord: new session: %w", err)
	}
	s.l = l
	info := l.info()
	s.sid = info.sid
	s.Lock()
	s.tau = info.timeout
	s.SetDeadlineLocked(info.sent.Add(c.liveFor(info.timeout)))
	s.Unlock()
	s.started.Store(true)
	s.kick <- struct{}{} // the first keep-alive goes out at once

	c.mu.Lock()
	if c.routines.Closed() {
		c.mu.Unlock()
		s.End(coord.ErrSessionClosed)
		l.abandon()
		return nil, fmt.Errorf("zkcoord: new session: %w", errClosed)
	}
	c.sessions[s] = struct{}{}
	c.mu.Unlock()
	if !s.Go(s.keepAlive) {
		s.abandon()
		return nil, fmt.Errorf("zkcoord: new session: %w", errClosed)
	}
	return s, nil
}

// liveFor is how long after a proven touch the session is known live.
func (c *Coordinator) liveFor(tau time.Duration) time.Duration {
	return time.Duration(float64(tau) * (1 - c.cfg.DriftMargin))
}

// onEvent handles the connection's session events, on the client's event
// loop: it must not block.
func (s *session) onEvent(ev zk.Event) {
	if ev.Type != zk.EventSession {
		return
	}
	if !s.started.Load() {
		if ev.State == zk.StateDisconnected {
			s.SetHealthy(false)
		}
		return
	}
	switch ev.State {
	case zk.StateDisconnected, zk.StateConnecting:
		s.lost()
	case zk.StateHasSession:
		info := s.l.info()
		if info.sid != s.sid {
			// The client replaced an expired session by a new one.
			s.expired()
			return
		}
		s.reconnected(info)
		select {
		case s.kick <- struct{}{}:
		default:
		}
	case zk.StateExpired:
		s.expired()
	}
}

// lost records a lost connection: the session is in doubt at once.
func (s *session) lost() {
	s.Lock()
	defer s.Unlock()
	s.gen++
	s.last = nil
	s.SetHealthyLocked(false)
}

// reconnected records a new connection on which the ensemble revalidated
// the session: its leader touched it, with the timeout negotiated on this
// connection, after the connect request was written. That timeout applies
// from now on, even if it is shorter than the last one.
func (s *session) reconnected(info connInfo) {
	s.Lock()
	defer s.Unlock()
	s.gen++
	s.last = nil
	s.tau = info.timeout
	if s.ErrLocked() != nil || !s.c.cfg.Clock.Now().Before(s.Deadline()) {
		return // ended, or about to end by its deadline: never resurrected
	}
	s.SetDeadlineLocked(info.sent.Add(s.c.liveFor(info.timeout)))
	s.KeptAliveLocked()
}

// expired ends the session as expired by the ensemble. It refuses further
// dials at once, before the client can open a new session and send queued
// requests in it, then drops the connection.
func (s *session) expired() {
	s.l.refuse()
	s.End(coord.ErrSessionExpired)
	s.closeLink(false)
}

// closeLink closes the link once: gracefully (closeSession, so the ensemble
// deletes the ephemeral znodes at once) or abandoned (as a crash would). It
// runs in a goroutine owned by the Coordinator, since a graceful close can
// take a second and may be asked for from the client's event loop.
func (s *session) closeLink(graceful bool) {
	s.linkOnce.Do(func() {
		f := s.l.abandon
		if graceful {
			f = s.l.close
		}
		run := func() {
			f()
			close(s.linkClosed)
		}
		if !s.c.routines.Go(nil, run) {
			f = s.l.abandon // the Coordinator is closing: nothing may linger
			run()
		}
	})
}

// abandon ends the session as closed without telling the ensemble, so its
// ephemeral znodes live until the session times out, as after a crash.
func (s *session) abandon() {
	s.End(coord.ErrSessionClosed)
	s.linkOnce.Do(func() {
		s.l.abandon()
		close(s.linkClosed)
	})
	s.c.mu.Lock()
	delete(s.c.sessions, s)
	s.c.mu.Unlock()
}

// untilDeadline is how long until the deadline, on the session's clock.
// A timer set for it fires late if the machine is suspended meanwhile
// (timers run on the monotonic clock); whoever it wakes compares readings
// of the session's clock again.
func (s *session) untilDeadline() time.Duration {
	return s.Deadline().Sub(s.c.cfg.Clock.Now())
}

// interval is the keep-alive period, a quarter of the session timeout: at
// least half a tick, the wait between the leader's pings, at which a
// follower server reports the touches it saw (the pings come at least, not
// at most, half a tick apart: see the package doc on the margin).
func (s *session) interval() time.Duration {
	s.Lock()
	defer s.Unlock()
	return s.tau / 4
}

// answered records keep-alive k, sent at sent on connection generation gen
// and answered now, and reports whether it counted.
//
// A sync answered by a follower server proves that the session existed, not
// that the leader, which alone expires sessions, was told of the touch: the
// follower reports touches at the leader's next ping, and a follower that
// fails first loses them. So the deadline moves on the touch of keep-alive
// k-1 on the same connection, once keep-alive k, sent at least a quarter
// timeout (>= half a tick, the leader's wait between pings) after k-1's
// answer, comes back: a ping reached the follower in between, and its
// answer took k-1's touch to the leader ahead of k's sync on the
// follower's one connection to it, before the current deadline. The
// margin is thin at the minimum timeout of 2 ticks (package doc). (A
// reconnect proves a touch by itself: see reconnected.)
func (s *session) answered(gen int, sent clock.Instant) bool {
	now := s.c.cfg.Clock.Now()
	s.Lock()
	defer s.Unlock()
	if s.ErrLocked() != nil || gen != s.gen || !now.Before(s.Deadline()) {
		s.SetHealthyLocked(false)
		return false
	}
	if p := s.last; p != nil && p.gen == gen && sent.Sub(p.answered) >= s.tau/4 {
		if d := p.sent.Add(s.c.liveFor(s.tau)); d.After(s.Deadline()) {
			s.SetDeadlineLocked(d)
		}
	}
	s.last = &touch{gen: gen, sent: sent, answered: now}
	s.KeptAliveLocked()
	return true
}

// keepAlive is the session's keep-alive loop. Every quarter timeout (at once
// after a reconnect) it sends a sync, which touches the session like any
// request and, unlike a ping, needs the server to reach the ensemble's
// leader. If the deadline passes with no renewal, the session ends as
// expired, whatever the ensemble may still think: a node that was told its
// session is gone never gets it back (as Curator's LOST state).
func (s *session) keepAlive() {
	timer := time.NewTimer(s.interval())
	defer timer.Stop()
	expiry := time.NewTimer(s.untilDeadline())
	defer expiry.Stop()
	for {
		select {
		case <-s.Context().Done():
			return
		case <-expiry.C:
			if s.c.cfg.Clock.Now().Before(s.Deadline()) {
				expiry.Reset(s.untilDeadline())
				continue
			}
			s.End(coord.ErrSessionExpired)
			// The ensemble may still hold the session: closeSession
			// deletes its znodes now rather than a timeout later.
			s.closeLink(true)
			return
		case <-s.kick:
		case <-timer.C:
		}
		next := s.interval()
		if !s.renew() {
			next = retryInterval
		}
		expiry.Reset(s.untilDeadline())
		timer.Reset(next)
	}
}

// renew sends one sync and waits for its answer or for the session to end.
// An answer slower than the keep-alive period (a stalled server) turns
// Healthy false and drops the connection, so the client moves to another
// server while the deadline still allows; the wait goes on. It reports
// whether the keep-alive counted.
func (s *session) renew() bool {
	s.Lock()
	gen := s.gen
	s.Unlock()
	sent := s.c.cfg.Clock.Now()
	res := make(chan error, 1)
	if !s.c.routines.Go(nil, func() {
		_, err := s.l.conn.Sync(s.c.paths.prefix)
		res <- err
	}) {
		return false
	}
	slow := time.NewTimer(s.interval())
	defer slow.Stop()
	for {
		select {
		case <-slow.C:
			s.SetHealthy(false)
			s.l.drop()
			continue
		case err := <-res:
			switch {
			case err == nil && s.l.info().sid == s.sid:
				return s.answered(gen, sent)
			case errors.Is(err, zk.ErrSessionExpired):
				s.expired()
			default:
				s.SetHealthy(false)
			}
		case <-s.Context().Done():
		}
		return false
	}
}

// call runs a blocking ZooKeeper call for op, bounded by ctx and by the
// session's life, and wraps its error. A ZooKeeper ErrSessionExpired ends
// the session.
func (s *session) call(ctx context.Context, op string, f func() error) error {
	if err := s.Err(); err != nil {
		return fmt.Errorf("zkcoord: %s: %w", op, err)
	}
	ctx, stop := s.bound(ctx)
	defer stop()
	err := do(ctx, s.c, f)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, zk.ErrSessionExpired):
		s.expired()
		return fmt.Errorf("zkcoord: %s: %w: %w", op, coord.ErrSessionExpired, err)
	case s.Context().Err() != nil && errors.Is(err, context.Canceled):
		return fmt.Errorf("zkcoord: %s: %w", op, s.Err())
	}
	return fmt.Errorf("zkcoord: %s: %w", op, err)
}

// bound returns ctx, also canceled when the session ends.
func (s *session) bound(ctx context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(s.Context(), cancel)
	return ctx, func() { stop(); cancel() }
}

// Register creates the ephemeral znode members/<id> holding addr. A znode
// left by an earlier session (a crashed incarnation of the same node) is
// replaced, and so is this session's own if the address changed: an
// address never changes in place, so watchers see every change as a child
// event.
func (s *session) Register(ctx context.Context, m coord.Member) error {
	if m.ID == "" || containsSlash(m.ID) {
		return fmt.Errorf("zkcoord: register: bad member id %q (empty or containing /)", m.ID)
	}
	op := "register " + m.ID
	p := s.c.paths.members + "/" + m.ID
	for {
		err := s.call(ctx, op, func() error {
			_, err := s.l.conn.Create(p, []byte(m.Addr), zk.FlagEphemeral, s.c.acl)
			return err
		})
		if err == nil {
			return nil
		}
		if !errors.Is(err, zk.ErrNodeExists) {
			return err
		}
		var data []byte
		var stat *zk.Stat
		err = s.call(ctx, op, func() (err error) {
			data, stat, err = s.l.conn.Get(p)
			return err
		})
		switch {
		case errors.Is(err, zk.ErrNoNode):
			continue
		case err != nil:
			return err
		case stat.EphemeralOwner == s.sid && string(data) == m.Addr:
			return nil
		}
		err = s.call(ctx, op, func() error { return s.l.conn.Delete(p, stat.Version) })
		if err != nil && !errors.Is(err, zk.ErrNoNode) && !errors.Is(err, zk.ErrBadVersion) {
			return err
		}
	}
}

func containsSlash(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == '/' {
			return true
		}
	}
	return false
}

// Campaign enters the election as id and blocks until this session leads,
// then returns the epoch (the czxid of its election znode). The ZooKeeper
// calls run in a goroutine owned by the session, which withdraws the
// candidacy when nobody waits for the result any more. A second Campaign on
// the same session waits for the first to finish, then returns at once with
// the same epoch if the first won.
func (s *session) Campaign(ctx context.Context, id string) (int64, error) {
	return s.State.Campaign(ctx, id, s.elect)
}

// elect runs one campaign: a candidacy that enters the election, waits for
// its turn and claims the leadership, which is withdrawn unless the win is
// handed over. A session that leads already has won.
func (s *session) elect(ctx context.Context, id string) sessionstate.Attempt[leadership] {
	if held := s.Leader(); held != nil {
		return sessionstate.Attempt[leadership]{Won: held, Epoch: held.epoch} // a second Campaign of a leading session
	}
	cand := newCandidacy(s, id)
	held, err := cand.run(ctx)
	a := sessionstate.Attempt[leadership]{Err: err, GiveBack: cand.withdraw}
	if err == nil {
		a.Won, a.Epoch = held, held.epoch
	}
	return a
}

// Resign cancels a campaign in flight (whose goroutine then withdraws the
// candidacy) and waits for it, then deletes the election znode if this
// session leads. If the delete fails the session still counts as leading,
// so Resign can be retried.
func (s *session) Resign(ctx context.Context) error {
	return s.State.Resign(ctx, func(ctx context.Context, l *leadership) error {
		err := s.call(ctx, "resign", func() error { return s.l.conn.Delete(l.path, 0) })
		if err != nil && !errors.Is(err, zk.ErrNoNode) {
			return err
		}
		return nil
	})
}

// SetVoters writes the voter record in one multi-op: a version check of this
// session's election znode (it must still exist: sequential names are never
// reused, and no older candidate can appear after it won) and a versioned
// setData of the record. The failing op tells ErrNotLeader from ErrConflict.
// The record it writes is sealed.
func (s *session) SetVoters(ctx context.Context, epoch int64, prev coord.Voters, ids []string) error {
	if err := s.Err(); err != nil {
		return fmt.Errorf("zkcoord: set voters: %w: %w", coord.ErrNotLeader, err)
	}
	l := s.Leader()
	if epoch <= 0 || l == nil || l.epoch != epoch {
		return fmt.Errorf("zkcoord: set voters: session does not lead with epoch %d: %w", epoch, coord.ErrNotLeader)
	}
	if prev.Version <= 0 || prev.Version > 1<<31 {
		return fmt.Errorf("zkcoord: set voters: version %d was never read from a record: %w", prev.Version, coord.ErrConflict)
	}
	val, err := coord.EncodeVoters(ids, false)
	if err != nil {
		return fmt.Errorf("zkcoord: %w", err)
	}
	err = s.call(ctx, "set voters", func() error {
		resp, err := s.l.conn.Multi(
			&zk.CheckVersionRequest{Path: l.path, Version: 0},
			&zk.SetDataRequest{Path: s.c.paths.voters, Data: val, Version: int32(prev.Version - 1)},
		)
		if err != nil {
			return &multiError{resp: resp, err: err}
		}
		return nil
	})
	if err == nil {
		return nil
	}
	var me *multiError
	if errors.As(err, &me) && len(me.resp) == 2 {
		resp := me.resp
		if resp[0].Error != nil {
			return fmt.Errorf("zkcoord: set voters: election znode %s is gone: %w", l.path, coord.ErrNotLeader)
		}
		if resp[1].Error != nil {
			return fmt.Errorf("zkcoord: set voters: version %d is stale (%w): %w", prev.Version, resp[1].Error, coord.ErrConflict)
		}
	}
	return err
}

// multiError carries a failed multi-op's per-op results with its error, out
// of the goroutine that ran it.
type multiError struct {
	resp []zk.MultiResponse
	err  error
}

func (e *multiError) Error() string { return e.err.Error() }
func (e *multiError) Unwrap() error { return e.err }

// Watch implements coord.Session. The watch also stops when the session ends.
func (s *session) Watch(ctx context.Context) <-chan coord.View {
	out := make(chan coord.View, 1)
	wctx, stop := s.bound(ctx)
	if !s.Go(func() {
		defer close(out)
		defer stop()
		s.watchView(wctx, out)
	}) {
		stop()
		close(out)
	}
	return out
}

// Close ends the session: it stops the keep-alive loop, campaigns and
// watches, deletes the election znode if leading, and closes the connection
// with a closeSession request, which deletes every ephemeral znode at once;
// all bounded by ctx. A session that had already ended deletes nothing.
// Close is idempotent; later calls return nil.
func (s *session) Close(ctx context.Context) error {
	if !s.BeginClose() {
		return nil
	}
	// closeSession removes the election znode with every other ephemeral.
	// After an expiry the link is closed already.
	s.End(coord.ErrSessionClosed)
	s.closeLink(true)
	s.TakeLeader()
	s.c.mu.Lock()
	delete(s.c.sessions, s)
	s.c.mu.Unlock()
	return s.AwaitGoroutines(ctx, s.linkClosed)
}

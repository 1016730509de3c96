package etcdcoord

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/kvstore/kvstore/clock"
	"github.com/kvstore/kvstore/coord"
	"github.com/kvstore/kvstore/coord/internal/sessionstate"
)

// retryInterval is how soon a failed keep-alive is retried (never later than
// the deadline).
const retryInterval = 150 * time.Millisecond

// session is a coord.Session on one etcd lease. Its State (deadline on
// c.cfg.Clock, health, end, leadership, campaign) is shared with zkcoord's.
type session struct {
	sessionstate.State[leadership]

	c     *Coordinator
	lease clientv3.LeaseID
	cs    *concurrency.Session // wraps lease for the election; its own KeepAlive never moves deadline

	ttl time.Duration // TTL etcd granted, from the latest response; guarded by the State's lock
}

// leadership is the election key this session won.
type leadership struct {
	key string
	rev int64 // the key's create revision: the epoch
}

var _ coord.Session = (*session)(nil)

// NewSession grants a lease of ttl, rounded up to whole seconds (etcd may
// grant more: its minimum is 1.5 election timeouts), and starts the session's
// keep-alive loop. The first deadline is measured from when Grant was sent.
func (c *Coordinator) NewSession(ctx context.Context, ttl time.Duration) (coord.Session, error) {
	if ttl <= 0 {
		return nil, fmt.Errorf("etcdcoord: new session: ttl must be positive, got %v", ttl)
	}
	secs := max(int64(math.Ceil(ttl.Seconds())), 1)
	var sent clock.Instant
	var resp *clientv3.LeaseGrantResponse
	// A grant whose answer is lost leaves a lease nobody keeps alive: it
	// expires by its TTL.
	err := c.retry(ctx, func(ctx context.Context) error {
		var err error
		sent = c.cfg.Clock.Now()
		resp, err = c.client.Grant(ctx, secs)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("etcdcoord: new session: grant lease: %w", err)
	}
	sctx, cancel := context.WithCancel(context.Background())
	cs, err := concurrency.NewSession(c.client, concurrency.WithLease(resp.ID), concurrency.WithContext(sctx))
	if err != nil {
		cancel()
		c.revokeBestEffort(ctx, resp.ID)
		return nil, fmt.Errorf("etcdcoord: new session: %w", err)
	}
	granted := time.Duration(resp.TTL) * time.Second
	s := &session{c: c, lease: resp.ID, cs: cs, ttl: granted}
	s.Init("etcdcoord", c.cfg.Clock, sctx, cancel, c.routines.Go)
	s.Lock()
	s.SetDeadlineLocked(sent.Add(c.liveFor(granted)))
	s.Unlock()
	if !s.Go(s.keepAlive) {
		cancel()
		cs.Orphan()
		c.revokeBestEffort(ctx, resp.ID)
		return nil, errors.New("etcdcoord: new session: coordinator closed")
	}
	return s, nil
}

// liveFor is how long after a keep-alive is sent the session is known live.
func (c *Coordinator) liveFor(ttl time.Duration) time.Duration {
	return time.Duration(float64(ttl) * (1 - c.cfg.DriftMargin))
}

func (c *Coordinator) revokeBestEffort(ctx context.Context, id clientv3.LeaseID) {
	_, _ = c.client.Revoke(ctx, id)
}

// renewed records a successful keep-alive sent at sent.
func (s *session) renewed(sent clock.Instant, ttl time.Duration) {
	s.Lock()
	defer s.Unlock()
	if s.ErrLocked() != nil {
		return
	}
	s.ttl = ttl
	s.SetDeadlineLocked(sent.Add(s.c.liveFor(ttl)))
	s.KeptAliveLocked()
}

// keepAlive is the session's own keep-alive loop; the only writer of the
// deadline. It runs until the session ends or the client closes.
func (s *session) keepAlive() {
	timer := time.NewTimer(s.interval())
	defer timer.Stop()
	for s.Context().Err() == nil {
		_, connChanged := s.c.conn.get()
		select {
		case <-s.Context().Done():
			return
		case <-s.c.client.Ctx().Done():
			s.End(fmt.Errorf("%w: coordinator closed, lease left to expire by its TTL", coord.ErrSessionClosed))
			return
		case <-connChanged:
			if ready, _ := s.c.conn.get(); !ready {
				s.SetHealthy(false)
				continue
			}
			// Reconnected: renew now rather than at the next tick.
		case <-timer.C:
		}
		timer.Reset(s.renew())
	}
}

// keepAlivesPerTTL is how many keep-alives are sent per granted TTL. The
// deadline is the last answered one's send time plus 0.9 TTL (with the
// default DriftMargin of 0.1), so after the
// coordinator stops answering (its leader paused or killed: nothing renews
// a lease until the other members elect another) the session is known
// live for at least 0.9 TTL - TTL/keepAlivesPerTTL more: with a third of
// the TTL, as etcd's own client keeps leases alive, a 2 s session rode out
// only 1.13 s of an etcd election in the worst case; with a sixth, 1.47 s.
const keepAlivesPerTTL = 6

// interval is the keep-alive period: TTL/keepAlivesPerTTL of the granted TTL.
func (s *session) interval() time.Duration {
	s.Lock()
	defer s.Unlock()
	return s.ttl / keepAlivesPerTTL
}

// renew sends one keep-alive and returns how long to wait before the next.
// A keep-alive gets the interval to be answered, but at least an attempt's
// time (attemptTimeout): one sent to a member that stopped answering
// leaves time for more, each to the next member, before the deadline, and
// a slow but live member (a busy machine, short sessions) is not taken for
// a stopped one.
func (s *session) renew() time.Duration {
	interval := s.interval()
	sent := s.c.cfg.Clock.Now()
	ctx, cancel := context.WithTimeout(s.Context(), max(interval, attemptTimeout))
	resp, err := s.c.client.KeepAliveOnce(ctx, s.lease)
	cancel()
	switch {
	case err == nil && resp.TTL > 0:
		s.renewed(sent, time.Duration(resp.TTL)*time.Second)
		return s.interval()
	case err == nil || errors.Is(err, rpctypes.ErrLeaseNotFound):
		s.End(coord.ErrSessionExpired)
		return 0
	case s.Context().Err() != nil:
		return 0
	}
	s.SetHealthy(false)
	// At once after a keep-alive that went unanswered, retryInterval after
	// one that failed fast.
	wait := max(retryInterval-s.c.cfg.Clock.Now().Sub(sent), 0)
	if left := s.Deadline().Sub(s.c.cfg.Clock.Now()); left > 0 && left < wait {
		wait = left
	}
	return wait
}

// opErr wraps an error from an etcd call made for op. If etcd no longer knows
// the lease, the session has expired: it ends, and the error says so.
func (s *session) opErr(op string, err error) error {
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		s.End(coord.ErrSessionExpired)
		return fmt.Errorf("etcdcoord: %s: %w: %w", op, coord.ErrSessionExpired, err)
	}
	if serr := s.Err(); serr != nil && s.Context().Err() != nil && errors.Is(err, context.Canceled) {
		return fmt.Errorf("etcdcoord: %s: %w", op, serr)
	}
	return fmt.Errorf("etcdcoord: %s: %w", op, err)
}

// Register puts members/<id> -> addr, attached to the session's lease.
func (s *session) Register(ctx context.Context, m coord.Member) error {
	op := "register " + m.ID
	if m.ID == "" {
		return fmt.Errorf("etcdcoord: register: empty member id")
	}
	if err := s.Err(); err != nil {
		return fmt.Errorf("etcdcoord: %s: %w", op, err)
	}
	err := s.c.retry(ctx, func(ctx context.Context) error {
		_, err := s.c.client.Put(ctx, s.c.keys.members+m.ID, m.Addr, clientv3.WithLease(s.lease))
		return err
	})
	if err != nil {
		return s.opErr(op, err)
	}
	return nil
}

// Campaign enters the election as id and blocks until this session leads,
// then returns the epoch (the election key's create revision). It returns
// promptly when ctx ends or the session ends, whatever the connection does:
// the etcd calls run in a goroutine owned by the session, which gives the
// candidacy back (conditionally on its create revision) when nobody waits
// for the result any more. A second Campaign on the same session waits for
// the first to finish, then returns at once with the same epoch if the
// first won.
func (s *session) Campaign(ctx context.Context, id string) (int64, error) {
	return s.State.Campaign(ctx, id, s.elect)
}

// elect runs one campaign: it enters the election, waits for its turn and
// claims the leadership. A key it leaves behind is given back unless the
// win is handed over.
func (s *session) elect(ctx context.Context, id string) sessionstate.Attempt[leadership] {
	held, err := s.enterElection(ctx, id) // our election key, if the campaign left one
	if err == nil {
		err = s.waitTurn(ctx, held.rev)
	}
	var a sessionstate.Attempt[leadership]
	if err != nil {
		a.Err = s.opErr("campaign", err)
		if held == nil {
			// Campaign fails without cleaning up when its put's answer is
			// lost (ctx canceled while it was in flight, a connection
			// error): the put may have been applied all the same, leaving
			// a candidacy no one runs, which leads once the keys before
			// it go, for as long as this session lives. Delete it.
			s.withdrawLost()
		}
	} else if a.Err = s.claim(ctx, held); a.Err == nil {
		a.Won, a.Epoch = held, held.rev
	}
	if held != nil {
		// The client's context bounds this; the delete is conditional on
		// the create revision, so running late is harmless.
		a.GiveBack = func() { _ = s.resignKey(s.c.client.Ctx(), held) }
	}
	return a
}

// enterElection puts this session's election key (the election prefix and
// the lease in hex, as concurrency.Election names it, attached to the
// lease) with value id unless it exists, and returns it with its create
// revision. Retried attempts are safe: one that finds the key reads it.
func (s *session) enterElection(ctx context.Context, id string) (*leadership, error) {
	key := fmt.Sprintf("%s/%x", s.c.keys.election, s.lease)
	var resp *clientv3.TxnResponse
	err := s.c.retry(ctx, func(ctx context.Context) error {
		var err error
		resp, err = s.c.client.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, id, clientv3.WithLease(s.lease))).
			Else(clientv3.OpGet(key)).
			Commit()
		return err
	})
	if err != nil {
		return nil, err
	}
	if resp.Succeeded {
		return &leadership{key: key, rev: resp.Header.Revision}, nil
	}
	kvs := resp.Responses[0].GetResponseRange().GetKvs()
	if len(kvs) != 1 {
		return nil, fmt.Errorf("election key %s neither absent nor readable", key)
	}
	l := &leadership{key: key, rev: kvs[0].CreateRevision}
	if string(kvs[0].Value) != id {
		// Proclaim the new id, as concurrency.Election.Campaign does.
		err := s.c.retry(ctx, func(ctx context.Context) error {
			_, err := s.c.client.Txn(ctx).
				If(clientv3.Compare(clientv3.CreateRevision(key), "=", l.rev)).
				Then(clientv3.OpPut(key, id, clientv3.WithLease(s.lease))).
				Commit()
			return err
		})
		if err != nil {
			return l, err
		}
	}
	return l, nil
}

// waitTurn returns once no election key older than rev exists. It waits
// for the youngest older key's delete with a watch, but never longer than
// turnRecheck on one watch: a watch whose stream is on a member that
// stopped answering hears nothing, and the next read, and the next watch
// (on a stream of its own), go to the next member.
func (s *session) waitTurn(ctx context.Context, rev int64) error {
	opts := append(clientv3.WithLastCreate(), clientv3.WithMaxCreateRev(rev-1))
	for {
		var resp *clientv3.GetResponse
		err := s.c.retry(ctx, func(ctx context.Context) error {
			var err error
			resp, err = s.c.client.Get(ctx, s.c.keys.elecDir, opts...)
			return err
		})
		if err != nil {
			return err
		}
		if len(resp.Kvs) == 0 {
			return nil
		}
		if err := s.c.waitDelete(ctx, string(resp.Kvs[0].Key), resp.Header.Revision+1); err != nil {
			return err
		}
	}
}

// turnRecheck bounds one watch of waitTurn.
const turnRecheck = 500 * time.Millisecond

// waitDelete waits until key is deleted at rev or later, the watch breaks,
// turnRecheck passes, or ctx ends; only the last is an error. A watch not
// even created within turnRecheck marks its member stalled.
func (c *Coordinator) waitDelete(ctx context.Context, key string, rev int64) error {
	wctx, cancel := context.WithTimeout(ctx, turnRecheck)
	defer cancel()
	wctx, note := withPickNote(wctx)
	created := false
	for wr := range c.client.Watch(ownStream(wctx), key, clientv3.WithRev(rev), clientv3.WithCreatedNotify()) {
		if wr.Err() != nil {
			break
		}
		created = created || wr.Created
		for _, ev := range wr.Events {
			if ev.Type == mvccpb.DELETE {
				return nil
			}
		}
	}
	if !created && ctx.Err() == nil && errors.Is(wctx.Err(), context.DeadlineExceeded) {
		// Not even created in turnRecheck: its member does not answer.
		c.markStalled(note)
	}
	return ctx.Err()
}

// withdrawLost deletes this session's election key (named by its lease),
// if it exists and is still attached to the lease, for a Campaign that
// failed not knowing whether its put was applied. Only one Campaign of a
// session runs at a time, and this one does not lead, so the key is no
// one's. It tries until it succeeds or the session ends (the key then
// goes with the lease).
func (s *session) withdrawLost() {
	key := fmt.Sprintf("%s/%x", s.c.keys.election, s.cs.Lease())
	for s.Context().Err() == nil {
		ctx, cancel := context.WithTimeout(s.Context(), attemptTimeout)
		_, err := s.c.client.Txn(ctx).
			If(clientv3.Compare(clientv3.LeaseValue(key), "=", s.cs.Lease())).
			Then(clientv3.OpDelete(key)).
			Commit()
		cancel()
		if err == nil {
			return
		}
		select {
		case <-s.Context().Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// claim records a won election as this session's leadership after checking
// that the key still exists: Campaign also returns when the older candidates
// are gone even if our own key vanished meanwhile (lease expired).
func (s *session) claim(ctx context.Context, won *leadership) error {
	var resp *clientv3.GetResponse
	err := s.c.retry(ctx, func(ctx context.Context) error {
		var err error
		resp, err = s.c.client.Get(ctx, won.key)
		return err
	})
	if err != nil {
		return s.opErr("campaign: check election key", err)
	}
	if len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != won.rev {
		return fmt.Errorf("etcdcoord: campaign: election key %s vanished: %w", won.key, coord.ErrNotLeader)
	}
	if err := s.Claim(won); err != nil {
		return fmt.Errorf("etcdcoord: campaign: %w", err)
	}
	return nil
}

// resignKey deletes the election key if it still has the won create revision.
// The delete is conditional, so attempts are safe to repeat.
func (s *session) resignKey(ctx context.Context, l *leadership) error {
	err := s.c.retry(ctx, func(ctx context.Context) error {
		_, err := s.c.client.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(l.key), "=", l.rev)).
			Then(clientv3.OpDelete(l.key)).
			Commit()
		return err
	})
	if err != nil {
		return fmt.Errorf("etcdcoord: resign: %w", err)
	}
	return nil
}

// Resign cancels a campaign in flight (whose goroutine then withdraws the
// candidacy) and waits for it, then deletes the election key if this session
// leads. If the delete fails the session still counts as leading, so Resign
// can be retried.
func (s *session) Resign(ctx context.Context) error {
	return s.State.Resign(ctx, s.resignKey)
}

// SetVoters writes the voter record in one transaction that requires this
// session's election key to exist with create revision epoch, no older
// candidate key to exist, and the record's ModRevision to be prev.Version.
// On failure the transaction's else branch tells ErrNotLeader (checked first)
// from ErrConflict. The record it writes is sealed.
func (s *session) SetVoters(ctx context.Context, epoch int64, prev coord.Voters, ids []string) error {
	if err := s.Err(); err != nil {
		return fmt.Errorf("etcdcoord: set voters: %w: %w", coord.ErrNotLeader, err)
	}
	l := s.Leader()
	if epoch <= 0 || l == nil || l.rev != epoch {
		// Without this check a zero epoch would match a missing key.
		return fmt.Errorf("etcdcoord: set voters: session does not lead with epoch %d: %w", epoch, coord.ErrNotLeader)
	}
	val, err := coord.EncodeVoters(ids, false)
	if err != nil {
		return fmt.Errorf("etcdcoord: %w", err)
	}
	k := s.c.keys
	resp, err := s.c.client.Txn(ctx).
		If(
			clientv3.Compare(clientv3.CreateRevision(l.key), "=", epoch),
			clientv3.Compare(clientv3.CreateRevision(k.elecDir), ">", epoch-1).WithPrefix(),
			clientv3.Compare(clientv3.ModRevision(k.voters), "=", prev.Version),
		).
		Then(clientv3.OpPut(k.voters, string(val))).
		Else(
			clientv3.OpGet(l.key),
			clientv3.OpGet(k.elecDir, clientv3.WithFirstCreate()...),
		).
		Commit()
	if err != nil {
		return s.opErr("set voters", err)
	}
	if resp.Succeeded {
		return nil
	}
	own := resp.Responses[0].GetResponseRange().Kvs
	first := resp.Responses[1].GetResponseRange().Kvs
	if len(own) == 0 || own[0].CreateRevision != epoch || len(first) == 0 || first[0].CreateRevision < epoch {
		return fmt.Errorf("etcdcoord: set voters: election key %s no longer leads with epoch %d: %w", l.key, epoch, coord.ErrNotLeader)
	}
	return fmt.Errorf("etcdcoord: set voters: version %d is stale: %w", prev.Version, coord.ErrConflict)
}

// Watch implements coord.Session. The watch also stops when the session ends.
func (s *session) Watch(ctx context.Context) <-chan coord.View {
	out := make(chan coord.View, 1)
	wctx, cancel := context.WithCancel(ctx)
	stopS := context.AfterFunc(s.Context(), cancel)
	stopC := context.AfterFunc(s.c.client.Ctx(), cancel)
	ok := s.Go(func() {
		defer close(out)
		defer cancel()
		defer stopS()
		defer stopC()
		s.c.watchView(wctx, out)
	})
	if !ok {
		stopS()
		stopC()
		cancel()
		close(out)
	}
	return out
}

// Close ends the session: it stops the keep-alive loop, campaigns and
// watches, deletes the election key if leading, revokes the lease (which
// deletes every ephemeral entry) and waits for the session's goroutines, all
// bounded by ctx. A session that had already expired deletes nothing. Close is
// idempotent; later calls return nil.
func (s *session) Close(ctx context.Context) error {
	if !s.BeginClose() {
		return nil
	}
	var errs []error
	ended := s.End(coord.ErrSessionClosed)
	l := s.TakeLeader()
	s.cs.Orphan()
	if ended {
		// The revoke deletes the membership and the candidacy in one
		// revision: no View shows the candidacy gone while the member
		// stays (a successor's takeover relies on it). Only if it fails
		// is the candidacy given up alone, so that the election moves on
		// before the lease's TTL runs out.
		err := s.c.retry(ctx, func(ctx context.Context) error {
			_, err := s.c.client.Revoke(ctx, s.lease)
			return err
		})
		if err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			errs = append(errs, fmt.Errorf("etcdcoord: close session: revoke lease: %w", err))
			if l != nil {
				if err := s.resignKey(ctx, l); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	if err := s.AwaitGoroutines(ctx, nil); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

package etcdcoord

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/kvstore/kvstore/clock"
	"github.com/kvstore/kvstore/coord"
)

// retryInterval is how soon a failed keep-alive is retried (never later than
// the deadline).
const retryInterval = 150 * time.Millisecond

// session is a coord.Session on one etcd lease.
type session struct {
	c     *Coordinator
	lease clientv3.LeaseID
	cs    *concurrency.Session // wraps lease for the election; its own KeepAlive never moves deadline

	// ctx is canceled when the session ends (expired or closed); it stops the
	// keep-alive loop, campaigns in flight and watches.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // this session's goroutines

	mu       sync.Mutex    // guards the fields below
	ttl      time.Duration // TTL etcd granted, from the latest response
	deadline clock.Instant // on c.cfg.Clock
	// published is deadline, readable without the lock.
	published atomic.Pointer[clock.Instant]
	healthy   bool
	changed   chan struct{} // closed and replaced on every state change
	done      chan struct{} // closed when err is set
	err       error         // why the session ended; nil while live
	closing   bool          // Close was called
	leader    *leadership   // non-nil while this session leads
	campaign  *campaignRun  // the campaign in flight, nil if none
}

// leadership is the election key this session won.
type leadership struct {
	key string
	rev int64 // the key's create revision: the epoch
}

// campaignRun is one campaign goroutine.
type campaignRun struct {
	cancel context.CancelFunc
	done   chan struct{} // closed when the goroutine has finished, leadership settled
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
	s := &session{
		c:        c,
		lease:    resp.ID,
		cs:       cs,
		ctx:      sctx,
		cancel:   cancel,
		ttl:      granted,
		deadline: sent.Add(c.liveFor(granted)),
		healthy:  true,
		changed:  make(chan struct{}),
		done:     make(chan struct{}),
	}
	first := s.deadline
	s.published.Store(&first)
	if !c.goFunc(&s.wg, s.keepAlive) {
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

// Deadline implements coord.Session. It takes no lock: nodes call it on
// every cached read.
func (s *session) Deadline() clock.Instant { return *s.published.Load() }

// setDeadlineLocked sets the deadline and publishes it to Deadline. s.mu
// must be held.
func (s *session) setDeadlineLocked(d clock.Instant) {
	s.deadline = d
	s.published.Store(&d)
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
func (s *session) renewed(sent clock.Instant, ttl time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return
	}
	s.ttl = ttl
	s.setDeadlineLocked(sent.Add(s.c.liveFor(ttl)))
	s.healthy = true
	s.notifyLocked()
}

// keepAlive is the session's own keep-alive loop; the only writer of the
// deadline. It runs until the session ends or the client closes.
func (s *session) keepAlive() {
	timer := time.NewTimer(s.interval())
	defer timer.Stop()
	for s.ctx.Err() == nil {
		_, connChanged := s.c.conn.get()
		select {
		case <-s.ctx.Done():
			return
		case <-s.c.client.Ctx().Done():
			s.end(fmt.Errorf("%w: coordinator closed, lease left to expire by its TTL", coord.ErrSessionClosed))
			return
		case <-connChanged:
			if ready, _ := s.c.conn.get(); !ready {
				s.setHealthy(false)
				continue
			}
			// Reconnected: renew now rather than at the next tick.
		case <-timer.C:
		}
		timer.Reset(s.renew())
	}
}

// interval is the keep-alive period: a third of the granted TTL.
func (s *session) interval() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ttl / 3
}

// renew sends one keep-alive and returns how long to wait before the next.
// A keep-alive gets half the interval to be answered, but at least an
// attempt's time (attemptTimeout): one sent to a member that stopped
// answering leaves time for more, each to the next member, before the
// deadline, and a slow but live member (a busy machine, short sessions)
// is not taken for a stopped one.
func (s *session) renew() time.Duration {
	interval := s.interval()
	sent := s.c.cfg.Clock.Now()
	ctx, cancel := context.WithTimeout(s.ctx, max(interval/2, attemptTimeout))
	resp, err := s.c.client.KeepAliveOnce(ctx, s.lease)
	cancel()
	switch {
	case err == nil && resp.TTL > 0:
		s.renewed(sent, time.Duration(resp.TTL)*time.Second)
		return s.interval()
	case err == nil || errors.Is(err, rpctypes.ErrLeaseNotFound):
		s.end(coord.ErrSessionExpired)
		return 0
	case s.ctx.Err() != nil:
		return 0
	}
	s.setHealthy(false)
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
		s.end(coord.ErrSessionExpired)
		return fmt.Errorf("etcdcoord: %s: %w: %w", op, coord.ErrSessionExpired, err)
	}
	if serr := s.Err(); serr != nil && s.ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return fmt.Errorf("etcdcoord: %s: %w", op, serr)
	}
	return fmt.Errorf("etcdcoord: %s: %w", op, err)
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

// campaignResult is what a campaign goroutine hands to its caller.
type campaignResult struct {
	epoch int64
	err   error
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
	if id == "" {
		return 0, errors.New("etcdcoord: campaign: empty id")
	}
	run, cctx, err := s.startCampaign(ctx)
	if err != nil {
		return 0, err
	}
	result := make(chan campaignResult) // unbuffered: a result is taken by the caller or given back
	if !s.goFunc(func() { s.runCampaign(cctx, run, id, result) }) {
		run.cancel()
		s.finishCampaign(run)
		return 0, fmt.Errorf("etcdcoord: campaign: %w", s.Err())
	}
	select {
	case r := <-result:
		return r.epoch, r.err
	case <-ctx.Done():
		run.cancel()
		// Return once the candidacy is withdrawn (its key deleted), so
		// that no view after this shows the caller leading; bounded, for
		// a coordinator that does not answer.
		coord.AwaitWithdrawal(run.done, s.done, withdrawWait)
		return 0, fmt.Errorf("etcdcoord: campaign: %w", ctx.Err())
	case <-s.done:
		return 0, fmt.Errorf("etcdcoord: campaign: %w", s.Err())
	}
}

// withdrawWait bounds how long a canceled Campaign waits for its
// candidacy's withdrawal.
const withdrawWait = 2 * time.Second

// startCampaign registers a new campaign run once no other is in flight.
func (s *session) startCampaign(ctx context.Context) (*campaignRun, context.Context, error) {
	for {
		s.mu.Lock()
		if s.err != nil {
			err := s.err
			s.mu.Unlock()
			return nil, nil, fmt.Errorf("etcdcoord: campaign: %w", err)
		}
		prev := s.campaign
		if prev == nil {
			cctx, cancel := context.WithCancel(s.ctx)
			run := &campaignRun{cancel: cancel, done: make(chan struct{})}
			s.campaign = run
			s.mu.Unlock()
			return run, cctx, nil
		}
		s.mu.Unlock()
		select {
		case <-prev.done:
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("etcdcoord: campaign: %w", ctx.Err())
		case <-s.done:
		}
	}
}

// finishCampaign unregisters run and marks it done.
func (s *session) finishCampaign(run *campaignRun) {
	s.mu.Lock()
	if s.campaign == run {
		s.campaign = nil
	}
	s.mu.Unlock()
	run.cancel()
	close(run.done)
}

// runCampaign runs one campaign and hands the result to the caller over
// result. A key it leaves behind that was not handed over as a win (the
// caller has gone, or the campaign failed after entering the election) is
// given back.
func (s *session) runCampaign(ctx context.Context, run *campaignRun, id string, result chan<- campaignResult) {
	defer s.finishCampaign(run)
	held, err := s.enterElection(ctx, id) // our election key, if the campaign left one
	if err == nil {
		err = s.waitTurn(ctx, held.rev)
	}
	var r campaignResult
	if err != nil {
		r.err = s.opErr("campaign", err)
		if held == nil {
			// Campaign fails without cleaning up when its put's answer is
			// lost (ctx canceled while it was in flight, a connection
			// error): the put may have been applied all the same, leaving
			// a candidacy no one runs, which leads once the keys before
			// it go, for as long as this session lives. Delete it.
			s.withdrawLost()
		}
	} else {
		r.epoch, r.err = s.claim(ctx, held)
	}
	select {
	case result <- r:
		if r.err == nil {
			return
		}
	case <-ctx.Done():
		if r.err == nil {
			s.mu.Lock()
			if s.leader == held {
				s.leader = nil
			}
			s.mu.Unlock()
		}
	}
	if held != nil {
		// The client's context bounds this; the delete is conditional on
		// the create revision, so running late is harmless.
		_ = s.resignKey(s.c.client.Ctx(), held)
	}
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
// turnRecheck passes, or ctx ends; only the last is an error.
func (c *Coordinator) waitDelete(ctx context.Context, key string, rev int64) error {
	wctx, cancel := context.WithTimeout(ctx, turnRecheck)
	defer cancel()
	for wr := range c.client.Watch(ownStream(wctx), key, clientv3.WithRev(rev)) {
		if wr.Err() != nil {
			break
		}
		for _, ev := range wr.Events {
			if ev.Type == mvccpb.DELETE {
				return nil
			}
		}
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
	for s.ctx.Err() == nil {
		ctx, cancel := context.WithTimeout(s.ctx, attemptTimeout)
		_, err := s.c.client.Txn(ctx).
			If(clientv3.Compare(clientv3.LeaseValue(key), "=", s.cs.Lease())).
			Then(clientv3.OpDelete(key)).
			Commit()
		cancel()
		if err == nil {
			return
		}
		select {
		case <-s.ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// claim records a won election as this session's leadership after checking
// that the key still exists: Campaign also returns when the older candidates
// are gone even if our own key vanished meanwhile (lease expired).
func (s *session) claim(ctx context.Context, won *leadership) (int64, error) {
	var resp *clientv3.GetResponse
	err := s.c.retry(ctx, func(ctx context.Context) error {
		var err error
		resp, err = s.c.client.Get(ctx, won.key)
		return err
	})
	if err != nil {
		return 0, s.opErr("campaign: check election key", err)
	}
	if len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != won.rev {
		return 0, fmt.Errorf("etcdcoord: campaign: election key %s vanished: %w", won.key, coord.ErrNotLeader)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return 0, fmt.Errorf("etcdcoord: campaign: %w", s.err)
	}
	s.leader = won
	return won.rev, nil
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
	s.mu.Lock()
	run := s.campaign
	s.mu.Unlock()
	if run != nil {
		run.cancel()
		select {
		case <-run.done:
		case <-ctx.Done():
			return fmt.Errorf("etcdcoord: resign: waiting for the campaign to stop: %w", ctx.Err())
		}
	}
	s.mu.Lock()
	l := s.leader
	s.mu.Unlock()
	if l == nil {
		return nil
	}
	if err := s.resignKey(ctx, l); err != nil {
		return err
	}
	s.mu.Lock()
	if s.leader == l {
		s.leader = nil
	}
	s.mu.Unlock()
	return nil
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
	s.mu.Lock()
	l := s.leader
	s.mu.Unlock()
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
	stopS := context.AfterFunc(s.ctx, cancel)
	stopC := context.AfterFunc(s.c.client.Ctx(), cancel)
	ok := s.goFunc(func() {
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
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return nil
	}
	s.closing = true
	s.mu.Unlock()

	var errs []error
	ended := s.end(coord.ErrSessionClosed)
	s.mu.Lock()
	l := s.leader
	s.leader = nil
	s.mu.Unlock()
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
	waited := make(chan struct{})
	waitAll := func() {
		s.wg.Wait()
		close(waited)
	}
	if !s.c.goFunc(nil, waitAll) {
		waitAll() // the client is closed: nothing can block for long
	}
	select {
	case <-waited:
	case <-ctx.Done():
		// What is left is blocked on the client; Coordinator.Close ends it.
		errs = append(errs, fmt.Errorf("etcdcoord: close session: waiting for goroutines: %w", ctx.Err()))
	}
	return errors.Join(errs...)
}

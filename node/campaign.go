package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/clock"
	"github.com/kvstore/kvstore/coord"
	"github.com/kvstore/kvstore/quorum"
	"github.com/kvstore/kvstore/rpc/kvpb"
)

// campaigner is the node's candidacy: it runs the campaign for each
// session, probes the voters (pre-vote) and keeps what they answered.
type campaigner struct {
	n *Node
	// candidate: the node stands for election; reach: what the current
	// session's probes heard (nil before the first session).
	candidate atomic.Bool
	reach     atomic.Pointer[reach]
}

// campaignLoop runs for one session: campaign, lead until leadership ends,
// resign, and campaign again.
//
// Pre-vote: the node stands for election only while a majority of the
// voters (itself included, if it is one) answered its probes within the
// quorum window, and withdraws its candidacy the moment that stops being
// true. A node cut off from its peers but not from the coordinator so
// never wins an election it could not serve, and the election goes to one
// that can.
func (c *campaigner) campaignLoop(ctx context.Context, sess coord.Session) {
	r := &reach{heard: make(map[string]clock.Instant)}
	c.reach.Store(r)
	pctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.probeLoop(pctx, r)
	}()
	defer func() {
		stop()
		wg.Wait()
	}()
	for ctx.Err() == nil {
		if !c.awaitMajority(ctx, r) {
			return
		}
		cctx, withdraw := context.WithCancel(ctx)
		watched := make(chan struct{})
		go func() {
			defer close(watched)
			c.withdrawWhenCut(cctx, r, withdraw)
		}()
		c.candidate.Store(true)
		epoch, err := sess.Campaign(cctx, c.n.cfg.ID)
		c.candidate.Store(false)
		withdraw()
		<-watched
		if err != nil {
			select {
			case <-ctx.Done():
				return
			case <-sess.Done():
				return
			case <-time.After(c.n.cfg.Heartbeat):
				continue
			}
		}
		c.n.log.Info("elected", "epoch", epoch)
		c.n.met.elections.Inc()
		ended := c.n.runLeader(ctx, sess, epoch)
		if errors.Is(ended, errQuorumLost) && !(faultsOn && c.n.cfg.Faults.KeepSessionOnStepDown) {
			// Stepped down for want of a majority: end the session too.
			// Its membership goes with it, so the successor need not
			// wait for this node's answer to Prepare nor, without it,
			// out the leases of older epochs: this node dropped its
			// copies with the role and its next session starts with
			// none. The session loop opens the next session a lease
			// later: registered at once, its membership could reach
			// the successor's view before the successor reads it, and
			// bring the wait back.
			hold := c.n.cfg.takeoverWait(coord.Settings{})
			c.n.log.Warn("stepped down: closing the coordinator session so that the successor need not wait out leases", "epoch", epoch, "next_session_in", hold)
			c.n.sessions.hold.Store(int64(hold))
			// Operations pending here fail with why, not as partitioned
			// (as the session's end would say).
			if c.n.State() == StateOK {
				c.n.met.suspended()
			}
			c.n.sessions.setServing(sess, StateSuspended, fmt.Errorf("node %s: %w: stepped down as leader, no majority of the voters answers; rejoining with a new session", c.n.cfg.ID, kvstore.ErrNoQuorum))
			c.n.sessions.close(sess)
			return
		}
		// Leadership ended while the session may live on: give the key up
		// so the next leader gets a fresh epoch.
		for ctx.Err() == nil {
			rctx, cancel := context.WithTimeout(ctx, c.n.cfg.RPCTimeout)
			err := sess.Resign(rctx)
			cancel()
			if err == nil {
				break
			}
			select {
			case <-ctx.Done():
			case <-sess.Done():
				return
			case <-time.After(c.n.cfg.Heartbeat):
			}
		}
		// The probes stopped while this node led: what it heard before,
		// and the voter record it read, are stale; a leader that stepped
		// down for want of a majority must not stand again on them.
		r.forget()
	}
}

// resign is Resign: it ends this node's leadership (the campaign loop
// then gives up the election key) and waits until the view shows it.
func (c *campaigner) resign(ctx context.Context) error {
	n := c.n
	l := n.lead.Load()
	if l == nil {
		return nil
	}
	l.cancel(errResigned)
	for {
		ch := n.changed()
		if v := n.view.Load(); v.leader.ID != n.cfg.ID || v.leader.Epoch != l.epoch {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("node %s: resign: %w", n.cfg.ID, ctx.Err())
		}
	}
}

// reach is what a node's probes heard: when each voter last answered,
// and the voter record they were sent to.
type reach struct {
	mu      sync.Mutex
	heard   map[string]clock.Instant // id -> send time of the probe it answered
	voters  []string                 // the voter record as last read
	readAt  clock.Instant            // when voters was read (zero: never)
	rounds  uint64                   // probe rounds finished
	changed chan struct{}            // closed and replaced on every round
}

// round is the number of probe rounds finished.
func (r *reach) round() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rounds
}

// forget drops every answer heard and the voter record read: the next
// probe round reads the record again (it may have changed meanwhile).
func (r *reach) forget() {
	r.mu.Lock()
	defer r.mu.Unlock()
	clear(r.heard)
	r.voters, r.readAt = nil, clock.Instant{}
}

// wait returns a channel closed after the next probe round.
func (r *reach) wait() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.changed == nil {
		r.changed = make(chan struct{})
	}
	return r.changed
}

// majority reports whether this node and the voters that answered a probe
// sent at or after since make a majority of the voters, with how many did
// and of how many voters.
func (c *campaigner) majority(r *reach, since clock.Instant) (ok bool, yes, of int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	heard := make(map[string]clock.Instant, len(r.heard)+1)
	for id, at := range r.heard {
		if !at.Before(since) {
			heard[id] = at
		}
	}
	// A recovering node's own Prepare does not count for a takeover.
	if !c.n.Recovering() {
		heard[c.n.cfg.ID] = since
	}
	for _, v := range r.voters {
		if _, ok := heard[v]; ok {
			yes++
		}
	}
	return quorum.HeardSince(r.voters, heard, since), yes, len(r.voters)
}

// mayCampaign reports whether the node may stand for election now.
func (c *campaigner) mayCampaign(r *reach) (ok bool, yes, of int) {
	if faultsOn && c.n.cfg.Faults.NoPreVote {
		return true, 0, 0
	}
	return c.majority(r, c.n.now().Add(-c.n.cfg.quorumWindow()))
}

// awaitMajority waits until the node may campaign; false if ctx ended.
func (c *campaigner) awaitMajority(ctx context.Context, r *reach) bool {
	logged := false
	for {
		ch := r.wait()
		ok, yes, of := c.mayCampaign(r)
		if ok {
			if logged {
				c.n.log.Info("a majority of the voters answers again: campaigning", "answered", yes, "voters", of)
			}
			return true
		}
		if !logged && of > 0 {
			c.n.log.Warn("not campaigning: no majority of the voters answers (pre-vote)", "answered", yes, "voters", of)
			logged = true
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		}
	}
}

// withdrawWhenCut cancels the candidacy (withdraw) once the node may no
// longer campaign; it returns when ctx ends.
func (c *campaigner) withdrawWhenCut(ctx context.Context, r *reach, withdraw func()) {
	for {
		ch := r.wait()
		if ok, yes, of := c.mayCampaign(r); !ok {
			c.n.log.Warn("withdrawing from the election: no majority of the voters answers (pre-vote)", "answered", yes, "voters", of)
			withdraw()
			return
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return
		}
	}
}

// votersRefresh is how often the probe loop re-reads the voter record.
const votersRefresh = time.Second

// probeLoop probes every other voter each heartbeat while this node does
// not lead (a leader hears its voters through Append), until ctx ends.
func (c *campaigner) probeLoop(ctx context.Context, r *reach) {
	// The first round waits for the first view: without the members'
	// addresses it would probe nobody and hold the campaign a heartbeat.
	for c.n.view.Load().members == nil {
		ch := c.n.changed()
		if c.n.view.Load().members != nil {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
	}
	t := time.NewTicker(c.n.cfg.Heartbeat)
	defer t.Stop()
	for {
		if c.n.lead.Load() == nil {
			c.probeRound(ctx, r)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// probeRound re-reads the voter record if it is old, probes every other
// voter the view has an address for, and records who answered.
func (c *campaigner) probeRound(ctx context.Context, r *reach) {
	r.mu.Lock()
	stale := r.readAt.IsZero() || c.n.now().Sub(r.readAt) > votersRefresh
	r.mu.Unlock()
	if stale {
		rctx, cancel := context.WithTimeout(ctx, c.n.cfg.RPCTimeout)
		v, err := c.n.cfg.Coordinator.Voters(rctx)
		cancel()
		if err == nil {
			c.n.recs.noteVoters(v)
			r.mu.Lock()
			r.voters, r.readAt = v.IDs, c.n.now()
			r.mu.Unlock()
		}
	}
	r.mu.Lock()
	voters := r.voters
	r.mu.Unlock()
	members := c.n.view.Load().members
	timeout := min(c.n.cfg.RPCTimeout, c.n.cfg.quorumWindow()/2)
	var wg sync.WaitGroup
	for _, id := range voters {
		addr := members[id]
		if id == c.n.cfg.ID || addr == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sent := c.n.now()
			if c.probe(ctx, id, addr, timeout) {
				r.mu.Lock()
				if sent.After(r.heard[id]) {
					r.heard[id] = sent
				}
				r.mu.Unlock()
			}
		}()
	}
	wg.Wait()
	r.mu.Lock()
	r.rounds++
	if r.changed != nil {
		close(r.changed)
		r.changed = nil
	}
	r.mu.Unlock()
}

// noQuorum is the error an operation that waits for a leader fails with
// when no leader can come of this node's side: a probe round finished
// after round (when the operation began to wait) and no majority of the
// voters answered. Nil while a majority answers, before such a round, or
// without probes (a leading node, Faults.NoPreVote).
func (c *campaigner) noQuorum(r *reach, round uint64) error {
	if r == nil || (faultsOn && c.n.cfg.Faults.NoPreVote) || r.round() <= round {
		return nil
	}
	ok, yes, of := c.majority(r, c.n.now().Add(-c.n.cfg.quorumWindow()))
	if ok || of == 0 {
		return nil
	}
	return fmt.Errorf("node %s: %w: no leader, and %d of %d voters answer this node", c.n.cfg.ID, kvstore.ErrNoQuorum, yes, of)
}

// probe reports whether node id, at addr, answered a probe within timeout
// and can vouch for a takeover (it is not recovering).
func (c *campaigner) probe(ctx context.Context, id, addr string, timeout time.Duration) bool {
	peer, err := c.n.pool.Peer(addr)
	if err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := peer.Probe(ctx, &kvpb.ProbeRequest{Cluster: c.n.cfg.Cluster, Incarnation: c.n.incarnationSent(), To: id, From: c.n.cfg.ID})
	return err == nil && !resp.Recovering
}

// Probe answers a candidate's probe (pre-vote).
func (s *peerServer) Probe(ctx context.Context, req *kvpb.ProbeRequest) (*kvpb.ProbeResponse, error) {
	if err := s.checkCluster(req.Cluster, req.Incarnation); err != nil {
		return nil, fmt.Errorf("probe: %w", err)
	}
	if err := s.checkAddressee(req.To); err != nil {
		return nil, fmt.Errorf("probe: %w", err)
	}
	return &kvpb.ProbeResponse{Recovering: s.n.Recovering()}, nil
}

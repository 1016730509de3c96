package node

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/coord"
	"github.com/kvstore/kvstore/quorum"
	"github.com/kvstore/kvstore/rpc"
	"github.com/kvstore/kvstore/rpc/kvpb"
)

// Removing a voter (docs/design.md, Voters).
//
// The leader removes one voter at a time, by compare-and-swap of the voter
// record fenced by its election, and counts majorities of the new set only
// once the record holds it. That is Raft's single-server change: every
// majority of the old set of n and every majority of the new set of n-1
// intersect. An entry committed under the old set is on at least
// floor(n/2)+1 of the old voters, so on at least floor(n/2) of the n-1 that
// remain; a majority of n-1 is floor((n-1)/2)+1 of them, and
// floor(n/2) + floor((n-1)/2) + 1 = n > n-1, so the two sets share a voter.
// A later takeover, which needs a majority of the new record, therefore
// meets a holder of every committed entry (leader completeness). The other
// way round does not hold (2 of 4 is a majority of the 3 remaining, not of
// the 4): so the leader installs the new set, and recomputes the commit
// with it, only after the record changed. The commit index never moves
// back.
//
// A removal that would leave the remaining voters without a majority of
// live ones (the leader and the peers whose last Append succeeded) is
// refused: the cluster could not commit afterwards. The leader itself is
// never removed: stop it (or make it resign) first, then remove it through
// the next leader.
//
// A removed node that still runs would be added back at once by
// voterChanges.maybeAdd (it is a caught-up member). The leader keeps it
// out while it is a member (voterChanges.removed), and tells it to leave
// (Peer.Leave, retried every heartbeat): it checks that the record no
// longer names it and stops, which ends its membership.

// voterChanges is the leader's changes of the voter record: adding
// caught-up members (maybeAdd), removing voters (remove), and keeping the
// removed ones out. Changes are made one at a time; the leader's l.mu
// guards removed and leaving.
type voterChanges struct {
	l *leader
	// mu makes voter changes (maybeAdd, remove) one at a time: each reads
	// l.voters, writes the record, and installs the result.
	mu sync.Mutex
	// removed are the ids this leader removed from the voter record while
	// they were members: maybeAdd must not add them back, and
	// maintain tells them to leave. An id is forgotten when it leaves the
	// membership: a node that joins again under it later (restarted by the
	// operator) is a new member, added once caught up.
	removed map[string]bool
	leaving map[string]bool // removed ids with a Leave call in flight
}

// remove removes id from the voter record and returns the new record.
func (c *voterChanges) remove(ctx context.Context, id string) (coord.Voters, error) {
	l := c.l
	n := l.n
	if err := l.waitServing(ctx); err != nil {
		return coord.Voters{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := l.checkLive(); err != nil {
		return coord.Voters{}, err
	}
	l.mu.Lock()
	prev := l.voters
	err := c.checkRemovalLocked(id)
	l.mu.Unlock()
	if err != nil {
		return prev, fmt.Errorf("node %s (leader, epoch %d): remove %s: %w", n.cfg.ID, l.epoch, id, err)
	}
	ids := slices.DeleteFunc(slices.Clone(prev.IDs), func(x string) bool { return x == id })
	rctx, cancel := context.WithTimeout(ctx, n.cfg.RPCTimeout)
	defer cancel()
	if err := l.sess.SetVoters(rctx, l.epoch, prev, ids); err != nil {
		if errors.Is(err, coord.ErrNotLeader) {
			l.cancel(fmt.Errorf("voter change refused: %w", err))
			return prev, fmt.Errorf("node %s: remove %s: %w: %w", n.cfg.ID, id, kvstore.ErrNotLeader, err)
		}
		// A conflict, or an answer lost on the way: the record may hold
		// the change already (then it is done), or another one (then the
		// leader's copy is stale and is refreshed for the next attempt).
		v, rerr := n.cfg.Coordinator.Voters(rctx)
		if rerr != nil || v.Contains(id) {
			if rerr == nil {
				l.mu.Lock()
				l.voters = v
				l.repl.recomputeCommitLocked()
				l.mu.Unlock()
			}
			return prev, fmt.Errorf("node %s: remove %s: %w", n.cfg.ID, id, err)
		}
		return c.removed1(id, v), nil
	}
	v, err := n.cfg.Coordinator.Voters(rctx)
	if err != nil {
		// The change is made; the next read installs it. Until then the
		// old, larger set is counted, which is the stricter of the two
		// only in the sense that matters: every old majority meets every
		// new one.
		return coord.Voters{IDs: ids}, fmt.Errorf("%w: node %s: removed %s, then could not read the voters back: %w", kvstore.ErrOutcomeUnknown, n.cfg.ID, id, err)
	}
	return c.removed1(id, v), nil
}

// removed1 installs the voter record v, from which id was just removed:
// majorities are counted in it from now on, and id, if still a member, is
// kept out and told to leave.
func (c *voterChanges) removed1(id string, v coord.Voters) coord.Voters {
	l := c.l
	n := l.n
	l.mu.Lock()
	l.voters = v
	if _, member := n.view.Load().members[id]; member {
		c.removed[id] = true
	}
	l.repl.recomputeCommitLocked()
	l.mu.Unlock()
	n.log.Info("voter removed", "id", id, "voters", v.IDs)
	c.tellRemoved()
	return v
}

// checkRemovalLocked says why id may not be removed now, or nil.
func (c *voterChanges) checkRemovalLocked(id string) error {
	l := c.l
	n := l.n
	if !l.voters.Contains(id) {
		return fmt.Errorf("%w: %s is not in the voter record %v", kvstore.ErrNotVoter, id, l.voters.IDs)
	}
	if id == n.cfg.ID {
		return fmt.Errorf("%w: %s leads; stop it or make it resign, then remove it through the next leader", kvstore.ErrRemoveLeader, id)
	}
	rest := slices.DeleteFunc(slices.Clone(l.voters.IDs), func(x string) bool { return x == id })
	if len(rest) == 0 {
		return fmt.Errorf("%w: %s is the last voter", kvstore.ErrUnsafeRemoval, id)
	}
	// Live: answering, and not waiting for a snapshot. A peer that
	// answers but must be reconciled first (recovering, or far behind)
	// cannot yet make up a majority of the rest; one a few entries behind
	// (the next Append is on its way) can.
	live := map[string]bool{n.cfg.ID: true}
	for pid, p := range l.repl.peers {
		live[pid] = p.reachable && !p.snapshot
	}
	if !quorum.HasMajority(rest, live) {
		var up []string
		for _, v := range rest {
			if live[v] {
				up = append(up, v)
			}
		}
		return fmt.Errorf("%w: %d of the remaining voters %v are live (%v), %d needed", kvstore.ErrUnsafeRemoval, len(up), rest, up, quorum.Majority(len(rest)))
	}
	return nil
}

// tellRemoved tells every removed node that is still a member to leave,
// one call in flight per node.
func (c *voterChanges) tellRemoved() {
	l := c.l
	n := l.n
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ctx.Err() != nil {
		return
	}
	for id := range c.removed {
		addr := n.view.Load().members[id]
		if addr == "" || c.leaving[id] {
			continue
		}
		c.leaving[id] = true
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			err := c.sendLeave(id, addr)
			l.mu.Lock()
			delete(c.leaving, id)
			l.mu.Unlock()
			if err != nil {
				n.log.Debug("telling a removed node to leave failed", "id", id, "err", err)
			}
		}()
	}
}

// sendLeave tells removed node id, at addr, to leave.
func (c *voterChanges) sendLeave(id, addr string) error {
	l := c.l
	n := l.n
	pc, err := n.pool.Peer(addr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(l.ctx, n.cfg.RPCTimeout)
	defer cancel()
	_, err = pc.Leave(ctx, &kvpb.LeaveRequest{Cluster: n.cfg.Cluster, Incarnation: n.incarnationSent(), Epoch: l.epoch, LeaderId: n.cfg.ID, Id: id})
	return rpc.FromStatus(err)
}

// maybeAdd adds one member that is not a voter, once it holds
// everything committed (docs/design.md, Voters).
func (c *voterChanges) maybeAdd() {
	l := c.l
	n := l.n
	c.mu.Lock()
	defer c.mu.Unlock()
	l.mu.Lock()
	cand := nextVoter(n.cfg.ID, l.voters.IDs, l.repl.peers, c.removed, n.view.Load().members, l.commit)
	prev := l.voters
	l.mu.Unlock()
	if cand == "" {
		return
	}
	ids := append(slices.Clone(prev.IDs), cand)
	ctx, cancel := context.WithTimeout(l.ctx, n.cfg.RPCTimeout)
	defer cancel()
	err := l.sess.SetVoters(ctx, l.epoch, prev, ids)
	if errors.Is(err, coord.ErrNotLeader) {
		l.cancel(fmt.Errorf("voter change refused: %w", err))
		return
	}
	if err != nil && !errors.Is(err, coord.ErrConflict) {
		n.log.Debug("add voter failed", "id", cand, "err", err)
		return
	}
	v, err := n.cfg.Coordinator.Voters(ctx)
	if err != nil {
		return
	}
	l.mu.Lock()
	l.voters = v
	l.repl.recomputeCommitLocked()
	l.mu.Unlock()
	n.log.Info("voters changed", "voters", v.IDs)
}

// nextVoter is the member the leader (self) adds to the voters next, or
// "": itself first if it is no voter (it joined, and won the election
// before it was added: it holds everything committed), else the lowest id
// of the members (with an address) that are no voters, were not removed
// by this leader, and whose last Append succeeded at a match of at least
// commit: they hold everything committed. A pure function.
func nextVoter(self string, voters []string, peers map[string]*progress, removed map[string]bool, members map[string]string, commit uint64) string {
	if !slices.Contains(voters, self) {
		return self
	}
	for _, id := range slices.Sorted(maps.Keys(peers)) {
		p := peers[id]
		if !slices.Contains(voters, id) && !removed[id] && p.reachable && p.match >= commit && members[id] != "" {
			return id
		}
	}
	return ""
}

// RemoveVoter removes voter id from the cluster's voter record through the
// leader and returns the new record. It fails with kvstore.ErrNotVoter if
// id is not a voter, ErrRemoveLeader if id leads, and ErrUnsafeRemoval if
// no voter would remain or the remaining ones would not have a majority of
// live voters; nothing changed then. A removed node that still runs is
// told to stop. A retry after an attempt whose answer was lost finds id
// already removed and succeeds.
func (n *Node) RemoveVoter(ctx context.Context, id string) ([]string, error) {
	if err := checkKey("node id", id, storedKeys); err != nil {
		return nil, fmt.Errorf("node %s: remove: %w", n.cfg.ID, err)
	}
	octx, done, err := n.opContext(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	return n.router.removeVoter(octx, id)
}

// removeVoter asks the leader, wherever it is, to remove voter id, and
// retries at the next leader while the leader moves or cannot be reached.
func (r *router) removeVoter(octx context.Context, id string) ([]string, error) {
	n := r.n
	var lastErr error
	sentOnce := false
	for {
		l, addr, target, err := n.leaderTarget(octx)
		if err != nil {
			return nil, joinLast(err, lastErr)
		}
		var voters []string
		if l != nil {
			var v coord.Voters
			v, err = l.removeVoter(octx, id)
			voters = v.IDs
		} else {
			var c kvpb.PeerClient
			if c, err = n.pool.Peer(addr); err == nil {
				// Dropped if another leader is seen meanwhile, and retried there.
				cctx, done := n.toLeader(octx, target)
				var resp *kvpb.RemoveVoterResponse
				resp, err = c.RemoveVoter(cctx, &kvpb.RemoveVoterRequest{Cluster: n.cfg.Cluster, Incarnation: n.incarnationSent(), Id: id, FromId: n.cfg.ID})
				if err = callErr(cctx, rpc.FromStatus(err)); err == nil {
					voters = resp.Voters
				}
				done()
			}
		}
		if err == nil {
			return voters, nil
		}
		if sentOnce && errors.Is(err, kvstore.ErrNotVoter) {
			// An earlier attempt, whose answer was lost, removed it.
			return voters, nil
		}
		if !retryableRemoval(err) {
			return nil, joinLast(err, lastErr)
		}
		sentOnce = true
		if l == nil {
			err = n.leaderErr(target, addr, err)
		}
		lastErr = err
		if err := n.retryPause(octx); err != nil {
			return nil, joinLast(err, lastErr)
		}
	}
}

// retryableRemoval reports whether a removal attempt may be retried: the
// leader moved or could not be reached. A refusal is final.
func retryableRemoval(err error) bool {
	for _, final := range []error{kvstore.ErrBadRequest, kvstore.ErrNoQuorum, kvstore.ErrNotVoter,
		kvstore.ErrUnsafeRemoval, kvstore.ErrRemoveLeader, kvstore.ErrOutcomeUnknown} {
		if errors.Is(err, final) {
			return false
		}
	}
	return true
}

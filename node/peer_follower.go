package node

// The follower side of the node-to-node service (kvpb.Peer): what a
// leader asks of every node (Prepare, Append, GetSnapshot, Leave; Probe
// is in campaign.go). The leader side, what followers ask of the leader,
// is in peer_leader.go.

import (
	"context"
	"fmt"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/durable"
	"github.com/kvstore/kvstore/rpc/kvpb"
	"github.com/kvstore/kvstore/store"
)

// peerServer implements kvpb.PeerServer for a node.
type peerServer struct {
	kvpb.UnimplementedPeerServer
	n *Node
}

func (s *peerServer) checkCluster(c string) error {
	if c != s.n.cfg.Cluster {
		return fmt.Errorf("%w: message for cluster %q reached cluster %q", kvstore.ErrBadRequest, c, s.n.cfg.Cluster)
	}
	return nil
}

// leadership names one leadership: the leader's id and the random number
// it chose when it was elected. The zero value is "unknown" (a promise
// made without one, or a message of an older leader).
type leadership struct {
	id    string
	nonce uint64
}

// refusesLocked reports whether this node must refuse a message of the
// leadership ld of epoch as stale: the epoch is below its promise, or is
// its promised epoch but promised to another leadership (a coordinator
// that handed the same epoch out twice). Callers hold n.mu.
func (n *Node) refusesLocked(epoch int64, ld leadership) (refuse, other bool) {
	if epoch < n.acceptedEpoch {
		return true, false
	}
	other = epoch == n.acceptedEpoch && ld.nonce != 0 && n.accepted.nonce != 0 && ld != n.accepted
	return other, other
}

// promise raises acceptedEpoch to epoch, promised to leadership ld
// (dropping the cache, which was granted under an older leader, and ending
// this node's own leadership of an older epoch: a newer leader may now
// change its store), or records ld for a promise of epoch that named none,
// and returns the submission that makes the promise durable (nil if there
// is nothing to persist). Callers checked refusesLocked and hold n.mu.
func (n *Node) promiseLocked(epoch int64, ld leadership) *durable.Pending {
	switch {
	case epoch > n.acceptedEpoch:
		n.acceptedEpoch, n.accepted = epoch, ld
		n.acceptedEpochA.Store(epoch)
		n.leaderMoved()
		n.dropCache()
		if l := n.lead.Load(); l != nil && l.epoch < epoch {
			l.cancel(fmt.Errorf("node %s promised epoch %d: %w", n.cfg.ID, epoch, kvstore.ErrStaleEpoch))
		}
	case epoch == n.acceptedEpoch && n.accepted.nonce == 0 && ld.nonce != 0:
		n.accepted = ld
	default:
		return nil
	}
	if n.disk == nil {
		return nil
	}
	return n.submittedLocked(n.disk.PromiseLeadership(epoch, ld.id, ld.nonce))
}

// Prepare implements the first step of a takeover (DESIGN.md).
func (s *peerServer) Prepare(ctx context.Context, req *kvpb.PrepareRequest) (*kvpb.PrepareResponse, error) {
	if err := s.checkCluster(req.Cluster); err != nil {
		return nil, err
	}
	if err := checkEpoch("prepare", req.Epoch); err != nil {
		return nil, fmt.Errorf("node %s: %w", s.n.cfg.ID, err)
	}
	return s.n.prepare(ctx, req.Epoch, leadership{req.LeaderId, req.Leadership})
}

// prepare promises epoch to leadership ld and reports this node's
// position, once both are durable.
func (n *Node) prepare(ctx context.Context, epoch int64, ld leadership) (*kvpb.PrepareResponse, error) {
	n.mu.Lock()
	if refuse, other := n.refusesLocked(epoch, ld); refuse {
		defer n.mu.Unlock()
		return &kvpb.PrepareResponse{Ok: false, AcceptedEpoch: n.acceptedEpoch, NodeId: n.cfg.ID, OtherLeadership: other}, nil
	}
	p := n.promiseLocked(epoch, ld)
	resp := &kvpb.PrepareResponse{
		Ok:            true,
		AcceptedEpoch: n.acceptedEpoch,
		Applied:       toPos(n.store.Applied()),
		Recovering:    n.needsReconcileLocked(), // a voter with an unreconciled store counts toward no majority
		NodeId:        n.cfg.ID,
	}
	last := n.pendingLastLocked()
	n.mu.Unlock()
	if err := n.waitDurable(ctx, p, last); err != nil {
		return nil, fmt.Errorf("node %s: prepare(%d): %w", n.cfg.ID, epoch, err)
	}
	return resp, nil
}

// Append applies entries or a snapshot from the leader of req.Epoch.
func (s *peerServer) Append(ctx context.Context, req *kvpb.AppendRequest) (*kvpb.AppendResponse, error) {
	if err := s.checkCluster(req.Cluster); err != nil {
		return nil, err
	}
	if err := validateAppend(req); err != nil {
		return nil, fmt.Errorf("node %s: %w", s.n.cfg.ID, err)
	}
	resp, ps, err := s.n.append(req)
	if err != nil {
		return nil, err
	}
	// The position answered counts toward majorities: it must be durable.
	wait := s.n.waitDurable
	if req.Snapshot == nil {
		wait = s.n.waitEntriesDurable
	}
	if err := wait(ctx, ps...); err != nil {
		return nil, fmt.Errorf("node %s: append: %w", s.n.cfg.ID, err)
	}
	return resp, nil
}

// append applies req, which validateAppend accepted, and returns the answer
// with the submissions that must be durable before it is sent. A refused
// request changes nothing but the promised epoch.
func (n *Node) append(req *kvpb.AppendRequest) (*kvpb.AppendResponse, []*durable.Pending, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	ld := leadership{req.LeaderId, req.Leadership}
	if refuse, other := n.refusesLocked(req.Epoch, ld); refuse {
		return &kvpb.AppendResponse{Ok: false, AcceptedEpoch: n.acceptedEpoch, Applied: toPos(n.store.Applied()), Reconcile: n.needsReconcileLocked(), OtherLeadership: other}, nil, nil
	}
	// Whatever this node applied before (under an earlier call whose wait
	// may not be over) is part of the position it answers.
	ps := []*durable.Pending{n.pendingLastLocked(), n.promiseLocked(req.Epoch, ld)}
	n.met.appended(n.now())
	applied := n.store.Applied()
	if req.Snapshot != nil {
		snap := fromSnapshot(req.Snapshot)
		if snap.Applied.Less(applied) {
			// Within one leader's epoch history is linear: a snapshot
			// behind this node's position is a late copy, and changes
			// nothing. A later leader's state is never behind a position
			// of an earlier epoch: its snapshot is at least at its own
			// no-op.
			if applied.Epoch == req.Epoch {
				return &kvpb.AppendResponse{Ok: true, AcceptedEpoch: n.acceptedEpoch, Applied: toPos(applied), Reconcile: n.needsReconcileLocked()}, ps, nil
			}
			return nil, ps, fmt.Errorf("node %s: %w", n.cfg.ID, badRequest("snapshot at %s (epoch %d) is behind this node's position %s of an earlier epoch", snap.Applied, req.Epoch, applied))
		}
		// The leader's whole state, at its last entry: it holds everything
		// committed, and everything this node acknowledged before it lost
		// its store. The Restore record clears the durable mark with it.
		n.store.Restore(snap)
		ps = append(ps, n.persistRestoreLocked(snap))
		n.recovering = false
		n.dropCache()
		return &kvpb.AppendResponse{Ok: true, AcceptedEpoch: n.acceptedEpoch, Applied: toPos(n.store.Applied())}, ps, nil
	}
	if fromPos(req.Prev) != applied {
		return &kvpb.AppendResponse{Ok: false, AcceptedEpoch: n.acceptedEpoch, Applied: toPos(applied), Reconcile: n.needsReconcileLocked()}, ps, nil
	}
	entries := make([]store.Entry, 0, len(req.Entries))
	dups := make([]bool, 0, len(req.Entries))
	for _, pe := range req.Entries {
		e := fromEntry(pe)
		dup, err := n.store.Apply(e)
		if err != nil {
			// Cannot happen: validateAppend checked that the entries
			// follow prev, which is the store's position, and are sets,
			// deletes and no-ops of good keys.
			ps = append(ps, n.persistEntriesLocked(entries, dups))
			return nil, ps, fmt.Errorf("node %s: %w: %w", n.cfg.ID, kvstore.ErrBadRequest, err)
		}
		entries, dups = append(entries, e), append(dups, dup)
		if e.Op != store.OpNoop {
			n.invalidate(e.Key, e.Version)
		}
	}
	ps = append(ps, n.persistEntriesLocked(entries, dups))
	// Entries do not reconcile a recovering node: a prefix of the leader's
	// history may stop short of entries this node acknowledged before it
	// lost its store and the leader already counted as committed (with
	// base 0 the prefix starts from an empty store). Reconcile asks for the
	// snapshot, which holds them.
	return &kvpb.AppendResponse{Ok: true, AcceptedEpoch: n.acceptedEpoch, Applied: toPos(n.store.Applied()), Reconcile: n.needsReconcileLocked()}, ps, nil
}

// GetSnapshot returns the node's whole state to the leader of req.Epoch.
func (s *peerServer) GetSnapshot(ctx context.Context, req *kvpb.GetSnapshotRequest) (*kvpb.Snapshot, error) {
	if err := s.checkCluster(req.Cluster); err != nil {
		return nil, err
	}
	n := s.n
	if err := checkEpoch("snapshot request", req.Epoch); err != nil {
		return nil, fmt.Errorf("node %s: %w", n.cfg.ID, err)
	}
	n.mu.Lock()
	ld := leadership{req.LeaderId, req.Leadership}
	if refuse, other := n.refusesLocked(req.Epoch, ld); refuse {
		defer n.mu.Unlock()
		if other {
			return nil, fmt.Errorf("node %s: snapshot for epoch %d, promised to another leadership (%s): %w", n.cfg.ID, req.Epoch, n.accepted.id, kvstore.ErrStaleEpoch)
		}
		return nil, fmt.Errorf("node %s: snapshot for epoch %d, promised %d: %w", n.cfg.ID, req.Epoch, n.acceptedEpoch, kvstore.ErrStaleEpoch)
	}
	p := n.promiseLocked(req.Epoch, ld)
	snap := toSnapshot(n.store.Snapshot())
	last := n.pendingLastLocked()
	n.mu.Unlock()
	// The leader adopts this state as committed history: it must be
	// durable here first.
	if err := n.waitDurable(ctx, p, last); err != nil {
		return nil, fmt.Errorf("node %s: snapshot: %w", n.cfg.ID, err)
	}
	return snap, nil
}

// Leave serves the leader's word that this node was removed: if the voter
// record no longer names it and the word comes from a leader of an epoch it
// has not moved past, the node stops (in the background: the answer goes
// out first), which ends its membership.
func (s *peerServer) Leave(ctx context.Context, req *kvpb.LeaveRequest) (*kvpb.LeaveResponse, error) {
	n := s.n
	if err := s.checkCluster(req.Cluster); err != nil {
		return nil, err
	}
	if faultsOn && n.cfg.Faults.IgnoreLeave {
		return nil, fmt.Errorf("node %s: leave: %w (Faults.IgnoreLeave)", n.cfg.ID, kvstore.ErrBadRequest)
	}
	if req.Id != n.cfg.ID {
		return nil, fmt.Errorf("%w: leave for %q reached node %s", kvstore.ErrBadRequest, req.Id, n.cfg.ID)
	}
	n.mu.Lock()
	accepted := n.acceptedEpoch
	n.mu.Unlock()
	if req.Epoch < accepted {
		return nil, fmt.Errorf("node %s: leave from epoch %d, promised %d: %w", n.cfg.ID, req.Epoch, accepted, kvstore.ErrStaleEpoch)
	}
	v, err := n.cfg.Coordinator.Voters(ctx)
	if err != nil {
		return nil, fmt.Errorf("node %s: leave: read voters: %w", n.cfg.ID, err)
	}
	if v.Contains(n.cfg.ID) {
		return nil, fmt.Errorf("%w: node %s is still a voter (%v)", kvstore.ErrBadRequest, n.cfg.ID, v.IDs)
	}
	n.log.Warn("removed from the voter record: leaving the cluster", "leader", req.LeaderId, "epoch", req.Epoch, "voters", v.IDs)
	if n.removed.CompareAndSwap(false, true) {
		n.stopItself(fmt.Errorf("node %s: %w: %w", n.cfg.ID, kvstore.ErrStopped, kvstore.ErrRemoved))
	}
	return &kvpb.LeaveResponse{}, nil
}

package node

// The follower side of the node-to-node service (kvpb.Peer): what a
// leader asks of every node (Prepare, Append, GetSnapshot, Leave; Probe
// is in campaign.go). The leader side, what followers ask of the leader,
// is in peer_leader.go.

import (
	"context"
	"fmt"
	"time"

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

// checkCluster refuses a message for another cluster (name c:
// ErrBadRequest) or of another incarnation of it (inc: ErrWrongNode; ""
// from builds before incarnations were sent is not checked)
// (docs/design.md, Cluster identity and incarnation). The node serves
// RPC only once Start has read its own incarnation; a node driven
// directly in tests before that checks none.
func (s *peerServer) checkCluster(c, inc string) error {
	if c != s.n.cfg.Cluster {
		return fmt.Errorf("%w: message for cluster %q reached cluster %q", kvstore.ErrBadRequest, c, s.n.cfg.Cluster)
	}
	own := s.n.incarnation.Load()
	if own != nil && inc != "" && inc != *own && !(faultsOn && s.n.cfg.Faults.AcceptOtherIncarnation) {
		s.n.met.otherIncarnation.Inc()
		if now := time.Now().UnixNano(); now-s.n.otherIncLogged.Load() > int64(time.Minute) {
			s.n.otherIncLogged.Store(now)
			s.n.log.Warn("refusing node-to-node messages of another cluster incarnation: a node of another cluster with this name reaches this node, likely at an address this cluster's nodes still know (a reused address)",
				"cluster", c, "incarnation", *own, "their_incarnation", inc)
		}
		return fmt.Errorf("%w: message of cluster %q incarnation %s reached incarnation %s: a node of another cluster of that name", kvstore.ErrWrongNode, c, inc, *own)
	}
	return nil
}

// checkAddressee refuses, with ErrWrongNode, a message meant for another
// node (to, its id; "" from builds before it was sent is not checked),
// sent to an address the sender still knows for that node, which this
// node now has. Counted as the other node's answer, this node's would
// count twice toward a majority (docs/design.md, Cluster identity and
// incarnation).
func (s *peerServer) checkAddressee(to string) error {
	if to != "" && to != s.n.cfg.ID && !(faultsOn && s.n.cfg.Faults.IgnoreAddressee) {
		return fmt.Errorf("%w: message for node %q reached node %q", kvstore.ErrWrongNode, to, s.n.cfg.ID)
	}
	return nil
}

// incarnationSent is the incarnation this node's messages carry ("" before
// Start has read it: such a message is not checked).
func (n *Node) incarnationSent() string {
	if p := n.incarnation.Load(); p != nil {
		return *p
	}
	return ""
}

// leadership names one leadership: the leader's id and the random number
// it chose when it was elected. The zero value is "unknown" (a promise
// made without one, or a message of an older leader).
type leadership struct {
	id    string
	nonce uint64
}

// Prepare implements the first step of a takeover (docs/design.md).
func (s *peerServer) Prepare(ctx context.Context, req *kvpb.PrepareRequest) (*kvpb.PrepareResponse, error) {
	if err := s.checkCluster(req.Cluster, req.Incarnation); err != nil {
		return nil, err
	}
	if err := s.checkAddressee(req.To); err != nil {
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
	st, p := n.rep.prepare(epoch, ld)
	if st.refused {
		return &kvpb.PrepareResponse{Ok: false, AcceptedEpoch: st.promised, NodeId: n.cfg.ID, OtherLeadership: st.other}, nil
	}
	if err := n.waitDurable(ctx, p); err != nil {
		return nil, fmt.Errorf("node %s: prepare(%d): %w", n.cfg.ID, epoch, err)
	}
	return &kvpb.PrepareResponse{
		Ok:            true,
		AcceptedEpoch: st.promised,
		Applied:       toPos(st.applied),
		Recovering:    st.reconcile, // a voter with an unreconciled store counts toward no majority
		NodeId:        n.cfg.ID,
	}, nil
}

// Append applies entries or a snapshot from the leader of req.Epoch.
func (s *peerServer) Append(ctx context.Context, req *kvpb.AppendRequest) (*kvpb.AppendResponse, error) {
	if err := s.checkCluster(req.Cluster, req.Incarnation); err != nil {
		return nil, err
	}
	if err := s.checkAddressee(req.To); err != nil {
		return nil, err
	}
	if err := validateAppend(req); err != nil {
		return nil, fmt.Errorf("node %s: %w", s.n.cfg.ID, err)
	}
	resp, p, err := s.append(ctx, req)
	if err != nil {
		return nil, err
	}
	if resp.Received != nil {
		// An early answer: applied is what is on disk. With no entries it
		// waits for the oldest entries not known to be on disk.
		if p != nil && !(faultsOn && s.n.cfg.Faults.SkipDurableWait) {
			if err := s.n.waitDurable(ctx, p); err != nil {
				return nil, fmt.Errorf("node %s: append: %w", s.n.cfg.ID, err)
			}
			resp.Applied = toPos(s.n.rep.onDiskNow())
		}
		return resp, nil
	}
	// The position answered counts toward majorities: it must be durable.
	wait := s.n.waitDurable
	if req.Snapshot == nil {
		wait = s.n.waitEntriesDurable
	}
	if err := wait(ctx, p); err != nil {
		return nil, fmt.Errorf("node %s: append: %w", s.n.cfg.ID, err)
	}
	return resp, nil
}

// append applies req, which validateAppend accepted, and returns the answer
// with the submission that must be durable before it is sent. A refused
// request changes nothing but the promised epoch.
func (s *peerServer) append(ctx context.Context, req *kvpb.AppendRequest) (*kvpb.AppendResponse, *durable.Pending, error) {
	n := s.n
	ld := leadership{req.LeaderId, req.Leadership}
	var st standing
	var p *durable.Pending
	var err error
	if req.Snapshot != nil {
		st, p, err = n.rep.installSnapshot(req.Epoch, ld, fromSnapshot(req.Snapshot))
	} else {
		entries := make([]store.Entry, len(req.Entries))
		for i, pe := range req.Entries {
			entries[i] = fromEntry(pe)
		}
		st, p, err = n.rep.appendEntries(ctx, req.Epoch, ld, fromPos(req.Prev), entries, req.AnswerEarly, req.Pipelined)
	}
	if !st.refused {
		n.met.appended(n.now())
	}
	if err != nil {
		return nil, p, fmt.Errorf("node %s: %w", n.cfg.ID, err)
	}
	resp := &kvpb.AppendResponse{Ok: st.ok, AcceptedEpoch: st.promised, Applied: toPos(st.applied), Reconcile: st.reconcile, OtherLeadership: st.other}
	if st.early {
		// Answered before the entries are on disk: received is what the
		// leader may take as invalidated, applied only what is on disk
		// (all of it under the deliberate bug, as if it had waited).
		resp.Received = resp.Applied
		if !(faultsOn && n.cfg.Faults.SkipDurableWait) {
			resp.Applied = toPos(st.onDisk)
		}
	}
	return resp, p, nil
}

// Leave serves the leader's word that this node was removed: if the voter
// record no longer names it and the word comes from a leader of an epoch it
// has not moved past, the node stops (in the background: the answer goes
// out first), which ends its membership.
func (s *peerServer) Leave(ctx context.Context, req *kvpb.LeaveRequest) (*kvpb.LeaveResponse, error) {
	n := s.n
	if err := s.checkCluster(req.Cluster, req.Incarnation); err != nil {
		return nil, err
	}
	if faultsOn && n.cfg.Faults.IgnoreLeave {
		return nil, fmt.Errorf("node %s: leave: %w (Faults.IgnoreLeave)", n.cfg.ID, kvstore.ErrBadRequest)
	}
	if req.Id != n.cfg.ID {
		return nil, fmt.Errorf("%w: leave for %q reached node %s", kvstore.ErrBadRequest, req.Id, n.cfg.ID)
	}
	accepted := n.rep.epoch()
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

package node

// The leader side of the node-to-node service (kvpb.Peer): what a
// follower asks of the leader on behalf of its clients (Fetch, Write,
// RemoveVoter). The follower side is in peer_follower.go.

import (
	"context"
	"fmt"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/rpc/kvpb"
)

// Fetch serves a read at the leader.
func (s *peerServer) Fetch(ctx context.Context, req *kvpb.FetchRequest) (*kvpb.FetchResponse, error) {
	l, err := s.checkFetch(req)
	if err != nil {
		return nil, err
	}
	r, err := l.read(ctx, req.Key, req.FromId)
	return s.fetchResponse(l, r, err)
}

// checkFetch is what Fetch checks before it reads: the request's cluster
// and the read itself. It returns this node's leadership.
func (s *peerServer) checkFetch(req *kvpb.FetchRequest) (*leader, error) {
	if err := s.checkCluster(req.Cluster, req.Incarnation); err != nil {
		return nil, err
	}
	if err := validateFetch(req); err != nil {
		return nil, fmt.Errorf("node %s: %w", s.n.cfg.ID, err)
	}
	l := s.n.lead.Load()
	if l == nil {
		return nil, fmt.Errorf("node %s: %w", s.n.cfg.ID, kvstore.ErrNotLeader)
	}
	return l, nil
}

// fetchResponse is Fetch's answer for l's result r, counted as served.
func (s *peerServer) fetchResponse(l *leader, r readResult, err error) (*kvpb.FetchResponse, error) {
	if err != nil {
		return nil, err
	}
	s.n.served.Add(1)
	return &kvpb.FetchResponse{Value: r.value, Found: r.found, Version: toPos(r.version), Epoch: l.epoch, LeaseMs: r.lease.Milliseconds()}, nil
}

// Renew renews, at the leader, the leases of a follower's cached copies
// that are still the visible latest version of their key.
func (s *peerServer) Renew(ctx context.Context, req *kvpb.RenewRequest) (*kvpb.RenewResponse, error) {
	if err := s.checkCluster(req.Cluster, req.Incarnation); err != nil {
		return nil, err
	}
	if err := validateRenew(req); err != nil {
		return nil, fmt.Errorf("node %s: %w", s.n.cfg.ID, err)
	}
	l := s.n.lead.Load()
	if l == nil {
		return nil, fmt.Errorf("node %s: %w", s.n.cfg.ID, kvstore.ErrNotLeader)
	}
	leases, err := l.leases.renew(req.FromId, req.Keys)
	if err != nil {
		return nil, err
	}
	return &kvpb.RenewResponse{Epoch: l.epoch, LeaseMs: leases}, nil
}

// Write serves a forwarded write at the leader.
func (s *peerServer) Write(ctx context.Context, req *kvpb.WriteRequest) (*kvpb.WriteResponse, error) {
	l, err := s.checkWrite(req)
	if err != nil {
		return nil, err
	}
	r, err := l.write(ctx, storeOp(req.Op), req.Key, req.Value, req.ReqId, req.FromId)
	return writeResponse(l, r, err)
}

// checkWrite is what Write checks before it writes: the request's cluster,
// the write itself, that this node leads, and the leader's own limits
// (which hold whichever node the client reached). It returns this node's
// leadership. Leadership comes before the limits: the sender takes a
// leader's ErrTooLarge as final (retryable), and a node that does not
// lead must not refuse a write another leader, with larger limits, would
// take.
func (s *peerServer) checkWrite(req *kvpb.WriteRequest) (*leader, error) {
	if err := s.checkCluster(req.Cluster, req.Incarnation); err != nil {
		return nil, err
	}
	if err := validateWrite(req.Op, req.Key, req.Value, req.ReqId); err != nil {
		return nil, fmt.Errorf("node %s: write: %w", s.n.cfg.ID, err)
	}
	l := s.n.lead.Load()
	if l == nil {
		return nil, fmt.Errorf("node %s: %w", s.n.cfg.ID, kvstore.ErrNotLeader)
	}
	if err := s.n.limits.checkWrite(req.Key, req.Value); err != nil {
		return nil, fmt.Errorf("node %s: write: %w", s.n.cfg.ID, err)
	}
	return l, nil
}

// writeResponse is Write's answer for l's result r.
func writeResponse(l *leader, r writeResult, err error) (*kvpb.WriteResponse, error) {
	if err != nil {
		return nil, err
	}
	return &kvpb.WriteResponse{Version: toPos(r.version), Epoch: l.epoch, LeaseMs: r.lease.Milliseconds()}, nil
}

// RemoveVoter serves a forwarded removal at the leader.
func (s *peerServer) RemoveVoter(ctx context.Context, req *kvpb.RemoveVoterRequest) (*kvpb.RemoveVoterResponse, error) {
	if err := s.checkCluster(req.Cluster, req.Incarnation); err != nil {
		return nil, err
	}
	if err := checkKey("node id", req.Id, storedKeys); err != nil {
		return nil, fmt.Errorf("node %s: remove: %w", s.n.cfg.ID, err)
	}
	l := s.n.lead.Load()
	if l == nil {
		return nil, fmt.Errorf("node %s: %w", s.n.cfg.ID, kvstore.ErrNotLeader)
	}
	v, err := l.removeVoter(ctx, req.Id)
	if err != nil {
		return nil, err
	}
	return &kvpb.RemoveVoterResponse{Voters: v.IDs}, nil
}

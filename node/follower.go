package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/clock"
	"github.com/kvstore/kvstore/coord"
	"github.com/kvstore/kvstore/durable"
	"github.com/kvstore/kvstore/rpc"
	"github.com/kvstore/kvstore/rpc/kvpb"
	"github.com/kvstore/kvstore/store"
	"google.golang.org/grpc"
	grpcpeer "google.golang.org/grpc/peer"
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

// Prepare implements the first step of a takeover (docs/design.md).
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

// Fetch serves a read at the leader.
func (s *peerServer) Fetch(ctx context.Context, req *kvpb.FetchRequest) (*kvpb.FetchResponse, error) {
	if err := s.checkCluster(req.Cluster); err != nil {
		return nil, err
	}
	if err := validateFetch(req); err != nil {
		return nil, fmt.Errorf("node %s: %w", s.n.cfg.ID, err)
	}
	l := s.n.lead.Load()
	if l == nil {
		return nil, fmt.Errorf("node %s: %w", s.n.cfg.ID, kvstore.ErrNotLeader)
	}
	r, err := l.read(ctx, req.Key, req.FromId)
	if err != nil {
		return nil, err
	}
	s.n.served.Add(1)
	return &kvpb.FetchResponse{Value: r.value, Found: r.found, Version: toPos(r.version), Epoch: l.epoch, LeaseMs: r.lease.Milliseconds()}, nil
}

// Write serves a forwarded write at the leader.
func (s *peerServer) Write(ctx context.Context, req *kvpb.WriteRequest) (*kvpb.WriteResponse, error) {
	if err := s.checkCluster(req.Cluster); err != nil {
		return nil, err
	}
	if err := validateWrite(req.Op, req.Key, req.Value, req.ReqId); err != nil {
		return nil, fmt.Errorf("node %s: write: %w", s.n.cfg.ID, err)
	}
	// The leader's own limits hold whichever node the client reached.
	if err := s.n.checkWrite(req.Key, req.Value); err != nil {
		return nil, fmt.Errorf("node %s: write: %w", s.n.cfg.ID, err)
	}
	l := s.n.lead.Load()
	if l == nil {
		return nil, fmt.Errorf("node %s: %w", s.n.cfg.ID, kvstore.ErrNotLeader)
	}
	r, err := l.write(ctx, storeOp(req.Op), req.Key, req.Value, req.ReqId, req.FromId)
	if err != nil {
		return nil, err
	}
	return &kvpb.WriteResponse{Version: toPos(r.version), Epoch: l.epoch, LeaseMs: r.lease.Milliseconds()}, nil
}

// cachedGet is the local read path: no allocation, one read lock of one
// cache shard. ok is false when the key must be fetched from the leader;
// hit numbers the reads answered by that shard (for sampling).
func (n *Node) cachedGet(key string, now clock.Instant) (value string, found, ok bool, hit uint64) {
	if key == "" {
		return "", false, false, 0
	}
	st := n.serving.Load()
	if !(faultsOn && n.cfg.Faults.IgnoreLease) {
		if st.state != StateOK || st.sess == nil || !now.Before(st.sess.Deadline()) {
			return "", false, false, 0
		}
		if n.view.Load().leader.Epoch != n.acceptedEpochA.Load() {
			return "", false, false, 0
		}
	}
	s := n.cache.shard(key)
	s.mu.RLock()
	e, in := s.m[key]
	s.mu.RUnlock()
	if !in || (!(faultsOn && n.cfg.Faults.IgnoreLease) && !now.Before(e.expiry)) {
		return "", false, false, 0
	}
	return e.value, e.found, true, s.hits.Add(1)
}

// dropCache forgets every cached copy.
func (n *Node) dropCache() {
	if faultsOn && n.cfg.Faults.IgnoreLease {
		return
	}
	n.cache.clear()
}

// invalidate drops key's cached copy if it is older than v.
func (n *Node) invalidate(key string, v store.Version) {
	if n.cache.dropOlder(key, v) {
		n.met.invalidationsApplied.Inc()
	}
}

// install caches a value the leader of epoch handed out as committed, unless
// it is older than what this node has applied or cached since (a reply that
// overtook an invalidation), or the node left the serving state st the
// request was sent under (leaving it dropped the cache, under n.mu as
// here: a reply installed after that drop would outlive it). sent is when
// the request left this node: the lease runs from then.
func (n *Node) install(st *servingState, key, value string, found bool, v store.Version, epoch int64, lease time.Duration, sent clock.Instant) {
	if lease <= 0 {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if epoch != n.acceptedEpoch || n.serving.Load() != st {
		return
	}
	if it, ok := n.store.Get(key); ok && v.Less(it.Version) {
		return
	}
	n.cache.put(key, cacheEntry{value: value, found: found, version: v, expiry: sent.Add(lease)})
}

// leaderTarget waits until a leader is known and returns it: this node's
// leader role, or the address of another node and that leader (id and
// epoch), for toLeader.
//
// With no leader to be had, it fails with ErrNoQuorum once a probe round
// that began after the wait shows no majority of the voters answering
// this node: no leader can come of its side (pre-vote), and waiting out
// the deadline would only hide that.
func (n *Node) leaderTarget(ctx context.Context) (*leader, string, coord.Leader, error) {
	r := n.reach.Load()
	var round uint64
	if r != nil {
		round = r.round() + 1 // a round in progress may have begun before
	}
	for {
		ch := n.changed()
		v := n.view.Load()
		if v.leader.ID == n.cfg.ID {
			if l := n.lead.Load(); l != nil && l.epoch == v.leader.Epoch {
				return l, "", v.leader, nil
			}
		} else if addr := v.members[v.leader.ID]; v.leader.ID != "" && addr != "" {
			return nil, addr, v.leader, nil
		}
		if err := n.noQuorum(r, round); err != nil {
			return nil, "", coord.Leader{}, err
		}
		var probed <-chan struct{}
		if r != nil {
			probed = r.wait()
		}
		select {
		case <-ch:
		case <-probed:
		case <-ctx.Done():
			if errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
				return nil, "", coord.Leader{}, fmt.Errorf("node %s: %w: %w", n.cfg.ID, kvstore.ErrNoLeader, kvstore.ErrTimeout)
			}
			return nil, "", coord.Leader{}, ctxErr(ctx)
		}
	}
}

// retryPause waits a little before the next attempt, or returns ctx's error.
func (n *Node) retryPause(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return ctxErr(ctx)
	case <-n.changed():
		return nil
	case <-time.After(n.cfg.Heartbeat / 2):
		return nil
	}
}

// get reads key from the leader (or as the leader) and caches the reply.
func (n *Node) get(ctx context.Context, key string) (string, bool, error) {
	if err := checkKeyShape(key); err != nil {
		// A key the leader would refuse, or that cannot be sent.
		return "", false, fmt.Errorf("node %s: %w", n.cfg.ID, err)
	}
	var lastErr error
	joined := false // this read has waited for another read's fetch of key
	for {
		l, addr, target, err := n.leaderTarget(ctx)
		if err != nil {
			return "", false, joinLast(err, lastErr)
		}
		if l != nil {
			st, sent := n.serving.Load(), n.now()
			r, err := l.read(ctx, key, n.cfg.ID)
			if err == nil {
				n.leaderReads.Add(1)
				n.install(st, key, r.value, r.found, r.version, l.epoch, r.lease, sent)
				return r.value, r.found, nil
			}
			if !retryable(err) {
				return "", false, err
			}
			lastErr = err
		} else {
			resp, err := n.fetchMerged(ctx, addr, target, key, &joined)
			if err == nil && resp != nil {
				n.misses.Add(1)
				return resp.Value, resp.Found, nil
			}
			if err == nil { // waited for another read's fetch
				if v, f, ok, _ := n.cachedGet(key, n.now()); ok {
					return v, f, nil
				}
				continue
			}
			if !retryable(err) {
				return "", false, err
			}
			lastErr = n.leaderErr(target, addr, err)
		}
		if err := n.retryPause(ctx); err != nil {
			return "", false, joinLast(err, lastErr)
		}
	}
}

// fetchMerged fetches key from the leader at addr, merging concurrent
// misses of one key into one fetch: the first read sends it and installs the
// answer in the cache; reads that arrive meanwhile wait for it (resp and err
// nil) and then look in the cache. They may not take its answer itself: it
// may have been read at the leader before they began, and a write
// acknowledged in between would make it stale. A fetch found in flight after
// such a wait was sent after the read began, so its answer is returned to it
// as its own. joined carries that state across calls.
func (n *Node) fetchMerged(ctx context.Context, addr string, target coord.Leader, key string, joined *bool) (*kvpb.FetchResponse, error) {
	n.flightMu.Lock()
	f := n.flights[key]
	if f == nil {
		f = &flight{done: make(chan struct{})}
		n.flights[key] = f
		n.flightMu.Unlock()
		st, sent := n.serving.Load(), n.now()
		f.resp, f.err = n.fetch(ctx, addr, target, key)
		if f.err == nil {
			n.install(st, key, f.resp.Value, f.resp.Found, fromPos(f.resp.Version), f.resp.Epoch, time.Duration(f.resp.LeaseMs)*time.Millisecond, sent)
		}
		n.flightMu.Lock()
		delete(n.flights, key)
		n.flightMu.Unlock()
		close(f.done)
		return f.resp, f.err
	}
	n.flightMu.Unlock()
	select {
	case <-f.done:
	case <-ctx.Done():
		return nil, ctxErr(ctx)
	}
	if *joined && f.err == nil {
		return f.resp, nil
	}
	// Look in the cache, or (if that fetch failed for its own reasons, its
	// deadline say) try again, as the sender of the next fetch if need be.
	*joined = true
	return nil, nil
}

// flight is one fetch from the leader that concurrent misses of a key share.
type flight struct {
	done chan struct{} // closed when resp and err are set
	resp *kvpb.FetchResponse
	err  error
}

// fetch reads key at the leader target (at addr). The call ends as soon as
// this node sees another leader (toLeader): get then reads at the new one.
func (n *Node) fetch(ctx context.Context, addr string, target coord.Leader, key string) (*kvpb.FetchResponse, error) {
	c, err := n.pool.Peer(addr)
	if err != nil {
		return nil, err
	}
	cctx, done := n.toLeader(ctx, target)
	defer done()
	if cctx.Err() != nil {
		return nil, callErr(cctx, ctxErr(cctx))
	}
	resp, err := c.Fetch(cctx, &kvpb.FetchRequest{Cluster: n.cfg.Cluster, Key: key, FromId: n.cfg.ID})
	if err != nil {
		return nil, callErr(cctx, rpc.FromStatus(err))
	}
	return resp, nil
}

// forwardWrite sends a write to the leader (or applies it as the leader),
// retrying with the same request id until it is acknowledged, fails
// definitely, or ctx ends. A call in flight to a leader this node no longer
// sees as the leader (it learned of a newer one) is dropped at once and the
// write retried at the new leader: the request id makes the retry exact,
// since a leader that serves holds every entry of older epochs that can
// still commit, and applies the write only if the id is not among them. A
// failure is reported as outcome unknown only if an attempt may have been
// applied: one that reached a leader and got no answer that proves it
// applied nothing (definite).
func (n *Node) forwardWrite(ctx context.Context, op kvpb.Op, key, value, reqID string) error {
	// Every write passes here first, on the node it entered: one the leader
	// would refuse, or that would make an entry no follower can take (or no
	// leader can even send), fails at once.
	if err := validateWrite(op, key, value, reqID); err != nil {
		return fmt.Errorf("node %s: %w", n.cfg.ID, err)
	}
	var lastErr error
	mayApplied := false // some attempt may have been applied
	fail := func(err error) error {
		err = joinLast(err, lastErr)
		if mayApplied && !errors.Is(err, kvstore.ErrOutcomeUnknown) {
			return fmt.Errorf("%w: %w", kvstore.ErrOutcomeUnknown, err)
		}
		return err
	}
	for {
		l, addr, target, err := n.leaderTarget(ctx)
		if err != nil {
			return fail(err)
		}
		st, sent := n.serving.Load(), n.now()
		var ver store.Version
		var epoch int64
		var lease time.Duration
		if l != nil {
			var r writeResult
			r, err = l.write(ctx, storeOp(op), key, value, reqID, n.cfg.ID)
			ver, epoch, lease = r.version, l.epoch, r.lease
			if err != nil && !definite(err) {
				mayApplied = true
			}
		} else {
			var resp *kvpb.WriteResponse
			var reached bool
			resp, reached, err = n.sendWrite(ctx, addr, target, &kvpb.WriteRequest{Cluster: n.cfg.Cluster, Op: op, Key: key, Value: value, ReqId: reqID, FromId: n.cfg.ID})
			if err == nil {
				ver, epoch, lease = fromPos(resp.Version), resp.Epoch, time.Duration(resp.LeaseMs)*time.Millisecond
			} else if reached && !definite(err) {
				mayApplied = true
			}
		}
		if err == nil {
			// The writer's node caches the value it wrote (docs/design.md,
			// Writes and visibility).
			n.install(st, key, value, op == kvpb.Op_OP_SET, ver, epoch, lease, sent)
			return nil
		}
		if !retryable(err) {
			return fail(err)
		}
		if l == nil {
			err = n.leaderErr(target, addr, err)
		}
		lastErr = err
		if err := n.retryPause(ctx); err != nil {
			return fail(err)
		}
	}
}

// sendWrite sends one forwarded write to the leader target at addr. reached
// reports whether the request may have left this node: gRPC reports the
// peer only for an attempt that got a stream on a connection, and without
// one the request never left. The call ends as soon as this node sees
// another leader (toLeader).
func (n *Node) sendWrite(ctx context.Context, addr string, target coord.Leader, req *kvpb.WriteRequest) (resp *kvpb.WriteResponse, reached bool, err error) {
	c, err := n.pool.Peer(addr)
	if err != nil {
		return nil, false, err
	}
	cctx, done := n.toLeader(ctx, target)
	defer done()
	if cctx.Err() != nil {
		return nil, false, callErr(cctx, ctxErr(cctx))
	}
	var p grpcpeer.Peer
	resp, err = c.Write(cctx, req, grpc.Peer(&p))
	if err != nil {
		return nil, p.Addr != nil, callErr(cctx, rpc.FromStatus(err))
	}
	return resp, true, nil
}

// retryable reports whether an attempt may be retried (with the same
// request id): the leader moved, is electing, or could not be reached. This
// node's own partition or stop ends the operation's context, which the
// retry loop checks.
func retryable(err error) bool {
	return !errors.Is(err, kvstore.ErrBadRequest) && !errors.Is(err, kvstore.ErrNoQuorum)
}

// leaderErr names the leader an attempt went to, for the error message.
func (n *Node) leaderErr(ld coord.Leader, addr string, err error) error {
	return fmt.Errorf("leader %s (epoch %d) at %s: %w", ld.ID, ld.Epoch, addr, err)
}

// joinLast adds the last attempt's error to err's message, for diagnosis.
func joinLast(err, last error) error {
	if last == nil || errors.Is(err, last) {
		return err
	}
	return fmt.Errorf("%w (last attempt: %v)", err, last)
}

func storeOp(op kvpb.Op) store.Op {
	switch op {
	case kvpb.Op_OP_SET:
		return store.OpSet
	case kvpb.Op_OP_DELETE:
		return store.OpDelete
	}
	return store.OpNoop
}

func pbOp(op store.Op) kvpb.Op {
	switch op {
	case store.OpSet:
		return kvpb.Op_OP_SET
	case store.OpDelete:
		return kvpb.Op_OP_DELETE
	}
	return kvpb.Op_OP_NOOP
}

func toPos(v store.Version) *kvpb.Position { return &kvpb.Position{Epoch: v.Epoch, Seq: v.Seq} }

func fromPos(p *kvpb.Position) store.Version {
	return store.Version{Epoch: p.GetEpoch(), Seq: p.GetSeq()}
}

func toEntry(e store.Entry) *kvpb.Entry {
	return &kvpb.Entry{Epoch: e.Version.Epoch, Seq: e.Version.Seq, Op: pbOp(e.Op), Key: e.Key, Value: e.Value, ReqId: e.ReqID}
}

func fromEntry(e *kvpb.Entry) store.Entry {
	return store.Entry{Version: store.Version{Epoch: e.Epoch, Seq: e.Seq}, Op: storeOp(e.Op), Key: e.Key, Value: e.Value, ReqID: e.ReqId}
}

func toSnapshot(s store.Snapshot) *kvpb.Snapshot {
	out := &kvpb.Snapshot{Applied: toPos(s.Applied), Items: make([]*kvpb.Item, 0, len(s.Items)), Requests: make([]*kvpb.Request, 0, len(s.Requests))}
	for k, it := range s.Items {
		out.Items = append(out.Items, &kvpb.Item{Key: k, Value: it.Value, Deleted: it.Deleted, Version: toPos(it.Version)})
	}
	for _, r := range s.Requests {
		out.Requests = append(out.Requests, &kvpb.Request{Id: r.ID, Version: toPos(r.Version)})
	}
	return out
}

func fromSnapshot(p *kvpb.Snapshot) store.Snapshot {
	s := store.Snapshot{Applied: fromPos(p.Applied), Items: make(map[string]store.Item, len(p.Items)), Requests: make([]store.Request, 0, len(p.Requests))}
	for _, it := range p.Items {
		s.Items[it.Key] = store.Item{Value: it.Value, Deleted: it.Deleted, Version: fromPos(it.Version)}
	}
	for _, r := range p.Requests {
		s.Requests = append(s.Requests, store.Request{ID: r.Id, Version: fromPos(r.Version)})
	}
	return s
}

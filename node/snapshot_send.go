package node

// The leader side of snapshot transfer (docs/design.md, Snapshots). A
// follower whose position the leader's log no longer holds (or that asks
// to be reconciled) gets the leader's whole state: a frozen view of the
// store (store.View, constant time, no copy) read in key order and sent in
// chunks of about Config.SnapshotChunkBytes, up to SnapshotChunksInFlight
// of them in flight, while writes go on. If a call fails, the replicate
// loop tries again at the heartbeat pace with the same view: the follower
// answers where its staging of that snapshot ends, and the transfer
// resumes there.
//
// The same chunking serves GetSnapshot, a new leader's pull of the most
// up-to-date voter's state (takeover.go).

import (
	"context"
	"errors"
	"fmt"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/clock"
	"github.com/kvstore/kvstore/rpc"
	"github.com/kvstore/kvstore/rpc/kvpb"
	"github.com/kvstore/kvstore/store"
)

// itemOverhead is what an item costs in a chunk besides its key and value
// (its version and the encoding), counted toward the chunk's bytes.
const itemOverhead = 32

// snapshotSend is a snapshot on its way to one follower: the frozen state
// and where the follower's staging of it is known to end.
type snapshotSend struct {
	view    *store.View
	after   string // the last key staged
	reqFrom int    // request ids staged
}

// chunk is the part of v after key after (then the request ids from
// reqFrom on, once the items are done) that fits about max bytes (an item
// larger than max travels alone); last reports that nothing follows it.
func chunk(v *store.View, after string, reqFrom, max int) (items []*kvpb.Item, reqs []*kvpb.Request, last bool) {
	size := 0
	done := true
	if reqFrom == 0 {
		v.Ascend(after, func(k string, it store.Item) bool {
			n := len(k) + len(it.Value) + itemOverhead
			if len(items) > 0 && size+n > max {
				done = false
				return false
			}
			items = append(items, &kvpb.Item{Key: k, Value: it.Value, Deleted: it.Deleted, Version: toPos(it.Version)})
			size += n
			return true
		})
	}
	if !done {
		return items, nil, false
	}
	all := v.Requests()
	for i := reqFrom; i < len(all); i++ {
		n := len(all[i].ID) + itemOverhead
		if size+n > max && (len(items) > 0 || len(reqs) > 0) {
			return items, reqs, false
		}
		reqs = append(reqs, &kvpb.Request{Id: all[i].ID, Version: toPos(all[i].Version)})
		size += n
	}
	return items, reqs, true
}

// SnapshotChunksInFlight is how many chunks of a snapshot the leader
// keeps in flight to one follower, once the follower took the first: the
// leader reads and encodes the next chunks while the follower decodes and
// stages one (with one at a time, each side waited for the other).
const SnapshotChunksInFlight = 4

// chunkWindow is the InstallSnapshot calls in flight to one follower,
// oldest first, under a context that ends them all.
type chunkWindow struct {
	ctx    context.Context
	cancel context.CancelFunc
	calls  []*chunkCall
}

// open starts an empty window under parent.
func (w *chunkWindow) open(parent context.Context) {
	w.ctx, w.cancel = context.WithCancel(parent)
}

// close ends the calls in flight and waits for them.
func (w *chunkWindow) close() {
	w.cancel()
	for _, c := range w.calls {
		<-c.done
	}
	w.calls = nil
}

// chunkCall is one InstallSnapshot call in flight.
type chunkCall struct {
	req  *kvpb.SnapshotChunk
	sent clock.Instant
	resp *kvpb.SnapshotChunkResponse
	err  error
	done chan struct{}
}

// sendSnapshot sends the leader's state to the follower of p, chunk after
// chunk with up to SnapshotChunksInFlight calls in flight, until the
// follower installed it (true), a call fails or the follower refuses
// (false: the replicate loop waits a heartbeat and calls again, and the
// transfer resumes), or the leadership ends. The answers are handled in
// the order the chunks were sent; the first that is not "taken" ends the
// calls behind it (the follower holds a chunk that overtook its
// predecessor until that one is staged, so they would wait in vain).
func (r *replication) sendSnapshot(p *progress) bool {
	l := r.l
	n := l.n
	s := r.snapshotFor(p)
	addr := n.view.Load().members[p.id]
	if addr == "" {
		r.chunkFailed(p, errors.New("no address"))
		return false
	}
	c, err := n.pool.Peer(addr)
	if err != nil {
		r.chunkFailed(p, err)
		return false
	}
	var w chunkWindow
	w.open(l.ctx)
	defer w.close()
	// Where the next chunk starts: the follower's staging as last known
	// (s), moved on by the chunks in flight.
	after, reqFrom, lastSent := s.after, s.reqFrom, false
	// probing: until the follower took a chunk of this call, one goes at
	// a time (as etcd-io/raft's Progress probes before it replicates): the
	// first chunk starts the staging, and after a break the leader does
	// not know where the staging ends.
	probing := true
	for l.ctx.Err() == nil {
		limit := SnapshotChunksInFlight
		if probing {
			limit = 1
		}
		for !lastSent && len(w.calls) < limit {
			items, reqs, last := chunk(s.view, after, reqFrom, n.cfg.SnapshotChunkBytes)
			req := &kvpb.SnapshotChunk{Cluster: n.cfg.Cluster, Incarnation: n.incarnationSent(), To: p.id, Epoch: l.epoch, LeaderId: l.ld.id, Leadership: l.ld.nonce,
				Applied: toPos(s.view.Applied()), After: after, Items: items, Last: last, Requests: reqs, RequestsFrom: uint64(reqFrom)}
			if last {
				req.Count = uint64(s.view.Len())
			}
			call := &chunkCall{req: req, sent: n.now(), done: make(chan struct{})}
			wctx := w.ctx
			go func() {
				defer close(call.done)
				cctx, ccancel := context.WithTimeout(wctx, n.cfg.RPCTimeout)
				defer ccancel()
				call.resp, call.err = c.InstallSnapshot(cctx, req)
			}()
			n.chunksSent.Add(1)
			w.calls = append(w.calls, call)
			if k := len(items); k > 0 {
				after = items[k-1].Key
			}
			reqFrom += len(reqs)
			lastSent = last
		}
		call := w.calls[0]
		<-call.done
		w.calls = w.calls[1:]
		if call.err != nil {
			r.chunkFailed(p, rpc.FromStatus(call.err))
			return false
		}
		if done, installed := r.handleChunk(p, s, call.req, call.resp, call.sent); done {
			return installed
		}
		probing = !call.resp.Taken
		if probing {
			// Go on from the follower's staging (handleChunk moved s
			// there): the calls behind this one are void.
			w.close()
			w.open(l.ctx)
			after, reqFrom, lastSent = s.after, s.reqFrom, false
		}
	}
	return false
}

// snapshotFor is the snapshot on its way to p: the one under way (so that
// a transfer that broke resumes), unless the log no longer holds its
// position (entries could not follow it), or a new view of the leader's
// state.
func (r *replication) snapshotFor(p *progress) *snapshotSend {
	l := r.l
	l.mu.Lock()
	defer l.mu.Unlock()
	if p.snap == nil || !l.history(l.epoch).holds(p.snap.view.Applied()) {
		p.snap = &snapshotSend{view: l.n.rep.view()}
	}
	return p.snap
}

// chunkFailed records a chunk that got no answer.
func (r *replication) chunkFailed(p *progress, err error) {
	l := r.l
	l.mu.Lock()
	defer l.mu.Unlock()
	if p.reachable {
		l.n.log.Debug("peer unreachable (snapshot)", "peer", p.id, "err", err)
	}
	p.failed()
}

// handleChunk records the follower's answer to chunk req of s: done
// reports that the transfer ends here (installed: the follower installed
// the snapshot); otherwise s says what to send next.
func (r *replication) handleChunk(p *progress, s *snapshotSend, req *kvpb.SnapshotChunk, resp *kvpb.SnapshotChunkResponse, sent clock.Instant) (done, installed bool) {
	l := r.l
	l.mu.Lock()
	defer l.mu.Unlock()
	if resp.AcceptedEpoch > l.epoch || resp.OtherLeadership {
		l.cancel(l.behind(p.id, resp.AcceptedEpoch, resp.OtherLeadership))
		return true, false
	}
	p.reachable = true
	if !resp.Reconcile {
		l.health.hearLocked(p.id, sent) // a recovering voter cannot vouch for this epoch
	}
	switch {
	case resp.Installed:
	case !resp.Taken:
		// Not the chunk the follower expects: go on from its staging
		// (resume), or from the start if it stages nothing of this one.
		if int(resp.StagedRequests) > len(s.view.Requests()) {
			p.snap = nil // not this snapshot's: start over next time
			return true, false
		}
		s.after, s.reqFrom = resp.Staged, int(resp.StagedRequests)
		return false, false
	case req.Last:
		p.snap = nil // taken but not installed: start over next time
		return true, false
	default:
		if k := len(req.Items); k > 0 {
			s.after = req.Items[k-1].Key
		}
		s.reqFrom += len(req.Requests)
		return false, false
	}
	p.snap = nil
	p.answer(l.history(l.epoch), fromPos(resp.Applied), true, resp.Reconcile, true)
	r.recomputeCommitLocked()
	return true, true
}

// GetSnapshot returns the chunk of the node's whole state after
// req.After to the leader of req.Epoch (more: chunks follow; the last one
// lists the request ids).
func (s *peerServer) GetSnapshot(ctx context.Context, req *kvpb.GetSnapshotRequest) (*kvpb.Snapshot, error) {
	if err := s.checkCluster(req.Cluster, req.Incarnation); err != nil {
		return nil, err
	}
	if err := s.checkAddressee(req.To); err != nil {
		return nil, err
	}
	n := s.n
	if err := checkEpoch("snapshot request", req.Epoch); err != nil {
		return nil, fmt.Errorf("node %s: %w", n.cfg.ID, err)
	}
	st, v, p := n.rep.viewFor(req.Epoch, leadership{req.LeaderId, req.Leadership})
	if st.other {
		return nil, fmt.Errorf("node %s: snapshot for epoch %d, promised to another leadership (%s): %w", n.cfg.ID, req.Epoch, st.to.id, kvstore.ErrStaleEpoch)
	}
	if st.refused {
		return nil, fmt.Errorf("node %s: snapshot for epoch %d, promised %d: %w", n.cfg.ID, req.Epoch, st.promised, kvstore.ErrStaleEpoch)
	}
	// The leader adopts this state as committed history: it must be
	// durable here first.
	if err := n.waitDurable(ctx, p); err != nil {
		return nil, fmt.Errorf("node %s: snapshot: %w", n.cfg.ID, err)
	}
	items, reqs, last := chunk(v, req.After, int(req.RequestsFrom), n.cfg.SnapshotChunkBytes)
	return &kvpb.Snapshot{Applied: toPos(v.Applied()), Items: items, Requests: reqs, More: !last}, nil
}

package node

// The follower side of snapshot transfer (docs/design.md, Snapshots): a
// leader whose log no longer holds a follower's position sends it its
// whole state in chunks (InstallSnapshot); the follower stages them, and
// installs the state at once, under the replica's lock, when the last
// chunk arrived and the whole checks out. Until then its store, position
// and answers are those of the state it had: a half-received snapshot
// never counts toward anything. Chunks are staged in order: one that
// overtook its predecessor (the leader keeps several in flight) waits for
// it. A transfer that breaks resumes where the staging ends, as long as
// the next chunk names the same snapshot (same leadership, same position).

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/kvstore/kvstore/durable"
	"github.com/kvstore/kvstore/rpc/kvpb"
	"github.com/kvstore/kvstore/store"
)

// staging is a snapshot being received: the leadership and position that
// name it, and what arrived so far.
type staging struct {
	epoch   int64
	ld      leadership
	applied store.Version
	items   *store.Builder
	reqs    []store.Request
}

// names reports whether the chunk req of the leadership ld belongs to the
// snapshot s stages.
func (s *staging) names(req *kvpb.SnapshotChunk, ld leadership) bool {
	return s != nil && s.epoch == req.Epoch && s.ld == ld && s.applied == fromPos(req.Applied)
}

// follows reports whether req is the chunk that continues s.
func (s *staging) follows(req *kvpb.SnapshotChunk) bool {
	return s.items.Last() == req.After && uint64(len(s.reqs)) == req.RequestsFrom
}

// ahead reports whether req starts beyond the end of s: a later chunk of
// the same transfer that overtook the one continuing s (the leader keeps
// several in flight, and a server runs calls concurrently). Chunks start
// after a key (the items, in key order) and then after a number of
// request ids (the items all sent), so positions compare in that order.
func (s *staging) ahead(req *kvpb.SnapshotChunk) bool {
	last := s.items.Last()
	return req.After > last || req.After == last && req.RequestsFrom > uint64(len(s.reqs))
}

// snapshotReceiver stages the snapshot a leader sends this node. mu
// serializes the chunks and guards cur; lock order: mu, then replica.mu.
type snapshotReceiver struct {
	mu  sync.Mutex
	cur *staging // nil: nothing staged
	// done names the snapshot installed last: a chunk of it that comes
	// again (the answer to the last chunk was lost, or came after the
	// leader's timeout, as the install of a large state may) is answered
	// "installed" rather than starting the transfer over.
	done *staging

	// changed is closed, and replaced, whenever cur changes: a chunk that
	// overtook its predecessor waits on it.
	changed chan struct{}

	taken atomic.Uint64 // chunks staged or installed (Stats)
}

// changedLocked wakes the chunks waiting for the staging to change.
// Callers hold mu.
func (rc *snapshotReceiver) changedLocked() {
	if rc.changed != nil {
		close(rc.changed)
		rc.changed = nil
	}
}

// waitLocked is the channel closed when the staging next changes. Callers
// hold mu.
func (rc *snapshotReceiver) waitLocked() <-chan struct{} {
	if rc.changed == nil {
		rc.changed = make(chan struct{})
	}
	return rc.changed
}

// InstallSnapshot stages one chunk of the leader's snapshot, or installs
// the snapshot with its last chunk.
func (s *peerServer) InstallSnapshot(ctx context.Context, req *kvpb.SnapshotChunk) (*kvpb.SnapshotChunkResponse, error) {
	if err := s.checkCluster(req.Cluster, req.Incarnation); err != nil {
		return nil, err
	}
	if err := s.checkAddressee(req.To); err != nil {
		return nil, err
	}
	n := s.n
	if err := validateChunk(req); err != nil {
		return nil, fmt.Errorf("node %s: %w", n.cfg.ID, err)
	}
	var resp *kvpb.SnapshotChunkResponse
	var p *durable.Pending
	// A chunk waits for its predecessor at most an RPC timeout, whatever
	// deadline its caller set (or none).
	wctx, cancel := context.WithTimeout(ctx, n.cfg.RPCTimeout)
	defer cancel()
	for {
		var wait <-chan struct{}
		var err error
		resp, p, wait, err = n.receiveChunk(req)
		if err != nil {
			return nil, fmt.Errorf("node %s: %w", n.cfg.ID, err)
		}
		if wait == nil {
			break
		}
		// It overtook the chunk before it, which is on its way: wait for
		// that one, within this call's deadline (if it never comes, the
		// leader's call of it failed, and the leader gives this one up).
		select {
		case <-wait:
		case <-wctx.Done():
			return nil, fmt.Errorf("node %s: snapshot chunk after %q: the chunk before it never came: %w", n.cfg.ID, req.After, wctx.Err())
		}
	}
	// The promise, and with the last chunk the position answered, must be
	// durable before the answer: the position counts toward majorities.
	if err := n.waitDurable(ctx, p); err != nil {
		return nil, fmt.Errorf("node %s: install snapshot: %w", n.cfg.ID, err)
	}
	return resp, nil
}

// receiveChunk admits req (validateChunk accepted it) and stages it, or
// installs the snapshot if it is the last; it returns the answer and the
// submission that must be durable first. If req is a later chunk of the
// snapshot being staged than the one that continues it, it returns
// instead a channel closed when the staging changes: call again then.
func (n *Node) receiveChunk(req *kvpb.SnapshotChunk) (*kvpb.SnapshotChunkResponse, *durable.Pending, <-chan struct{}, error) {
	rc := &n.recv
	rc.mu.Lock()
	defer rc.mu.Unlock()
	resp, p, wait, err := n.receiveChunkLocked(req)
	if wait {
		return nil, nil, rc.waitLocked(), nil
	}
	rc.changedLocked() // the staging may have changed
	return resp, p, nil, err
}

// receiveChunkLocked is receiveChunk under rc.mu; wait reports that req
// overtook the chunk that continues the staging.
func (n *Node) receiveChunkLocked(req *kvpb.SnapshotChunk) (resp *kvpb.SnapshotChunkResponse, p *durable.Pending, wait bool, err error) {
	rc := &n.recv
	ld := leadership{req.LeaderId, req.Leadership}
	st, p, ok := n.rep.admit(req.Epoch, ld)
	if !ok {
		return chunkAnswer(st, false, nil), nil, false, nil
	}
	n.met.appended(n.now())
	if rc.cur != nil && rc.cur.epoch < st.promised {
		rc.cur = nil // a snapshot of a leadership that is over
	}
	if rc.done != nil && rc.done.epoch < st.promised {
		rc.done = nil
	}
	switch cur := rc.cur; {
	case rc.done.names(req, ld):
		resp := chunkAnswer(st, false, nil)
		resp.Installed = true
		return resp, p, false, nil
	case req.After == "" && req.RequestsFrom == 0:
		rc.cur = &staging{epoch: req.Epoch, ld: ld, applied: fromPos(req.Applied), items: store.NewBuilder()}
	case !cur.names(req, ld):
		return chunkAnswer(st, false, nil), p, false, nil // start over
	case cur.ahead(req):
		return nil, nil, true, nil
	case !cur.follows(req):
		return chunkAnswer(st, false, cur), p, false, nil // go on from what is staged
	}
	cur := rc.cur
	for _, it := range req.Items {
		if err := cur.items.Add(it.Key, store.Item{Value: it.Value, Deleted: it.Deleted, Version: fromPos(it.Version)}); err != nil {
			rc.cur = nil
			return nil, p, false, badRequest("%w", err)
		}
	}
	for _, r := range req.Requests {
		cur.reqs = append(cur.reqs, store.Request{ID: r.Id, Version: fromPos(r.Version)})
	}
	rc.taken.Add(1)
	if !req.Last {
		return chunkAnswer(st, true, cur), p, false, nil
	}
	rc.cur = nil
	resp, p, err = n.installStaged(cur, req.Count)
	if err == nil && resp.Installed {
		rc.done = &staging{epoch: cur.epoch, ld: cur.ld, applied: cur.applied} // its name only
	}
	return resp, p, false, err
}

// installStaged checks the staged snapshot cur, whose last chunk said it
// holds count items, and installs it.
func (n *Node) installStaged(cur *staging, count uint64) (*kvpb.SnapshotChunkResponse, *durable.Pending, error) {
	if got := uint64(cur.items.Len()); got != count {
		return nil, nil, badRequest("snapshot at %s: %d items arrived, the leader sent %d", cur.applied, got, count)
	}
	v := cur.items.View(cur.applied, cur.reqs)
	if err := v.Check(); err != nil {
		return nil, nil, badRequest("snapshot at %s (epoch %d): %w", cur.applied, cur.epoch, err)
	}
	st, p, err := n.rep.installView(cur.epoch, cur.ld, v)
	if err != nil {
		return nil, p, err
	}
	resp := chunkAnswer(st, !st.refused, nil)
	resp.Installed = resp.Taken
	return resp, p, nil
}

// chunkAnswer is the answer to a chunk: taken or not, with st (the
// replica's standing) and where the staging cur ends (nil: nothing staged).
func chunkAnswer(st standing, taken bool, cur *staging) *kvpb.SnapshotChunkResponse {
	resp := &kvpb.SnapshotChunkResponse{Ok: st.ok && taken, AcceptedEpoch: st.promised, Applied: toPos(st.applied), Reconcile: st.reconcile, OtherLeadership: st.other, Taken: taken}
	if cur != nil {
		resp.Staged, resp.StagedRequests = cur.items.Last(), uint64(len(cur.reqs))
	}
	return resp
}

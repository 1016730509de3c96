package node

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/kvstore/kvstore/coord"
	"github.com/kvstore/kvstore/durable"
	"github.com/kvstore/kvstore/quorum"
	"github.com/kvstore/kvstore/rpc/kvpb"
	"github.com/kvstore/kvstore/store"
)

// progress is the leader's view of one follower's replication, as
// etcd-io/raft's tracker.Progress and hashicorp/raft's followerReplication:
// how far the follower matches this epoch's history, and what to send it
// next. The leader's l.mu guards it; only wake is used without the lock.
type progress struct {
	id        string
	match     uint64        // highest seq of this epoch's history it has on disk (applied, without one)
	received  uint64        // highest seq it applied in memory, as its latest answer said
	early     int           // bytes of entries it answered early since match last moved
	next      uint64        // next seq to send (past the Appends in flight)
	start     uint64        // the first seq sent, before any answer
	snapshot  bool          // it needs a snapshot
	snap      *snapshotSend // the snapshot on its way to it (snapshot_send.go)
	reachable bool          // its last Append succeeded
	probing   bool          // one Append at a time: no answer taken since the start or the last failure
	unordered int           // pipelined Appends it refused at once, having not waited for their predecessors
	answered  bool          // it answered an Append in this epoch (match is known)
	wake      chan struct{}
}

// newProgress is a follower's progress at the start: nothing known, the
// epoch's no-op (seq next) the first entry to send.
func newProgress(id string, next uint64) *progress {
	return &progress{id: id, next: next, start: next, probing: true, wake: make(chan struct{}, 1)}
}

// failed records an Append that got no answer. The Appends that follow it
// are voided, and the next goes from the last position answered.
func (p *progress) failed() {
	p.reachable, p.probing = false, true
	if p.answered {
		p.next = p.received + 1
	} else {
		p.next = p.start
	}
}

// answer records the follower's answer to an Append: applied is the
// position it reports, ok whether it took the Append, reconcile whether it
// asks for the whole state (it lost its store, or was never reconciled),
// and snapshot whether the Append carried a snapshot. h is the history the
// leader's log holds. It reports whether the answer took the Append
// (taken): then the Appends behind it go on, and since they may be answered
// in any order, positions only move forward; otherwise they are voided and
// the follower's position is what it answered.
func (p *progress) answer(h history, applied store.Version, ok, reconcile, snapshot bool) (taken bool) {
	p.reachable, p.answered = true, true
	switch {
	case reconcile:
		// Only the whole state reconciles it, entries alone do not.
		p.match, p.snapshot = 0, true
	case ok && !snapshot && h.holds(applied):
		if applied.Seq > p.match {
			p.match, p.early = applied.Seq, 0
		}
		p.next, p.received = max(p.next, applied.Seq+1), max(p.received, p.match)
		p.probing = false
		return true
	case h.holds(applied) || (ok && snapshot):
		// A refusal sets the position it names, even below match: a
		// refusal written before a later Append's answer that was taken
		// first costs a resend of what the follower holds, but a
		// follower whose disk lost what it had acknowledged (no fsync,
		// then a power loss) would otherwise be sent, forever, Appends
		// that follow a position it no longer has. Commits never move
		// back (recomputeCommitLocked).
		p.match, p.next, p.snapshot = applied.Seq, applied.Seq+1, false
	default:
		// Not on this epoch's history (or lost its memory): start over.
		p.match, p.snapshot = 0, true
	}
	p.received, p.early = p.match, 0
	taken = ok && !reconcile && !p.snapshot
	p.probing = !taken
	return taken
}

// answerEarly records an early answer to an Append (taken, ok, or not
// following the follower's position, which received then names):
// received is the position it applied in memory, onDisk the
// position it knows is on disk (possibly of an older epoch, or behind what
// an earlier answer reported), bytes the size of the Append's entries. It
// reports whether the answer took the Append, as answer does.
func (p *progress) answerEarly(h history, received, onDisk store.Version, ok bool, bytes int) (taken bool) {
	p.reachable, p.answered = true, true
	if !h.holds(received) {
		// Not on this epoch's history: start over, as answer does.
		p.match, p.received, p.early, p.snapshot = 0, 0, 0, true
		return false
	}
	if ok {
		p.next, p.received = max(p.next, received.Seq+1), max(p.received, received.Seq)
	} else {
		p.next, p.received = received.Seq+1, received.Seq
	}
	p.snapshot, p.probing = false, !ok
	if h.holds(onDisk) && onDisk.Seq > p.match {
		// The disk moves on: it is slow at worst (each group commit takes
		// all that waits), not stalled, so the count starts over.
		p.match, p.early = onDisk.Seq, 0
	}
	p.received = max(p.received, p.match)
	if p.match < p.received {
		p.early += bytes
	}
	return ok
}

// take records the follower's answer resp to req, in history h, and
// reports whether it took the Append (answer, answerEarly). late reports
// that an answer to an Append sent after req was taken already: the
// Appends of a window are answered in any order. An answer naming a
// position the log has trimmed since, from a follower known to hold the
// log's start on disk, is older than what the leader knows if it took
// its Append (a follower's position on this epoch's history only moves
// forward, and one that lost its store asks to be reconciled) or if it is
// late. It changes nothing, but what it says is on disk: taken for the
// follower's position, it would find that position off the log and send
// a whole snapshot to a follower that is up to date (seen under load,
// in-process A at fsync: the writes of keys the follower held waited 80
// to 250 ms for it). countEarly is Faults.CountEarlyAnswers.
func (p *progress) take(h history, req *kvpb.AppendRequest, resp *kvpb.AppendResponse, late, countEarly bool) bool {
	early := resp.Received != nil && !resp.Reconcile && req.Snapshot == nil
	pos := fromPos(resp.Applied)
	onDisk := pos
	if early {
		pos = fromPos(resp.Received)
		if countEarly {
			onDisk = pos
		}
	}
	if (late || resp.Ok) && !resp.Reconcile && req.Snapshot == nil && pos.Seq < h.base.Seq && p.match >= h.base.Seq {
		p.reachable, p.answered = true, true
		if h.holds(onDisk) && onDisk.Seq > p.match {
			// A barrier's answer reads the disk after its wait.
			p.match, p.early = onDisk.Seq, 0
			p.next, p.received = max(p.next, p.match+1), max(p.received, p.match)
		}
		return true
	}
	if !early {
		return p.answer(h, pos, resp.Ok, resp.Reconcile, req.Snapshot != nil)
	}
	// A barrier overtaken by the entries sent after it finds the
	// follower past its prev; on this history, that is progress.
	ok := resp.Ok || (len(req.Entries) == 0 && h.holds(pos) && pos.Seq >= req.Prev.GetSeq())
	return p.answerEarly(h, pos, onDisk, ok, entryBytes(req.Entries))
}

// maxUnordered is how many pipelined Appends a follower may refuse at once
// (not waiting for the ones before them) before the leader sends it one
// Append at a time for the rest of its leadership: an older follower
// ignores the pipelined mark, and each refusal costs the calls in flight.
const maxUnordered = 3

// maxEarlyBytes bounds what a follower may apply while its disk reports no
// progress: past this many bytes of entries (keys, values and request
// ids) answered early since match last moved, the leader asks for answers
// from the disk again, so a stalled disk holds replication back as it did
// before early answers, rather than letting its queue grow.
const maxEarlyBytes = 8 << 20

// entryBytes is the size of entries' keys, values and request ids.
func entryBytes(entries []*kvpb.Entry) int {
	n := 0
	for _, e := range entries {
		n += len(e.Key) + len(e.Value) + len(e.ReqId)
	}
	return n
}

// asksEarly reports whether the next Append to the follower asks for an
// early answer, given whether it carries an entry of a key the follower
// holds and the bytes of entries in flight asked early: while the follower
// has entries it answered early and has not reported on disk, every Append
// does (so that one whose keys it does not hold does not wait behind its
// disk), unless too many are queued there or on their way.
func (p *progress) asksEarly(held, entries bool, inFlight int) bool {
	switch {
	case !entries:
		return p.unflushed()
	case p.early+inFlight >= maxEarlyBytes:
		return false
	default:
		return held || p.unflushed()
	}
}

// unflushed reports whether the follower applied entries it has not
// reported on disk: an Append with no entries (which it answers once
// everything it took is on disk) would move match on.
func (p *progress) unflushed() bool { return p.received > p.match }

// pending reports whether something waits to be sent to the follower: a
// snapshot, or entries up to last.
func (p *progress) pending(last uint64) bool { return p.snapshot || p.next <= last }

// history is the part of this epoch's history the leader's log holds: the
// position base, then entries of epoch up to seq last.
type history struct {
	epoch int64
	base  store.Version
	last  uint64
}

// holds reports whether v is a position of the history the log can send
// entries after: base itself, or one of the log's entries.
func (h history) holds(v store.Version) bool {
	return (v.Epoch == h.epoch || v == h.base) && v.Seq >= h.base.Seq && v.Seq <= h.last
}

// commitRule is the commit rule, as hashicorp/raft's
// commitment.recalculate: the highest seq matched by a majority of the
// voters (match maps a node to the highest seq of this epoch's history it
// holds; the leader's own counts once durable), but only from this
// epoch's no-op (start) on: entries of older epochs are committed by the
// no-op, never by counting their copies. The commit never goes back from
// commit.
func commitRule(voters []string, match map[string]uint64, commit, start uint64) uint64 {
	if c := quorum.Committed(voters, match); c > commit && c >= start {
		return c
	}
	return commit
}

// replication is the leader's replication to its followers, as
// hashicorp/raft's replication.go: the per-follower progress, one
// replicator goroutine per follower, their answers and the commit rule
// applied to them. The leader's l.mu guards its fields; the replicators
// are counted in l.wg.
type replication struct {
	l           *leader
	peers       map[string]*progress // each follower's replication
	durable     uint64               // with a data directory: own entries durable up to here
	durableSeen atomic.Uint64        // durable, read without l.mu (markDurable)
	match       map[string]uint64    // the commit rule's input, kept to spare an allocation
}

// markDurable records that this node's own log is durable up to seq.
// The writes of one group find it durable together, each with its own
// seq: those whose seq a later one already recorded skip the lock.
func (r *replication) markDurable(seq uint64) {
	if seq <= r.durableSeen.Load() {
		return
	}
	l := r.l
	l.mu.Lock()
	defer l.mu.Unlock()
	if seq > r.durable {
		r.durable = seq
		r.durableSeen.Store(seq)
		r.advanceCommitLocked()
	}
}

// addPeerLocked starts replicating to node id, unless it is this node or
// already has a replicator.
func (r *replication) addPeerLocked(id string) {
	l := r.l
	if id == l.n.cfg.ID || r.peers[id] != nil {
		return
	}
	p := newProgress(id, l.noopSeq)
	r.peers[id] = p
	l.wg.Add(1)
	go r.replicate(p)
}

// trimLog drops entries every peer has, and entries beyond MaxLog (peers
// that lag that far get a snapshot).
func (r *replication) trimLog() {
	l := r.l
	l.mu.Lock()
	defer l.mu.Unlock()
	matched := l.lastSeq
	for _, p := range r.peers {
		matched = min(matched, p.match)
	}
	l.trim(matched, l.n.cfg.MaxLog)
}

// replicate streams entries to one peer, in order, with up to
// Config.AppendsInFlight Appends in flight once the follower took one
// (pipeline.go), one while it probes. Entries a follower holds a key of are
// answered early (AppendRequest.answer_early), and when nothing is left to
// send but the follower's disk is behind what it applied, an Append with no
// entries (the barrier) waits for its disk beside the Appends that follow.
// An idle follower gets an Append each heartbeat; after a failure the next
// goes at the heartbeat pace.
func (r *replication) replicate(p *progress) {
	l := r.l
	defer l.wg.Done()
	n := l.n
	hb := time.NewTicker(n.cfg.Heartbeat)
	defer hb.Stop()
	w := newAppendWindow(l.ctx, n.cfg.AppendsInFlight)
	defer w.reset(l.ctx)
	beat, pause := true, false
	for l.ctx.Err() == nil {
		if !pause {
			snapshot, sent := r.fill(p, w, beat)
			beat = beat && !sent
			if snapshot { // it needs the whole state (snapshot_send.go)
				w.reset(l.ctx)
				pause = !r.sendSnapshot(p) // resume at the heartbeat pace
				continue
			}
		}
		select {
		case call := <-w.done:
			w.finished(call)
			if w.overtaken(call) {
				continue
			}
			switch r.handleAppend(p, call, w.late(call)) {
			case appendTaken:
				w.taken = max(w.taken, call.id)
				beat = false
			case appendRefused: // what is in flight follows a wrong position
				w.reset(l.ctx)
			case appendFailed:
				w.reset(l.ctx)
				pause = true
			}
		case <-p.wake:
		case <-hb.C:
			beat, pause = true, false
		case <-l.ctx.Done():
			return
		}
	}
}

// fill sends the Appends p's window has room for (buildAppend), and
// reports whether it sent any, or p needs a snapshot instead. beat asks
// for an Append even with nothing to send, if none is in flight.
func (r *replication) fill(p *progress, w *appendWindow, beat bool) (snapshot, sent bool) {
	n := r.l.n
	for {
		req, snap := r.buildAppend(p, w, beat && !sent)
		if snap {
			return true, sent
		}
		if req == nil {
			return false, sent
		}
		sentAt := n.now()
		var c kvpb.PeerClient
		err := errors.New("no address")
		if addr := n.view.Load().members[p.id]; addr != "" {
			c, err = n.pool.Peer(addr)
		}
		if err != nil {
			w.fail(req, sentAt, err)
			return false, true
		}
		w.send(c, req, sentAt, n.cfg.RPCTimeout)
		sent = true
	}
}

// buildAppend is the next Append for p that its window w has room for, nil
// if none: entries after p.next-1 (one batch; p.next moves past them), or,
// with nothing to send, the barrier when the follower's disk is behind
// what it applied, or an empty Append when beat asks for one and nothing
// is in flight. snapshot reports that p needs the whole state instead (it
// asks for it, or the log no longer holds its position).
func (r *replication) buildAppend(p *progress, w *appendWindow, beat bool) (req *kvpb.AppendRequest, snapshot bool) {
	l := r.l
	n := l.n
	l.mu.Lock()
	defer l.mu.Unlock()
	prev, ok := l.posAt(p.next - 1)
	if p.snapshot || !ok {
		p.snapshot = true
		return nil, true
	}
	limit := n.cfg.AppendsInFlight
	if p.probing || p.unordered >= maxUnordered {
		limit = 1
	}
	var batch []store.Entry
	held := false // an entry of a key the follower holds a copy of
	if p.next <= l.lastSeq {
		batch = l.batch(p.next, n.cfg.MaxBatch, n.cfg.MaxBatchBytes)
		for _, e := range batch {
			if e.Key != "" && l.leases.heldBy(e.Key, p.id) {
				held = true
				break
			}
		}
	}
	switch {
	case len(batch) > 0 && w.room(limit) && (w.carrying == 0 || held || len(batch) >= min(w.lastBatch, n.cfg.MaxBatch)):
		// Beside Appends in flight only a batch as large as the last one,
		// or one a holder's write waits for: small Appends would each
		// cost the follower a disk write of its own (as Nagle's
		// algorithm holds back small segments while one is unanswered).
	case len(batch) == 0 && p.unflushed() && !w.barrier:
	case len(batch) == 0 && beat && w.calls == 0:
	default:
		return nil, false
	}
	req = &kvpb.AppendRequest{Cluster: n.cfg.Cluster, Incarnation: n.incarnationSent(), To: p.id, Epoch: l.epoch, LeaderId: l.ld.id, Leadership: l.ld.nonce, Prev: toPos(prev), Pipelined: w.calls > 0}
	// Ask for an early answer where a write waits for this follower to
	// apply, not for its disk: an entry of a key it holds a copy of (a
	// majority's disks commit the entry, but every holder must drop its
	// copy), or, with no entries, entries it answered early and has not
	// reported on disk. Elsewhere one answer per disk write keeps the
	// batches large.
	req.Entries = make([]*kvpb.Entry, len(batch))
	slab := make([]kvpb.Entry, len(batch)) // one allocation for the batch
	for i := range batch {
		req.Entries[i] = fillEntry(&slab[i], &batch[i])
	}
	p.next += uint64(len(req.Entries))
	req.AnswerEarly = p.asksEarly(held, len(req.Entries) > 0, w.early) && !(faultsOn && n.cfg.Faults.NoEarlyAnswers)
	return req, false
}

// appendOutcome is what an Append's answer leaves the replicator to do
// with the calls behind it.
type appendOutcome int

const (
	appendTaken   appendOutcome = iota // go on
	appendRefused                      // start again from the position answered
	appendFailed                       // no answer: start again at the heartbeat pace
)

// handleAppend records a peer's answer to call; late reports that an
// answer to an Append sent after call was taken already.
func (r *replication) handleAppend(p *progress, call *appendCall, late bool) appendOutcome {
	l := r.l
	req, resp := call.req, call.resp
	l.mu.Lock()
	defer l.mu.Unlock()
	if call.err != nil {
		if p.reachable {
			l.n.log.Debug("peer unreachable", "peer", p.id, "err", call.err)
		}
		p.failed()
		return appendFailed
	}
	if resp.AcceptedEpoch > l.epoch || resp.OtherLeadership {
		l.cancel(l.behind(p.id, resp.AcceptedEpoch, resp.OtherLeadership))
		p.failed()
		return appendFailed
	}
	if !resp.Reconcile {
		// A recovering voter cannot vouch for this epoch. An early answer
		// comes only from a follower whose promise is on disk.
		l.health.hearLocked(p.id, call.sent)
	}
	taken := p.take(l.history(l.epoch), req, resp, late, faultsOn && l.n.cfg.Faults.CountEarlyAnswers)
	r.recomputeCommitLocked()
	if !taken {
		answered := resp.Applied
		if resp.Received != nil {
			answered = resp.Received
		}
		if req.Pipelined && !resp.Reconcile && answered.GetSeq() < req.Prev.GetSeq() {
			// It refused at once an Append that overtook its predecessor
			// rather than wait for it: an older follower, which ignores
			// the pipelined mark, or a new process.
			p.unordered++
		}
		return appendRefused
	}
	return appendTaken
}

// recomputeCommitLocked applies the commit rule to the followers' matches
// and this node's own, and wakes every waiter: callers have changed what
// a follower is known to hold or apply (an answer), or the voters, which
// waits for holders to drop their copies look at too. Callers hold l.mu.
func (r *replication) recomputeCommitLocked() {
	if !r.advanceCommitLocked() {
		r.l.broadcastLocked()
	}
}

// advanceCommitLocked applies the commit rule and wakes the waiters only
// if the commit index moved: when nothing but this node's own log
// changed, a waiter has nothing new to see, and waking every writer on
// every write cost the leader a wake-up per waiter per write. It reports
// whether the commit index moved. Callers hold l.mu.
func (r *replication) advanceCommitLocked() bool {
	l := r.l
	n := l.n
	self := l.lastSeq
	if n.rep.persistent() {
		self = r.durable // an entry counts here once it is on disk
	}
	if r.match == nil {
		r.match = make(map[string]uint64, len(r.peers)+1)
	}
	clear(r.match)
	r.match[n.cfg.ID] = self
	for id, p := range r.peers {
		r.match[id] = p.match
	}
	voters := l.voters.IDs
	if faultsOn && n.cfg.Faults.LiveMajority {
		voters = []string{n.cfg.ID}
		for id, p := range r.peers {
			if p.reachable {
				voters = append(voters, id)
			}
		}
	}
	prev := l.commit
	l.commit = commitRule(voters, r.match, l.commit, l.noopSeq)
	if l.commit == prev {
		return false
	}
	l.committing.release(l.commit)
	l.broadcastLocked()
	return true
}

// start appends the epoch's no-op entry and starts one replicator per peer.
// It returns the submission that makes the no-op durable here, or an
// error if the replica no longer promises this leadership.
func (l *leader) start(voters coord.Voters, targets map[string]string) (*durable.Pending, error) {
	n := l.n
	l.mu.Lock()
	defer l.mu.Unlock()
	base, noop, p, err := n.rep.openEpoch(l.epoch, l.ld)
	if err != nil {
		return nil, err
	}
	l.voters = voters
	l.restart(base, noop)
	l.noopSeq = noop.Version.Seq
	l.started = true
	for id := range targets {
		l.repl.addPeerLocked(id)
	}
	// Members that joined while the takeover ran: viewChanged ignored them
	// (not started yet), and the view it was given is the one read here.
	for id := range n.view.Load().members {
		l.repl.addPeerLocked(id)
	}
	l.repl.recomputeCommitLocked()
	return p, nil
}

// viewChanged starts replicating to members that joined.
func (l *leader) viewChanged(v coord.View) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.started || l.ctx.Err() != nil {
		return
	}
	for id := range v.Members {
		l.repl.addPeerLocked(id)
	}
	for id := range l.voterCh.removed {
		if _, ok := v.Members[id]; !ok {
			delete(l.voterCh.removed, id)
		}
	}
}

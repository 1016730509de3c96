package node

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/clock"
	"github.com/kvstore/kvstore/coord"
	"github.com/kvstore/kvstore/durable"
	"github.com/kvstore/kvstore/quorum"
	"github.com/kvstore/kvstore/rpc"
	"github.com/kvstore/kvstore/rpc/kvpb"
	"github.com/kvstore/kvstore/store"
)

var errLeadershipEnded = errors.New("leadership ended")

// errQuorumLost ends a leadership that heard from no majority of the
// voters within the quorum window (CheckQuorum).
var errQuorumLost = errors.New("no majority of the voters answered within the quorum window")

// leader is the leader role of a node for one epoch. It lives from the
// election until the session is in doubt or a newer epoch is seen.
type leader struct {
	n         *Node
	epoch     int64
	ld        leadership // this node's id and a random number: names the leadership
	sess      coord.Session
	ctx       context.Context // ends with the leadership
	cancel    context.CancelCauseFunc
	wg        sync.WaitGroup // replicators
	electedAt clock.Instant
	// settings is the cluster's settings record as read at takeover: its
	// MaxLease bounds the leases older epochs may have granted.
	settings coord.Settings

	// changeMu makes voter changes (maybeAddVoter, removeVoter) one at a
	// time: each reads l.voters, writes the record, and installs the result.
	changeMu sync.Mutex

	// mu guards everything below. Lock order: mu, then n.mu.
	mu          sync.Mutex
	started     bool
	voters      coord.Voters
	log         []store.Entry // entries after base, in seq order
	base        store.Version // position just before log[0]
	lastSeq     uint64
	durable     uint64 // with a data directory: own entries durable up to here
	noopSeq     uint64
	commit      uint64
	serving     bool
	takeoverErr error
	peers       map[string]*peer
	holders     map[string]map[string]holding // key -> node id -> its copy
	changedCh   chan struct{}                 // closed and replaced on progress
	// removed are the ids this leader removed from the voter record while
	// they were members: maybeAddVoter must not add them back, and
	// maintain tells them to leave. An id is forgotten when it leaves the
	// membership: a node that joins again under it later (restarted by the
	// operator) is a new member, added once caught up.
	removed map[string]bool
	leaving map[string]bool // removed ids with a Leave call in flight
	// heard maps a voter to the send time of the last Prepare or Append
	// it answered in this epoch (CheckQuorum).
	heard map[string]clock.Instant
}

// peer is the leader's view of one follower.
type peer struct {
	id        string
	match     uint64 // highest seq of this epoch's history it has applied
	next      uint64 // next seq to send
	snapshot  bool   // it needs a snapshot
	reachable bool   // its last Append succeeded
	answered  bool   // it answered an Append in this epoch (match is known)
	wake      chan struct{}
}

type writeResult struct {
	version store.Version
	lease   time.Duration
}

type readResult struct {
	value   string
	found   bool
	version store.Version
	lease   time.Duration
}

// runLeader leads for epoch until leadership ends.
//
// It returns why the leadership ended.
func (n *Node) runLeader(ctx context.Context, sess coord.Session, epoch int64) (ended error) {
	var st *servingState
	for {
		ch := n.changed()
		if st = n.serving.Load(); st.state == StateOK && st.sess == sess {
			break
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
	lctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(st.ctx, func() { cancel(context.Cause(st.ctx)) })
	l := &leader{
		n: n, epoch: epoch, sess: sess, ctx: lctx, cancel: cancel,
		ld:        leadership{id: n.cfg.ID, nonce: newLeadershipNonce()},
		electedAt: n.now(),
		peers:     make(map[string]*peer), holders: make(map[string]map[string]holding),
		changedCh: make(chan struct{}), removed: make(map[string]bool),
		leaving: make(map[string]bool), heard: make(map[string]clock.Instant),
	}
	n.lead.Store(l)
	defer func() {
		cancel(errLeadershipEnded)
		stop()
		l.wg.Wait()
		n.lead.CompareAndSwap(l, nil)
		// Copies this node granted itself as leader end with the role.
		n.dropCache()
		l.mu.Lock()
		l.broadcastLocked()
		l.mu.Unlock()
		n.notify()
		n.log.Info("leadership ended", "epoch", epoch, "cause", context.Cause(lctx))
		if ended == nil {
			ended = context.Cause(lctx)
		}
	}()
	if err := l.takeover(); err != nil {
		n.log.Warn("takeover failed", "epoch", epoch, "err", err)
		return err
	}
	n.log.Info("leading", "epoch", epoch)
	n.notify()
	l.maintain()
	return context.Cause(lctx)
}

// behind is the error that ends a leadership because node id promised a
// later epoch, or (other) this epoch to another leadership. A later epoch
// is normal when a newer leader was elected meanwhile; but when this
// node's election is the newest the coordinator knows, or the epoch was
// handed out twice, the coordinator is behind the nodes (rebuilt, or
// restored from a backup), and no leader it elects can lead: the log says
// so, and names the recovery command.
func (l *leader) behind(id string, promised int64, other bool) error {
	err := fmt.Errorf("%s promised epoch %d > %d: %w", id, promised, l.epoch, kvstore.ErrStaleEpoch)
	if other {
		err = fmt.Errorf("%s promised epoch %d to another leadership: %w", id, l.epoch, kvstore.ErrStaleEpoch)
	}
	if v := l.n.view.Load(); other || (v.leader.ID == l.n.cfg.ID && v.leader.Epoch == l.epoch) {
		l.n.log.Error("cannot lead: a node promised an epoch above the one the coordinator gave this leader; if this repeats, the coordinator is behind the nodes (rebuilt or restored from a backup): stop every node and run the recovery command on the most up-to-date one",
			"epoch", l.epoch, "node", id, "promised", promised, "recovery", RecoveryCommand)
	}
	return err
}

// newLeadershipNonce is a random non-zero number naming one leadership.
// Uniqueness, not secrecy, is what counts: two leaderships of one epoch
// (a coordinator that handed it out twice) must not pick the same.
func newLeadershipNonce() uint64 {
	for {
		if x := rand.Uint64(); x != 0 {
			return x
		}
	}
}

func (l *leader) isServing() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.serving && l.ctx.Err() == nil
}

func (l *leader) broadcastLocked() {
	close(l.changedCh)
	l.changedCh = make(chan struct{})
}

func (l *leader) setTakeoverErr(err error) {
	l.mu.Lock()
	l.takeoverErr = err
	l.broadcastLocked()
	l.mu.Unlock()
	l.n.log.Debug("takeover attempt failed", "epoch", l.epoch, "err", err)
}

// takeover runs steps 1-5 of the takeover in docs/design.md.
func (l *leader) takeover() error {
	n := l.n
	giveUp := n.now().Add(l.stepDownAfter())
	for attempt := 0; ; attempt++ {
		if attempt > 0 && (n.now().After(giveUp) || l.quorumLost()) {
			if l.quorumLost() {
				n.met.steppedDown()
			}
			l.mu.Lock()
			err := l.takeoverErr
			l.mu.Unlock()
			return fmt.Errorf("giving up leadership: %w", err)
		}
		if attempt > 0 {
			select {
			case <-l.ctx.Done():
			case <-time.After(n.cfg.Heartbeat):
			}
		}
		if l.ctx.Err() != nil {
			return context.Cause(l.ctx)
		}
		rctx, cancel := context.WithTimeout(l.ctx, n.cfg.RPCTimeout)
		voters, err := n.cfg.Coordinator.Voters(rctx)
		cancel()
		if err != nil {
			l.setTakeoverErr(fmt.Errorf("read voters: %w", err))
			continue
		}
		// The leases of older epochs may have been granted by nodes with
		// another lease than this one's (a change of --lease rolled out):
		// the record's MaxLease bounds them.
		rctx, cancel = context.WithTimeout(l.ctx, n.cfg.RPCTimeout)
		l.settings, err = n.cfg.Coordinator.Settings(rctx)
		cancel()
		if err != nil {
			l.setTakeoverErr(fmt.Errorf("read settings: %w", err))
			continue
		}
		n.noteVoters(voters)
		n.noteSettings(l.settings)
		l.mu.Lock()
		l.voters = voters // for quorumLost; start sets it again
		l.mu.Unlock()
		// The members of a view that shows this leadership: every node
		// whose session outlived the predecessor's (coord.View).
		members, fresh := l.electedView()
		targets := make(map[string]string)
		for id, addr := range members {
			targets[id] = addr
		}
		for _, id := range voters.IDs {
			if _, ok := targets[id]; !ok {
				targets[id] = "" // a voter with no live session: cannot be asked
			}
		}
		// Step 1: prepare.
		resps := l.prepareAll(targets)
		yes := make(map[string]bool)
		var best *kvpb.PrepareResponse
		for id, r := range resps {
			if !r.Ok {
				if r.AcceptedEpoch > l.epoch || r.OtherLeadership {
					return l.behind(id, r.AcceptedEpoch, r.OtherLeadership)
				}
				continue
			}
			if r.Recovering || !voters.Contains(id) {
				continue
			}
			yes[id] = true
			if best == nil || fromPos(best.Applied).Less(fromPos(r.Applied)) ||
				(fromPos(best.Applied) == fromPos(r.Applied) && id == n.cfg.ID) {
				best = r
			}
		}
		if !quorum.HasMajority(voters.IDs, yes) {
			l.setTakeoverErr(fmt.Errorf("%w: %d of %d voters %v answered prepare(%d) with their data", kvstore.ErrNoQuorum, len(yes), len(voters.IDs), voters.IDs, l.epoch))
			continue
		}
		// Step 2: adopt the most up-to-date voter's state.
		want := fromPos(best.Applied)
		if n.Applied() != want {
			snap, err := l.pullSnapshot(targets[best.NodeId], want)
			if err != nil {
				l.setTakeoverErr(fmt.Errorf("pull snapshot from %s: %w", best.NodeId, err))
				continue
			}
			n.mu.Lock()
			n.store.Restore(snap)
			p := n.persistRestoreLocked(snap)
			n.mu.Unlock()
			if err := n.waitDurable(l.ctx, p); err != nil {
				return fmt.Errorf("adopting %s's state: %w", best.NodeId, err)
			}
		}
		// This node's store is now the most up-to-date state of a majority
		// of reconciled voters: it holds everything committed.
		n.mu.Lock()
		rp := n.reconciledLocked()
		n.mu.Unlock()
		if err := n.waitDurable(l.ctx, rp); err != nil {
			return fmt.Errorf("recording the reconcile: %w", err)
		}
		// Step 4's wait is for copies that nodes which did not answer
		// may still serve. A voter absent from a fresh view has no live
		// session (its membership entry went with it) and, by its own
		// deadline, serves nothing; only the members must answer.
		var unanswered []string
		for id, addr := range targets {
			if addr == "" && fresh && !n.cfg.Faults.WaitForGoneVoters {
				continue
			}
			if r, ok := resps[id]; !ok || !r.Ok {
				unanswered = append(unanswered, id)
			}
		}
		slices.Sort(unanswered)
		// Step 3: seal the epoch with a no-op and replicate it.
		p := l.start(voters, targets)
		if err := n.waitEntriesDurable(l.ctx, p); err != nil {
			return fmt.Errorf("the epoch's no-op: %w", err)
		}
		l.markDurable(l.noopSeq)
		return l.awaitServing(unanswered, fresh)
	}
}

// electedView returns the members of the first view that shows this
// node leading in l.epoch, waiting for it up to RPCTimeout: such a view
// was read after the predecessor's election key went, so a node missing
// from it has no session that outlived the predecessor's. Without one
// (fresh false) it returns the latest view's members.
func (l *leader) electedView() (members map[string]string, fresh bool) {
	n := l.n
	deadline := time.After(n.cfg.RPCTimeout)
	for {
		ch := n.changed()
		v := n.view.Load()
		if v.leader.ID == n.cfg.ID && v.leader.Epoch == l.epoch {
			return v.members, true
		}
		if v.leader.Epoch > l.epoch {
			return v.members, false
		}
		select {
		case <-ch:
		case <-deadline:
			return n.view.Load().members, false
		case <-l.ctx.Done():
			return n.view.Load().members, false
		}
	}
}

// prepareAll sends Prepare(epoch) to every target with an address (and to
// this node directly) and returns the answers that came back in time.
func (l *leader) prepareAll(targets map[string]string) map[string]*kvpb.PrepareResponse {
	n := l.n
	var mu sync.Mutex
	out := make(map[string]*kvpb.PrepareResponse)
	var wg sync.WaitGroup
	for id, addr := range targets {
		if id == n.cfg.ID {
			r, err := n.prepare(l.ctx, l.epoch, l.ld)
			if err != nil {
				n.log.Warn("own prepare failed", "epoch", l.epoch, "err", err)
				continue
			}
			mu.Lock()
			out[id] = r
			mu.Unlock()
			continue
		}
		if addr == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := n.pool.Peer(addr)
			if err != nil {
				return
			}
			ctx, cancel := context.WithTimeout(l.ctx, n.cfg.RPCTimeout)
			defer cancel()
			sent := n.now()
			r, err := c.Prepare(ctx, &kvpb.PrepareRequest{Cluster: n.cfg.Cluster, Epoch: l.epoch, LeaderId: l.ld.id, Leadership: l.ld.nonce})
			if err != nil || r.NodeId != id {
				return
			}
			mu.Lock()
			out[id] = r
			mu.Unlock()
			if r.Ok && !r.Recovering {
				l.hear(id, sent)
			}
		}()
	}
	wg.Wait()
	return out
}

func (l *leader) pullSnapshot(addr string, want store.Version) (store.Snapshot, error) {
	n := l.n
	if addr == "" {
		return store.Snapshot{}, errors.New("no address")
	}
	c, err := n.pool.Peer(addr)
	if err != nil {
		return store.Snapshot{}, err
	}
	ctx, cancel := context.WithTimeout(l.ctx, 10*n.cfg.RPCTimeout)
	defer cancel()
	p, err := c.GetSnapshot(ctx, &kvpb.GetSnapshotRequest{Cluster: n.cfg.Cluster, Epoch: l.epoch, LeaderId: l.ld.id, Leadership: l.ld.nonce})
	if err != nil {
		return store.Snapshot{}, rpc.FromStatus(err)
	}
	// The snapshot becomes this leader's state and every follower's: a
	// malformed one (from a broken or forged peer) is refused here, as a
	// follower would refuse it.
	if err := validateSnapshot(p, l.epoch); err != nil {
		return store.Snapshot{}, err
	}
	snap := fromSnapshot(p)
	if snap.Applied != want {
		return store.Snapshot{}, fmt.Errorf("snapshot at %s, prepared at %s", snap.Applied, want)
	}
	return snap, nil
}

// start appends the epoch's no-op entry and starts one replicator per peer.
// It returns the submission that makes the no-op durable here.
func (l *leader) start(voters coord.Voters, targets map[string]string) *durable.Pending {
	n := l.n
	l.mu.Lock()
	defer l.mu.Unlock()
	l.voters = voters
	n.mu.Lock()
	l.base = n.store.Applied()
	noop := store.Entry{Version: store.Version{Epoch: l.epoch, Seq: l.base.Seq + 1}, Op: store.OpNoop}
	if _, err := n.store.Apply(noop); err != nil {
		panic(err) // cannot happen: the no-op follows the store's own position
	}
	p := n.persistEntriesLocked([]store.Entry{noop}, nil)
	n.mu.Unlock()
	l.log = []store.Entry{noop}
	l.lastSeq, l.noopSeq = noop.Version.Seq, noop.Version.Seq
	l.started = true
	for id := range targets {
		l.addPeerLocked(id)
	}
	// Members that joined while the takeover ran: viewChanged ignored them
	// (not started yet), and the view it was given is the one read here.
	for id := range n.view.Load().members {
		l.addPeerLocked(id)
	}
	l.recomputeCommitLocked()
	return p
}

// markDurable records that this node's own log is durable up to seq.
func (l *leader) markDurable(seq uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if seq > l.durable {
		l.durable = seq
		l.recomputeCommitLocked()
	}
}

func (l *leader) addPeerLocked(id string) {
	if id == l.n.cfg.ID || l.peers[id] != nil {
		return
	}
	p := &peer{id: id, next: l.noopSeq, wake: make(chan struct{}, 1)}
	l.peers[id] = p
	l.wg.Add(1)
	go l.replicate(p)
}

// viewChanged starts replicating to members that joined.
func (l *leader) viewChanged(v coord.View) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.started || l.ctx.Err() != nil {
		return
	}
	for id := range v.Members {
		l.addPeerLocked(id)
	}
	for id := range l.removed {
		if _, ok := v.Members[id]; !ok {
			delete(l.removed, id)
		}
	}
}

// awaitServing finishes the takeover: the no-op committed by a majority of
// voters, then (unless every node answered Prepare) the wait for leases
// granted under older epochs: the longest any node may have granted
// (Config.takeoverWait), not only this node's own.
func (l *leader) awaitServing(unanswered []string, fresh bool) error {
	n := l.n
	deadline := n.now().Add(n.cfg.QuorumTimeout)
	for {
		l.mu.Lock()
		ok := l.commit >= l.noopSeq
		ch := l.changedCh
		l.mu.Unlock()
		if ok {
			break
		}
		if l.quorumLost() {
			n.met.steppedDown()
			return fmt.Errorf("giving up leadership: %w: %w (%v)", kvstore.ErrNoQuorum, errQuorumLost, l.quorumWindow())
		}
		if n.now().After(deadline) {
			err := fmt.Errorf("%w: the epoch's no-op is not on a majority of voters", kvstore.ErrNoQuorum)
			l.setTakeoverErr(err)
			if n.now().Sub(l.electedAt) > l.stepDownAfter() {
				return fmt.Errorf("giving up leadership: %w", err)
			}
			deadline = n.now().Add(n.cfg.QuorumTimeout)
		}
		select {
		case <-ch:
		case <-l.ctx.Done():
			return context.Cause(l.ctx)
		case <-time.After(min(deadline.Sub(n.now()), n.cfg.Heartbeat)):
		}
	}
	if len(unanswered) > 0 && !n.cfg.Faults.SkipTakeoverWait {
		wait := l.electedAt.Add(n.cfg.takeoverWait(l.settings)).Sub(n.now())
		if wait > 0 {
			n.met.takeoverWaits.Inc()
			n.log.Info("waiting out leases of older epochs", "wait", wait.Round(time.Millisecond), "unanswered", unanswered, "fresh_view", fresh)
			select {
			case <-time.After(wait):
			case <-l.ctx.Done():
				return context.Cause(l.ctx)
			}
		}
	}
	if err := l.sealVoters(); err != nil {
		return err
	}
	l.mu.Lock()
	l.serving = true
	l.takeoverErr = nil
	l.broadcastLocked()
	l.mu.Unlock()
	return nil
}

// sealVoters seals the voter record (coord.Voters.Unsealed) if no leader
// has yet, before this leader serves anything: the last step of the first
// takeover that completes under the record, as late as it can be, so that
// a crash between the seal and the first write is unlikely (a node that
// restarts without data after the seal is recovering). Until the seal is
// at the coordinator no write is taken and no read answered (both wait
// for serving), so a voter that restarts without data and reads the
// record unsealed lost nothing acknowledged (rejoinWithoutData).
//
// The seal is the leader's fenced SetVoters with the same ids: a leader
// the coordinator no longer elects cannot seal, and so does not serve. A
// conflict or a lost answer is settled by reading the record back; a
// record whose ids changed under the takeover ends the leadership (the
// next takeover reads it anew).
func (l *leader) sealVoters() error {
	n := l.n
	l.mu.Lock()
	v := l.voters
	l.mu.Unlock()
	if !v.Unsealed || n.cfg.Faults.SkipVoterSeal {
		return nil
	}
	for {
		ctx, cancel := context.WithTimeout(l.ctx, n.cfg.RPCTimeout)
		err := l.sess.SetVoters(ctx, l.epoch, v, v.IDs)
		if errors.Is(err, coord.ErrNotLeader) {
			cancel()
			return fmt.Errorf("seal the voter record: %w", err)
		}
		got, rerr := n.cfg.Coordinator.Voters(ctx)
		cancel()
		if rerr == nil {
			if !slices.Equal(got.IDs, v.IDs) {
				return fmt.Errorf("seal the voter record: it changed under the takeover from %v to %v: %w", v.IDs, got.IDs, coord.ErrConflict)
			}
			if !got.Unsealed {
				l.mu.Lock()
				l.voters = got
				l.mu.Unlock()
				n.log.Info("sealed the voter record", "epoch", l.epoch, "voters", got.IDs)
				return nil
			}
			v = got
		}
		if err = errors.Join(err, rerr); err == nil {
			err = errors.New("the record still reads unsealed")
		}
		l.setTakeoverErr(fmt.Errorf("seal the voter record: %w", err))
		if n.now().Sub(l.electedAt) > l.stepDownAfter() {
			return fmt.Errorf("giving up leadership: seal the voter record: %w", err)
		}
		select {
		case <-l.ctx.Done():
			return context.Cause(l.ctx)
		case <-time.After(n.cfg.Heartbeat):
		}
	}
}

// maintain does the leader's periodic duties until leadership ends: adding
// caught-up members to the voter record and trimming the log.
func (l *leader) maintain() {
	n := l.n
	t := time.NewTicker(n.cfg.Heartbeat)
	defer t.Stop()
	tick := 0
	for {
		select {
		case <-l.ctx.Done():
			return
		case <-t.C:
		}
		if l.quorumLost() {
			// Cut off from the voters but not from the coordinator
			// (CheckQuorum): give another node the chance to lead a
			// majority. Stepping down ends this node's own copies and
			// its serving at once; the next leader waits out the leases
			// it granted (takeover step 4), as after any leader.
			n.met.steppedDown()
			n.log.Warn("stepping down: no majority of the voters answered within the quorum window (CheckQuorum)", "epoch", l.epoch, "window", l.quorumWindow())
			l.cancel(fmt.Errorf("%w: %w (%v)", kvstore.ErrNoQuorum, errQuorumLost, l.quorumWindow()))
			return
		}
		l.maybeAddVoter()
		l.tellRemoved()
		l.trimLog()
		if tick++; tick%sweepTicks == 0 {
			l.sweepHolders()
		}
	}
}

// sweepTicks is how many heartbeats pass between sweeps of ended leases.
const sweepTicks = 16

// sweepHolders forgets holdings whose lease has ended, for keys no write or
// read has looked at since.
func (l *leader) sweepHolders() {
	now := l.n.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	for key, hs := range l.holders {
		for id, h := range hs {
			if !now.Before(h.end) {
				delete(hs, id)
			}
		}
		if len(hs) == 0 {
			delete(l.holders, key)
		}
	}
}

// stepDownAfter bounds a takeover that keeps failing for other reasons
// than a missing majority (quorumLost covers that).
func (l *leader) stepDownAfter() time.Duration { return 2 * l.n.cfg.QuorumTimeout }

// quorumWindow is how long the leader leads on without hearing from a
// majority of the voters (Config.quorumWindow; with Faults.NoCheckQuorum
// the older rule's 2 x QuorumTimeout).
func (l *leader) quorumWindow() time.Duration {
	if l.n.cfg.Faults.NoCheckQuorum {
		return 2 * l.n.cfg.QuorumTimeout
	}
	return l.n.cfg.quorumWindow()
}

// hear records that voter id answered a Prepare or Append sent at sent.
func (l *leader) hear(id string, sent clock.Instant) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if sent.After(l.heard[id]) {
		l.heard[id] = sent
	}
}

// quorumLost reports whether the leader, elected more than a quorum
// window ago, heard from no majority of the voters (itself included)
// within the last window (CheckQuorum).
func (l *leader) quorumLost() bool {
	now := l.n.now()
	w := l.quorumWindow()
	if now.Sub(l.electedAt) <= w {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	heard := maps.Clone(l.heard)
	heard[l.n.cfg.ID] = now
	return !quorum.HeardSince(l.voters.IDs, heard, now.Add(-w))
}

// maybeAddVoter adds one member that is not a voter, once it holds
// everything committed (docs/design.md, Voters).
func (l *leader) maybeAddVoter() {
	n := l.n
	l.changeMu.Lock()
	defer l.changeMu.Unlock()
	l.mu.Lock()
	var cand string
	if !l.voters.Contains(n.cfg.ID) {
		// A leader that was not a voter (it joined, and won the election
		// before it was added) holds everything committed: add it first.
		cand = n.cfg.ID
	}
	for id, p := range l.peers {
		if cand == "" && !l.voters.Contains(id) && !l.removed[id] && p.reachable && p.match >= l.commit && n.view.Load().members[id] != "" {
			cand = id
		}
	}
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
	l.recomputeCommitLocked()
	l.mu.Unlock()
	n.log.Info("voters changed", "voters", v.IDs)
}

// trimLog drops entries every peer has, and entries beyond MaxLog (peers
// that lag that far get a snapshot).
func (l *leader) trimLog() {
	l.mu.Lock()
	defer l.mu.Unlock()
	cut := l.lastSeq
	for _, p := range l.peers {
		cut = min(cut, p.match)
	}
	if keep := uint64(l.n.cfg.MaxLog); l.lastSeq > keep {
		cut = max(cut, l.lastSeq-keep)
	}
	if cut <= l.base.Seq+1024 && len(l.log) <= l.n.cfg.MaxLog {
		return
	}
	if cut <= l.base.Seq {
		return
	}
	i := int(cut - l.base.Seq)
	l.base = l.log[i-1].Version
	l.log = slices.Clone(l.log[i:])
}

// posAt is the position of seq in this epoch's history, if the log has it.
func (l *leader) posAtLocked(seq uint64) (store.Version, bool) {
	if seq == l.base.Seq {
		return l.base, true
	}
	if seq < l.base.Seq || seq > l.lastSeq {
		return store.Version{}, false
	}
	return l.log[seq-l.base.Seq-1].Version, true
}

// replicate streams entries to one peer, in order, one call at a time.
func (l *leader) replicate(p *peer) {
	defer l.wg.Done()
	n := l.n
	hb := time.NewTicker(n.cfg.Heartbeat)
	defer hb.Stop()
	for l.ctx.Err() == nil {
		req := l.buildAppend(p)
		var resp *kvpb.AppendResponse
		err := errors.New("no address")
		sent := n.now()
		if addr := n.view.Load().members[p.id]; addr != "" {
			var c kvpb.PeerClient
			if c, err = n.pool.Peer(addr); err == nil {
				ctx, cancel := context.WithTimeout(l.ctx, n.cfg.RPCTimeout)
				resp, err = c.Append(ctx, req)
				cancel()
			}
		}
		more := l.handleAppend(p, req, resp, err, sent)
		if err == nil && more {
			continue
		}
		if err == nil {
			select {
			case <-p.wake:
				continue
			case <-hb.C:
				continue
			case <-l.ctx.Done():
				return
			}
		}
		select { // after an error, retry at the heartbeat pace only
		case <-hb.C:
		case <-l.ctx.Done():
			return
		}
	}
}

func (l *leader) buildAppend(p *peer) *kvpb.AppendRequest {
	n := l.n
	l.mu.Lock()
	defer l.mu.Unlock()
	req := &kvpb.AppendRequest{Cluster: n.cfg.Cluster, Epoch: l.epoch, LeaderId: l.ld.id, Leadership: l.ld.nonce}
	prev, ok := l.posAtLocked(p.next - 1)
	if p.snapshot || !ok {
		n.mu.Lock()
		req.Snapshot = toSnapshot(n.store.Snapshot())
		n.mu.Unlock()
		return req
	}
	req.Prev = toPos(prev)
	last := min(l.lastSeq, p.next-1+uint64(n.cfg.MaxBatch))
	budget := n.cfg.MaxBatchBytes
	for s := p.next; s <= last; s++ {
		e := l.log[s-l.base.Seq-1]
		size := len(e.Key) + len(e.Value) + len(e.ReqID)
		if len(req.Entries) > 0 && size > budget {
			break // the rest goes in the next Append
		}
		budget -= size
		req.Entries = append(req.Entries, toEntry(e))
	}
	return req
}

// handleAppend records a peer's answer; more reports whether entries are
// waiting to be sent to it.
func (l *leader) handleAppend(p *peer, req *kvpb.AppendRequest, resp *kvpb.AppendResponse, err error, sent clock.Instant) (more bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		if p.reachable {
			l.n.log.Debug("peer unreachable", "peer", p.id, "err", err)
		}
		p.reachable = false
		return false
	}
	if resp.AcceptedEpoch > l.epoch || resp.OtherLeadership {
		l.cancel(l.behind(p.id, resp.AcceptedEpoch, resp.OtherLeadership))
		return false
	}
	p.reachable, p.answered = true, true
	if !resp.Reconcile && sent.After(l.heard[p.id]) {
		l.heard[p.id] = sent // a recovering voter cannot vouch for this epoch
	}
	applied := fromPos(resp.Applied)
	ours := (applied.Epoch == l.epoch || applied == l.base) && applied.Seq >= l.base.Seq && applied.Seq <= l.lastSeq
	switch {
	case resp.Reconcile:
		// It lost its store (or was never reconciled): only the whole state
		// reconciles it, entries alone do not.
		p.match, p.snapshot = 0, true
	case ours:
		p.match, p.next, p.snapshot = applied.Seq, applied.Seq+1, false
	case resp.Ok && req.Snapshot != nil:
		p.match, p.next, p.snapshot = applied.Seq, applied.Seq+1, false
	default:
		// Not on this epoch's history (or lost its memory): start over.
		p.match, p.snapshot = 0, true
	}
	l.recomputeCommitLocked()
	return p.snapshot || p.next <= l.lastSeq
}

func (l *leader) recomputeCommitLocked() {
	n := l.n
	self := l.lastSeq
	if n.disk != nil {
		self = l.durable // an entry counts here once it is on disk
	}
	match := map[string]uint64{n.cfg.ID: self}
	for id, p := range l.peers {
		match[id] = p.match
	}
	voters := l.voters.IDs
	if n.cfg.Faults.LiveMajority {
		voters = []string{n.cfg.ID}
		for id, p := range l.peers {
			if p.reachable {
				voters = append(voters, id)
			}
		}
	}
	if c := quorum.Committed(voters, match); c > l.commit && c >= l.noopSeq {
		l.commit = c
	}
	l.broadcastLocked()
}

// checkLive fails unless this node still leads with a live session.
func (l *leader) checkLive() error {
	if l.ctx.Err() != nil {
		return fmt.Errorf("node %s: %w (epoch %d ended)", l.n.cfg.ID, kvstore.ErrNotLeader, l.epoch)
	}
	if !l.n.sessionLive(l.n.serving.Load()) {
		return fmt.Errorf("node %s: %w: %w", l.n.cfg.ID, kvstore.ErrNotLeader, kvstore.ErrPartitioned)
	}
	return nil
}

// waitServing waits for the takeover to finish. If a majority stays out of
// reach for QuorumTimeout it fails with ErrNoQuorum (nothing was applied).
func (l *leader) waitServing(ctx context.Context) error {
	start := l.n.now()
	for {
		l.mu.Lock()
		serving, terr, ch := l.serving, l.takeoverErr, l.changedCh
		l.mu.Unlock()
		if err := l.checkLive(); err != nil {
			return err
		}
		if serving {
			return nil
		}
		if errors.Is(terr, kvstore.ErrNoQuorum) && l.n.now().Sub(start) > l.n.cfg.QuorumTimeout {
			return fmt.Errorf("node %s (leader, epoch %d): %w", l.n.cfg.ID, l.epoch, terr)
		}
		select {
		case <-ch:
		case <-l.ctx.Done():
		case <-ctx.Done():
			return joinLast(ctxErr(ctx), terr)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ownsStoreLocked fails unless the node's store is still this leader's
// own: the node has promised no later epoch, and the store is at the
// leader's last entry. A node that took a later leader's Append (or
// Prepare) ends this leadership (promiseLocked), but a write or read
// already past its checks must not use a store another epoch may have
// replaced. Callers hold l.mu and n.mu.
func (l *leader) ownsStoreLocked() error {
	n := l.n
	if at := n.store.Applied(); n.acceptedEpoch != l.epoch || (l.started && (at != store.Version{Epoch: l.epoch, Seq: l.lastSeq} || n.accepted != l.ld)) {
		return fmt.Errorf("node %s: %w (epoch %d: promised epoch %d, store at %s)", n.cfg.ID, kvstore.ErrNotLeader, l.epoch, n.acceptedEpoch, at)
	}
	return nil
}

// write appends a set or delete, waits until it is visible (a majority of
// voters hold it and no holder can still read an older copy of the key), and
// grants the writer a lease on the new value unless a newer write of the key
// came meanwhile.
//
// Writes of one key are pipelined: each is appended at once, and waits
// only for its own visibility. Since the log commits in order, a write of a
// key is visible no later than the next write of it.
func (l *leader) write(ctx context.Context, op store.Op, key, value, reqID, from string) (writeResult, error) {
	n := l.n
	if err := l.waitServing(ctx); err != nil {
		return writeResult{}, err
	}
	if err := l.checkLive(); err != nil {
		return writeResult{}, err
	}
	var p *durable.Pending
	l.mu.Lock()
	n.mu.Lock()
	if err := l.ownsStoreLocked(); err != nil {
		n.mu.Unlock()
		l.mu.Unlock()
		return writeResult{}, err
	}
	ver, dup := n.store.Request(reqID)
	dup = dup && reqID != ""
	if !dup {
		e := store.Entry{Version: store.Version{Epoch: l.epoch, Seq: l.lastSeq + 1}, Op: op, Key: key, Value: value, ReqID: reqID}
		if _, err := n.store.Apply(e); err != nil {
			panic(err) // cannot happen: the leader's store is at lastSeq
		}
		ver = e.Version
		p = n.persistEntriesLocked([]store.Entry{e}, nil)
		// The leader's own cached copy goes first, as on a follower that
		// applies the entry: the new value is readable only once visible.
		n.invalidate(key, ver)
		l.log = append(l.log, e)
		l.lastSeq = e.Version.Seq
		n.met.invalidationsSent.Add(float64(l.liveHoldersLocked(key, ver.Seq, n.now())))
	}
	n.mu.Unlock()
	l.recomputeCommitLocked()
	for _, p := range l.peers {
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
	l.mu.Unlock()
	if p != nil {
		// Bounded by the disk, not by the client: wait even if the client
		// gives up, so that the entry counts toward the majority.
		if err := n.waitEntriesDurable(l.ctx, p); err != nil {
			l.cancel(fmt.Errorf("leader cannot persist: %w", err))
			return writeResult{version: ver}, fmt.Errorf("%w: node %s: %w", kvstore.ErrOutcomeUnknown, n.cfg.ID, err)
		}
		l.markDurable(ver.Seq)
	}
	if err := l.awaitVisible(ctx, key, ver.Seq, true); err != nil {
		return writeResult{version: ver}, err
	}
	if dup {
		// A retry of a write that was already applied: the value may have
		// been overwritten since, so the writer may not cache it.
		return writeResult{version: ver}, nil
	}
	l.mu.Lock()
	lease := l.grantLocked(key, from, ver.Seq)
	l.mu.Unlock()
	return writeResult{version: ver, lease: lease}, nil
}

// read returns key's visible value and grants node from a lease on it,
// unless a newer write of key arrived while the read waited for visibility:
// then the value is returned with no lease (0).
func (l *leader) read(ctx context.Context, key, from string) (readResult, error) {
	n := l.n
	if err := l.waitServing(ctx); err != nil {
		return readResult{}, err
	}
	if err := l.checkLive(); err != nil {
		return readResult{}, err
	}
	n.mu.Lock()
	it, ok := n.store.Get(key)
	n.mu.Unlock()
	// The value may come from a write that is not visible yet (not on
	// a majority, or older copies still readable): serve it only once
	// it is.
	if err := l.awaitVisible(ctx, key, it.Version.Seq, false); err != nil {
		return readResult{}, err
	}
	l.mu.Lock()
	n.mu.Lock()
	cur, _ := n.store.Get(key)
	owns := l.ownsStoreLocked()
	n.mu.Unlock()
	if owns != nil {
		l.mu.Unlock()
		return readResult{}, owns
	}
	// Liveness may have been lost while this read waited: no value and
	// no lease from a leader that cannot prove it still leads.
	if err := l.checkLive(); err != nil {
		l.mu.Unlock()
		return readResult{}, err
	}
	res := readResult{value: it.Value, found: ok && !it.Deleted, version: it.Version}
	if cur.Version == it.Version {
		res.lease = l.grantLocked(key, from, it.Version.Seq)
	}
	// Otherwise a newer write came while this read waited (and may be
	// acknowledged already): the value read is still a linearizable
	// answer (it was the latest write of key when the read looked,
	// after the read began, and visible before it returns), but no
	// copy of it may be cached. Reading again instead would starve a
	// reader of a key written continuously.
	l.mu.Unlock()
	return res, nil
}

// awaitVisible waits until the entry at seq (a write of key, or 0 for a key
// never written) is visible: committed, and no holder can still read a copy
// of key older than it. The commit wait is bounded by QuorumTimeout (then
// ErrNoQuorum), the holder wait by their leases. For a write (write true)
// every failure is outcome unknown.
func (l *leader) awaitVisible(ctx context.Context, key string, seq uint64, write bool) error {
	n := l.n
	qDeadline := n.now().Add(n.cfg.QuorumTimeout)
	unknown := func(err error) error {
		if write {
			return fmt.Errorf("%w: %w", kvstore.ErrOutcomeUnknown, err)
		}
		return err
	}
	// For kvstore_lease_waits_total (writes): blocked is when only holders
	// still kept the write waiting; leaseEnded is set when a holder that was
	// pending then was forgotten because its lease ran out, not because it
	// applied the write.
	var blocked clock.Instant
	leaseEnded := false
	skip := write && n.cfg.Faults.SkipInvalidation
	for {
		now := n.now()
		l.mu.Lock()
		committed := l.commit >= seq
		pending, next, expired := l.pendingHoldersLocked(key, seq, now, &skip)
		if !write && n.cfg.Faults.SkipReadGate {
			pending = 0 // the deliberate bug
		}
		ch := l.changedCh
		l.mu.Unlock()
		if expired > 0 && !blocked.IsZero() {
			leaseEnded = true
		}
		if committed && pending == 0 {
			if write && leaseEnded {
				n.met.leaseWaits.Inc()
				n.met.leaseWaitSeconds.Add(now.Sub(blocked).Seconds())
			}
			return nil
		}
		if l.ctx.Err() != nil {
			// A new leader waits out every lease of this epoch.
			return unknown(fmt.Errorf("node %s: %w (epoch %d ended: %v)", n.cfg.ID, kvstore.ErrNotLeader, l.epoch, context.Cause(l.ctx)))
		}
		if err := l.checkLive(); err != nil {
			return unknown(err)
		}
		if ctx.Err() != nil {
			return unknown(ctxErr(ctx))
		}
		if !committed && !now.Before(qDeadline) {
			return unknown(fmt.Errorf("node %s: %w: entry %d not on a majority of voters after %v", n.cfg.ID, kvstore.ErrNoQuorum, seq, n.cfg.QuorumTimeout))
		}
		if committed && blocked.IsZero() {
			blocked = now
		}
		wake := qDeadline.Sub(now)
		if committed {
			wake = time.Hour
		}
		if pending > 0 {
			wake = min(wake, next.Sub(now))
		}
		t := time.NewTimer(max(wake, time.Millisecond))
		select {
		case <-ch:
		case <-t.C:
		case <-l.ctx.Done():
		case <-ctx.Done():
		}
		t.Stop()
	}
}

// holding is the leader's record of a cached copy a node may read.
type holding struct {
	seq uint64        // the copy's version (its write's seq; 0: never written)
	end clock.Instant // when its lease ends, on the leader's clock
}

// pendingHoldersLocked counts the holders of key that may still read a
// copy older than seq: the copy is older, the holder has not applied seq
// (applying it drops the copy) and its lease has not ended. next is the
// earliest end of their leases. It forgets holdings whose lease ended
// (counting in expired those that were pending) and those whose copy the
// holder has provably dropped (it applied the key's latest write, newer than
// the copy; a later copy needs a new grant, recorded anew). If *skip is set
// it forgets one pending holder and clears *skip (Faults.SkipInvalidation).
func (l *leader) pendingHoldersLocked(key string, seq uint64, now clock.Instant, skip *bool) (pending int, next clock.Instant, expired int) {
	hs := l.holders[key]
	if len(hs) == 0 {
		return 0, next, 0
	}
	l.n.mu.Lock()
	it, _ := l.n.store.Get(key)
	l.n.mu.Unlock()
	latest := it.Version.Seq
	for id, h := range hs {
		var match uint64
		if p := l.peers[id]; p != nil {
			match = p.match
		}
		older := h.seq < seq && match < seq
		if !now.Before(h.end) {
			if older {
				expired++
			}
			delete(hs, id)
			continue
		}
		if h.seq < latest && match >= latest {
			delete(hs, id)
			continue
		}
		if !older {
			continue
		}
		if *skip {
			// The deliberate bug: forget one holder that still has a live
			// older copy, as if it had dropped it.
			*skip = false
			delete(hs, id)
			continue
		}
		if pending == 0 || h.end.Before(next) {
			next = h.end
		}
		pending++
	}
	if len(hs) == 0 {
		delete(l.holders, key)
	}
	return pending, next, expired
}

// liveHoldersLocked counts the nodes holding a lease on a copy of key older
// than seq that has not ended at now: the cached copies the write at seq
// must invalidate.
func (l *leader) liveHoldersLocked(key string, seq uint64, now clock.Instant) int {
	live := 0
	for _, h := range l.holders[key] {
		if h.seq < seq && now.Before(h.end) {
			live++
		}
	}
	return live
}

// grantLocked records node id as a holder of key's copy at seq (the key's
// current version, checked by the caller) and returns the lease it may use,
// or 0 when it may not cache (this node no longer leads with a live
// session, unknown or unreachable node, or a newer write of the key
// already applied).
//
// The leader itself gets a lease without being recorded as a holder: it
// drops its own copy when it applies the next write of key, and its copy is
// readable only while it still leads in this epoch with a live session, like
// any follower's.
func (l *leader) grantLocked(key, id string, seq uint64) time.Duration {
	n := l.n
	if id == "" {
		return 0
	}
	// Checked under l.mu right before the grant: a visibility wait may have
	// outlasted the session or the epoch.
	if l.checkLive() != nil {
		return 0
	}
	n.mu.Lock()
	it, _ := n.store.Get(key)
	n.mu.Unlock()
	if it.Version.Seq != seq {
		return 0
	}
	if id == n.cfg.ID {
		return n.cfg.LeaseDuration
	}
	if p := l.peers[id]; p == nil || !p.reachable {
		return 0
	}
	hs := l.holders[key]
	if hs == nil {
		hs = make(map[string]holding)
		l.holders[key] = hs
	}
	hs[id] = holding{seq: seq, end: n.now().Add(n.cfg.leaderLease())}
	return n.cfg.LeaseDuration
}

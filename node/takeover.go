package node

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/coord"
	"github.com/kvstore/kvstore/quorum"
	"github.com/kvstore/kvstore/rpc"
	"github.com/kvstore/kvstore/rpc/kvpb"
	"github.com/kvstore/kvstore/store"
)

// takeover is a new leader's first phase, from its election until it
// serves: steps 1-5 of the takeover in docs/design.md. lead runs one,
// then drops it.
type takeover struct {
	*leader
	// settings is the cluster's settings record as read at takeover: its
	// MaxLease bounds the leases older epochs may have granted.
	settings coord.Settings
}

// run runs the takeover until this leader serves, or gives up.
func (t *takeover) run() error {
	n := t.n
	giveUp := n.now().Add(t.stepDownAfter())
	for attempt := 0; ; attempt++ {
		if attempt > 0 && (n.now().After(giveUp) || t.health.lost()) {
			if t.health.lost() {
				n.met.steppedDown()
			}
			t.mu.Lock()
			err := t.takeoverErr
			t.mu.Unlock()
			return fmt.Errorf("giving up leadership: %w", err)
		}
		if attempt > 0 {
			select {
			case <-t.ctx.Done():
			case <-time.After(n.cfg.Heartbeat):
			}
		}
		if t.ctx.Err() != nil {
			return context.Cause(t.ctx)
		}
		rctx, cancel := context.WithTimeout(t.ctx, n.cfg.RPCTimeout)
		voters, err := n.cfg.Coordinator.Voters(rctx)
		cancel()
		if err != nil {
			t.setTakeoverErr(fmt.Errorf("read voters: %w", err))
			continue
		}
		// The leases of older epochs may have been granted by nodes with
		// another lease than this one's (a change of --lease rolled out):
		// the record's MaxLease bounds them.
		rctx, cancel = context.WithTimeout(t.ctx, n.cfg.RPCTimeout)
		t.settings, err = n.cfg.Coordinator.Settings(rctx)
		cancel()
		if err != nil {
			t.setTakeoverErr(fmt.Errorf("read settings: %w", err))
			continue
		}
		n.recs.noteVoters(voters)
		n.recs.noteSettings(t.settings)
		t.mu.Lock()
		t.voters = voters // for health.lost; start sets it again
		t.mu.Unlock()
		// The members of a view that shows this leadership: every node
		// whose session outlived the predecessor's (coord.View).
		members, fresh := t.electedView()
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
		resps := t.prepareAll(targets)
		a := chooseAdoption(n.cfg.ID, t.epoch, voters.IDs, resps)
		if a.behind != "" {
			r := resps[a.behind]
			return t.behind(a.behind, r.AcceptedEpoch, r.OtherLeadership)
		}
		if !a.quorum {
			t.setTakeoverErr(fmt.Errorf("%w: %d of %d voters %v answered prepare(%d) with their data", kvstore.ErrNoQuorum, len(a.yes), len(voters.IDs), voters.IDs, t.epoch))
			continue
		}
		// Step 2: adopt the most up-to-date voter's state.
		n.log.Debug("takeover: adopting", "epoch", t.epoch, "from", a.from, "at", a.at, "why", a.why)
		if n.Applied() != a.at {
			snap, err := t.pullSnapshot(a.from, targets[a.from], a.at)
			if err != nil {
				t.setTakeoverErr(fmt.Errorf("pull snapshot from %s: %w", a.from, err))
				continue
			}
			// restore, adopted and start change the store only while
			// the replica still promises this leadership: this node may
			// have promised a later leader meanwhile (its Prepare ends
			// this context, but not a step already past it) and taken
			// entries that leader counts on.
			p, err := n.rep.restore(t.epoch, t.ld, snap)
			if err != nil {
				return fmt.Errorf("adopting %s's state: %w", a.from, err)
			}
			if err := n.waitDurable(t.ctx, p); err != nil {
				return fmt.Errorf("adopting %s's state: %w", a.from, err)
			}
		}
		// This node's store is now the most up-to-date state of a majority
		// of reconciled voters: it holds everything committed.
		p, err := n.rep.adopted(t.epoch, t.ld)
		if err != nil {
			return fmt.Errorf("recording the reconcile: %w", err)
		}
		if err := n.waitDurable(t.ctx, p); err != nil {
			return fmt.Errorf("recording the reconcile: %w", err)
		}
		unanswered := unansweredTargets(targets, resps, fresh && !(faultsOn && n.cfg.Faults.WaitForGoneVoters))
		// Step 3: seal the epoch with a no-op and replicate it.
		p, err = t.start(voters, targets)
		if err != nil {
			return fmt.Errorf("the epoch's no-op: %w", err)
		}
		if err := n.waitEntriesDurable(t.ctx, p); err != nil {
			return fmt.Errorf("the epoch's no-op: %w", err)
		}
		t.repl.markDurable(t.noopSeq)
		return t.awaitServing(unanswered, fresh)
	}
}

// adoption is what the answers to Prepare decide (takeover steps 1 and 2).
type adoption struct {
	// behind, if set, names a node that promised a later epoch, or this
	// one to another leadership: the leadership ends (leader.behind).
	behind string
	// yes are the voters that answered with their data (not recovering);
	// quorum reports whether they are a majority of the voters.
	yes    map[string]bool
	quorum bool
	// from is the voter whose state the leader adopts, at its applied
	// position at, and why it was chosen.
	from string
	at   store.Version
	why  string
}

// chooseAdoption decides a takeover from the answers to Prepare(epoch)
// (by node id; self is the new leader's id): the most up-to-date voter
// that answered with its data is the one whose state holds everything
// committed, if those voters are a majority (every committed entry is on a
// majority, and two majorities share a voter). A tie goes to self (nothing
// to pull), then to the lowest id. Answers of non-voters and of recovering
// voters count for nothing; a refusal that names a later epoch or another
// leadership (the lowest such id) decides alone. It is a pure function.
func chooseAdoption(self string, epoch int64, voters []string, answers map[string]*kvpb.PrepareResponse) adoption {
	a := adoption{yes: make(map[string]bool)}
	for _, id := range slices.Sorted(maps.Keys(answers)) {
		r := answers[id]
		if !r.Ok {
			if r.AcceptedEpoch > epoch || r.OtherLeadership {
				return adoption{behind: id}
			}
			continue
		}
		if r.Recovering || !slices.Contains(voters, id) {
			continue
		}
		a.yes[id] = true
		at := fromPos(r.Applied)
		if a.from == "" || a.at.Less(at) || (a.at == at && id == self) {
			a.from, a.at = id, at
		}
	}
	a.quorum = quorum.HasMajority(voters, a.yes)
	switch {
	case !a.quorum:
		a.from, a.at = "", store.Version{}
		a.why = fmt.Sprintf("%d of %d voters answered with their data: no majority", len(a.yes), len(voters))
	case a.from == self:
		a.why = fmt.Sprintf("this node's state, at %s, is the most up to date of %d voters", a.at, len(a.yes))
	default:
		a.why = fmt.Sprintf("%s's state, at %s, is the most up to date of %d voters", a.from, a.at, len(a.yes))
	}
	return a
}

// unansweredTargets returns, sorted, the nodes whose silence makes the takeover
// wait out older epochs' leases (step 4): the targets (id -> address, ""
// for a voter with no live session) that did not take Prepare. Step 4's
// wait is for copies that nodes which did not answer may still serve. A
// voter absent from a fresh view (skipGone) has no live session (its
// membership entry went with it) and, by its own deadline, serves
// nothing; then only the members must answer. A pure function.
func unansweredTargets(targets map[string]string, answers map[string]*kvpb.PrepareResponse, skipGone bool) []string {
	var out []string
	for id, addr := range targets {
		if addr == "" && skipGone {
			continue
		}
		if r, ok := answers[id]; !ok || !r.Ok {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// electedView returns the members of the first view that shows this
// node leading in t.epoch, waiting for it up to RPCTimeout: such a view
// was read after the predecessor's election key went, so a node missing
// from it has no session that outlived the predecessor's. Without one
// (fresh false) it returns the latest view's members.
func (t *takeover) electedView() (members map[string]string, fresh bool) {
	n := t.n
	deadline := time.After(n.cfg.RPCTimeout)
	for {
		ch := n.changed()
		v := n.view.Load()
		if v.leader.ID == n.cfg.ID && v.leader.Epoch == t.epoch {
			return v.members, true
		}
		if v.leader.Epoch > t.epoch {
			return v.members, false
		}
		select {
		case <-ch:
		case <-deadline:
			return n.view.Load().members, false
		case <-t.ctx.Done():
			return n.view.Load().members, false
		}
	}
}

// prepareAll sends Prepare(epoch) to every target with an address (and to
// this node directly) and returns the answers that came back in time.
func (t *takeover) prepareAll(targets map[string]string) map[string]*kvpb.PrepareResponse {
	n := t.n
	var mu sync.Mutex
	out := make(map[string]*kvpb.PrepareResponse)
	var wg sync.WaitGroup
	for id, addr := range targets {
		if id == n.cfg.ID {
			r, err := n.prepare(t.ctx, t.epoch, t.ld)
			if err != nil {
				n.log.Warn("own prepare failed", "epoch", t.epoch, "err", err)
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
			ctx, cancel := context.WithTimeout(t.ctx, n.cfg.RPCTimeout)
			defer cancel()
			sent := n.now()
			r, err := c.Prepare(ctx, &kvpb.PrepareRequest{Cluster: n.cfg.Cluster, Incarnation: n.incarnationSent(), To: id, Epoch: t.epoch, LeaderId: t.ld.id, Leadership: t.ld.nonce})
			if err != nil || r.NodeId != id {
				return
			}
			mu.Lock()
			out[id] = r
			mu.Unlock()
			if r.Ok && !r.Recovering {
				t.health.hear(id, sent)
			}
		}()
	}
	wg.Wait()
	return out
}

// pullSnapshot pulls the state of the voter at addr, prepared at want,
// chunk by chunk (GetSnapshot), and checks it whole. The call for the
// next chunk leaves as soon as a chunk arrives (it starts after the
// chunk's last key), before the chunk is checked and added, so that the
// voter reads and sends the next chunk while this node adds this one; a
// chunk that fails its check cancels the call ahead of it.
func (t *takeover) pullSnapshot(id, addr string, want store.Version) (*store.View, error) {
	n := t.n
	if addr == "" {
		return nil, errors.New("no address")
	}
	c, err := n.pool.Peer(addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(t.ctx)
	defer cancel() // the call ahead, if this returns early
	type answer struct {
		p   *kvpb.Snapshot
		err error
	}
	fetch := func(after string, reqsFrom uint64) <-chan answer {
		ch := make(chan answer, 1)
		go func() {
			cctx, ccancel := context.WithTimeout(ctx, n.cfg.RPCTimeout)
			defer ccancel()
			p, err := c.GetSnapshot(cctx, &kvpb.GetSnapshotRequest{Cluster: n.cfg.Cluster, Incarnation: n.incarnationSent(), To: id, Epoch: t.epoch, LeaderId: t.ld.id, Leadership: t.ld.nonce, After: after, RequestsFrom: reqsFrom})
			ch <- answer{p, err}
		}()
		return ch
	}
	b := store.NewBuilder()
	var reqs []store.Request
	next := fetch(b.Last(), 0)
	for {
		a := <-next
		if a.err != nil {
			return nil, rpc.FromStatus(a.err)
		}
		p := a.p
		if p.More {
			after := b.Last()
			if len(p.Items) > 0 {
				after = p.Items[len(p.Items)-1].Key
			}
			next = fetch(after, uint64(len(reqs)+len(p.Requests)))
		}
		if err := t.addChunk(b, &reqs, p, want); err != nil {
			return nil, err
		}
		if !p.More {
			break
		}
	}
	// The snapshot becomes this leader's state and every follower's: a
	// malformed one (from a broken or forged peer) is refused here, as a
	// follower would refuse it.
	v := b.View(want, reqs)
	if err := v.Check(); err != nil {
		return nil, badRequest("snapshot at %s (epoch %d): %w", want, t.epoch, err)
	}
	return v, nil
}

// addChunk checks chunk p of the snapshot prepared at want and adds it to
// b and reqs.
func (t *takeover) addChunk(b *store.Builder, reqs *[]store.Request, p *kvpb.Snapshot, want store.Version) error {
	if got := fromPos(p.Applied); got != want {
		return fmt.Errorf("snapshot at %s, prepared at %s", got, want)
	}
	chunk := &kvpb.SnapshotChunk{Epoch: t.epoch, Applied: p.Applied, After: b.Last(), Items: p.Items, Requests: p.Requests, RequestsFrom: uint64(len(*reqs))}
	if err := validateChunk(chunk); err != nil {
		return err
	}
	for _, it := range p.Items {
		if err := b.Add(it.Key, store.Item{Value: it.Value, Deleted: it.Deleted, Version: fromPos(it.Version)}); err != nil {
			return badRequest("%w", err)
		}
	}
	for _, r := range p.Requests {
		*reqs = append(*reqs, store.Request{ID: r.Id, Version: fromPos(r.Version)})
	}
	if len(p.Items) == 0 && len(p.Requests) == 0 && p.More {
		return badRequest("snapshot at %s: an empty chunk with more to follow", want)
	}
	return nil
}

// awaitServing finishes the takeover: the no-op committed by a majority of
// voters, then (unless every node answered Prepare) the wait for leases
// granted under older epochs: the longest any node may have granted
// (Config.takeoverWait), not only this node's own.
func (t *takeover) awaitServing(unanswered []string, fresh bool) error {
	n := t.n
	deadline := n.now().Add(n.cfg.QuorumTimeout)
	for {
		t.mu.Lock()
		ok := t.commit >= t.noopSeq
		ch := t.changedCh
		t.mu.Unlock()
		if ok {
			break
		}
		if t.health.lost() {
			n.met.steppedDown()
			return fmt.Errorf("giving up leadership: %w: %w (%v)", kvstore.ErrNoQuorum, errQuorumLost, t.health.window())
		}
		if n.now().After(deadline) {
			err := fmt.Errorf("%w: the epoch's no-op is not on a majority of voters", kvstore.ErrNoQuorum)
			t.setTakeoverErr(err)
			if n.now().Sub(t.electedAt) > t.stepDownAfter() {
				return fmt.Errorf("giving up leadership: %w", err)
			}
			deadline = n.now().Add(n.cfg.QuorumTimeout)
		}
		select {
		case <-ch:
		case <-t.ctx.Done():
			return context.Cause(t.ctx)
		case <-time.After(min(deadline.Sub(n.now()), n.cfg.Heartbeat)):
		}
	}
	if len(unanswered) > 0 && !(faultsOn && n.cfg.Faults.SkipTakeoverWait) {
		wait := t.electedAt.Add(n.cfg.takeoverWait(t.settings)).Sub(n.now())
		if wait > 0 {
			n.met.takeoverWaits.Inc()
			n.log.Info("waiting out leases of older epochs", "wait", wait.Round(time.Millisecond), "unanswered", unanswered, "fresh_view", fresh)
			select {
			case <-time.After(wait):
			case <-t.ctx.Done():
				return context.Cause(t.ctx)
			}
		}
	}
	if err := t.sealVoters(); err != nil {
		return err
	}
	t.mu.Lock()
	t.serving = true
	t.servingNow.Store(true)
	t.takeoverErr = nil
	t.broadcastLocked()
	t.mu.Unlock()
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
func (t *takeover) sealVoters() error {
	n := t.n
	t.mu.Lock()
	v := t.voters
	t.mu.Unlock()
	if !v.Unsealed || (faultsOn && n.cfg.Faults.SkipVoterSeal) {
		return nil
	}
	for {
		ctx, cancel := context.WithTimeout(t.ctx, n.cfg.RPCTimeout)
		err := t.sess.SetVoters(ctx, t.epoch, v, v.IDs)
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
				t.mu.Lock()
				t.voters = got
				t.mu.Unlock()
				n.log.Info("sealed the voter record", "epoch", t.epoch, "voters", got.IDs)
				return nil
			}
			v = got
		}
		if err = errors.Join(err, rerr); err == nil {
			err = errors.New("the record still reads unsealed")
		}
		t.setTakeoverErr(fmt.Errorf("seal the voter record: %w", err))
		if n.now().Sub(t.electedAt) > t.stepDownAfter() {
			return fmt.Errorf("giving up leadership: seal the voter record: %w", err)
		}
		select {
		case <-t.ctx.Done():
			return context.Cause(t.ctx)
		case <-time.After(n.cfg.Heartbeat):
		}
	}
}

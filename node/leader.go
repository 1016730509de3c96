package node

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/clock"
	"github.com/kvstore/kvstore/coord"
)

var errLeadershipEnded = errors.New("leadership ended")

// leader is the leader role of a node for one epoch. It lives from the
// election until the session is in doubt or a newer epoch is seen.
//
// This file holds its life (lead, maintain, stepping down for want
// of a majority); its parts are types it holds as fields, in files named
// for them: takeover.go (from the election until it serves),
// replication.go and entrylog.go (replication: the followers' progress,
// the replicators, the commit rule; the log), holders.go (leaseTable:
// who holds a cached copy of which key until when), members.go
// (voterChanges: adding and removing voters), checkquorum.go
// (quorumCheck: CheckQuorum), write_leader.go and read_leader.go (its
// half of a put and a get). The parts share the leader's mu.
type leader struct {
	n         *Node
	epoch     int64
	ld        leadership // this node's id and a random number: names the leadership
	sess      coord.Session
	ctx       context.Context // ends with the leadership
	cancel    context.CancelCauseFunc
	wg        sync.WaitGroup // replicators
	electedAt clock.Instant

	// mu guards everything below. Lock order: mu, then the replica's.
	mu          sync.Mutex
	started     bool
	voters      coord.Voters
	entryLog    // this epoch's history, for the followers that lag
	noopSeq     uint64
	commit      uint64
	serving     bool
	takeoverErr error
	repl        replication   // the followers' progress, the commit
	leases      leaseTable    // who holds a cached copy until when
	prior       priorTable    // the latest visible value of keys with writes in flight
	voterCh     voterChanges  // adding and removing voters
	health      quorumCheck   // which voters answered lately (CheckQuorum)
	changedCh   chan struct{} // closed and replaced on progress
	committing  commitWaiters // waits for the commit index to reach a seq

	// servingNow is serving, read without l.mu by every write and read
	// (waitServing): serving never goes back to false in a leadership.
	servingNow atomic.Bool
}

// runLeader leads for epoch until leadership ends (lead).
func (n *Node) runLeader(ctx context.Context, sess coord.Session, epoch int64) error {
	return lead(ctx, n, sess, epoch)
}

// lead is node n's leadership for epoch, from the election (once n serves
// with session sess) to its end: the takeover, then the periodic duties.
//
// It returns why the leadership ended.
func lead(ctx context.Context, n *Node, sess coord.Session, epoch int64) (ended error) {
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
	l := newLeader(n, epoch, sess, lctx, cancel)
	l.electedAt = n.now()
	n.lead.Store(l)
	defer func() {
		cancel(errLeadershipEnded)
		stop()
		l.wg.Wait()
		n.lead.CompareAndSwap(l, nil)
		// Copies this node granted itself as leader go with the role. A
		// read answered just before may still install its copy after
		// this drop (install checks the epoch and the serving state,
		// which a resignation leaves as they were). That copy is as
		// safe as any holder's: a successor serves only once this node
		// promised it (which drops the cache and stops installs), or
		// older leases ran out, or this node's session ended (then it
		// answers nothing from its cache); takeover.go.
		n.reader.dropCache()
		l.mu.Lock()
		l.broadcastLocked()
		l.mu.Unlock()
		n.notify()
		n.log.Info("leadership ended", "epoch", epoch, "cause", context.Cause(lctx))
		if ended == nil {
			ended = context.Cause(lctx)
		}
	}()
	if err := (&takeover{leader: l}).run(); err != nil {
		n.log.Warn("takeover failed", "epoch", epoch, "err", err)
		return err
	}
	n.log.Info("leading", "epoch", epoch)
	n.notify()
	l.maintain()
	return context.Cause(lctx)
}

// newLeader is the leader role of n for epoch, with its parts, before
// the takeover: ctx ends with the leadership.
func newLeader(n *Node, epoch int64, sess coord.Session, ctx context.Context, cancel context.CancelCauseFunc) *leader {
	l := &leader{
		n: n, epoch: epoch, sess: sess, ctx: ctx, cancel: cancel,
		ld:        leadership{id: n.cfg.ID, nonce: newLeadershipNonce()},
		changedCh: make(chan struct{}),
	}
	l.repl = replication{l: l, peers: make(map[string]*progress)}
	l.leases = leaseTable{l: l, held: make(holdings)}
	l.prior = make(priorTable)
	l.health = quorumCheck{l: l, heard: make(map[string]clock.Instant)}
	l.voterCh = voterChanges{l: l, removed: make(map[string]bool), leaving: make(map[string]bool)}
	return l
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
		if l.health.lost() {
			// Cut off from the voters but not from the coordinator
			// (CheckQuorum): give another node the chance to lead a
			// majority. Stepping down ends this node's own copies and
			// its serving at once; the next leader waits out the leases
			// it granted (takeover step 4), as after any leader.
			n.met.steppedDown()
			n.log.Warn("stepping down: no majority of the voters answered within the quorum window (CheckQuorum)", "epoch", l.epoch, "window", l.health.window())
			l.cancel(fmt.Errorf("%w: %w (%v)", kvstore.ErrNoQuorum, errQuorumLost, l.health.window()))
			return
		}
		l.voterCh.maybeAdd()
		l.voterCh.tellRemoved()
		l.repl.trimLog()
		if tick++; tick%sweepTicks == 0 {
			l.leases.sweep()
		}
	}
}

// stepDownAfter bounds a takeover that keeps failing for other reasons
// than a missing majority (quorumCheck.lost covers that).
func (l *leader) stepDownAfter() time.Duration { return 2 * l.n.cfg.QuorumTimeout }

// removeVoter removes id from the voter record (voterChanges.remove).
func (l *leader) removeVoter(ctx context.Context, id string) (coord.Voters, error) {
	return l.voterCh.remove(ctx, id)
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

// servesNow reports whether l takes operations at once, without the
// wait of waitServing: its takeover is over and it leads with a live
// session. Operations that arrive on a stream's receiver are appended
// (or answered) there only then.
func (l *leader) servesNow() bool { return l.servingNow.Load() && l.checkLive() == nil }

// waitServing waits for the takeover to finish. If a majority stays out of
// reach for QuorumTimeout it fails with ErrNoQuorum (nothing was applied).
func (l *leader) waitServing(ctx context.Context) error {
	if l.servingNow.Load() {
		return l.checkLive()
	}
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

package node

// The node's coordinator session and serving state (docs/design.md,
// Sessions and suspension): the session loop, the switch between serving
// and suspended, the cluster view, the context of each operation, and
// waiting until the node serves.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/clock"
	"github.com/kvstore/kvstore/coord"
)

// sessionKeeper keeps the node's coordinator session: it opens one,
// registers the node, serves while the session's deadline holds (and
// suspends when it does not or the machine was suspended), and opens the
// next when it ends, until the node stops.
type sessionKeeper struct {
	n *Node
	// hold is how long (a time.Duration) run waits before the next
	// session, once: set by a leader that closed its session after
	// stepping down (campaign.go).
	hold atomic.Int64
}

// run keeps a coordinator session open for the node's lifetime.
func (k *sessionKeeper) run() {
	n := k.n
	backoff := 50 * time.Millisecond
	jumps := newJumpWatch(n.clk)
	for n.ctx.Err() == nil {
		if hold := time.Duration(k.hold.Swap(0)); hold > 0 {
			select {
			case <-n.ctx.Done():
				return
			case <-time.After(hold):
			}
		}
		sess, err := n.cfg.Coordinator.NewSession(n.ctx, n.cfg.SessionTTL)
		if err == nil {
			rctx, cancel := context.WithTimeout(n.ctx, n.cfg.SessionTTL)
			var mismatch error
			if mismatch, err = k.settingsStillMatch(rctx); err == nil && mismatch == nil {
				err = sess.Register(rctx, coord.Member{ID: n.cfg.ID, Addr: n.addr})
			}
			cancel()
			if mismatch != nil {
				// The cluster's settings changed while this node was
				// away (a session lost, a long pause): it may not
				// serve with the old ones, nor come back as a member.
				n.log.Error("the cluster's settings changed: stopping", "err", mismatch)
				k.close(sess)
				n.stopItself(fmt.Errorf("node %s: %w: %w", n.cfg.ID, kvstore.ErrStopped, mismatch))
				return
			}
			if err != nil {
				k.close(sess)
			}
		}
		if err != nil {
			if n.ctx.Err() == nil {
				n.log.Debug("coordinator session failed", "err", err)
			}
			select {
			case <-n.ctx.Done():
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
		k.serve(sess, jumps)
		k.close(sess)
	}
}

// settingsStillMatch reads the cluster's settings record, as every new
// session does before the node registers: Start checked it, but a record
// changed since (kvstore cluster settings set) while this node was no
// member must stop it. mismatch says how the settings differ; err that the
// record could not be read.
func (k *sessionKeeper) settingsStillMatch(ctx context.Context) (mismatch, err error) {
	n := k.n
	rec, err := n.cfg.Coordinator.Settings(ctx)
	if err != nil {
		return nil, fmt.Errorf("read settings: %w", err)
	}
	if rec.Version == 0 {
		return nil, nil // no record (yet): Start records one
	}
	return n.cfg.checkSettings(rec), nil
}

// stopItself closes the node from one of its own goroutines (which Close
// waits for, so it runs apart): the node's Done channel is then closed and
// StopCause says why.
func (n *Node) stopItself(cause error) {
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*n.cfg.RPCTimeout)
		defer cancel()
		_ = n.closeWith(ctx, cause)
	}()
}

func (k *sessionKeeper) close(sess coord.Session) {
	n := k.n
	if n.killed.Load() {
		return // a crash revokes nothing
	}
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.RPCTimeout)
	defer cancel()
	_ = sess.Close(ctx)
}

// serve serves under one session until it ends or the node stops.
// jumps watches for suspends of the machine across sessions: a suspend
// that ended the previous session is still reported.
func (k *sessionKeeper) serve(sess coord.Session, jumps *jumpWatch) {
	n := k.n
	sctx, cancel := context.WithCancel(n.ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	wg.Add(2)
	go func() {
		defer wg.Done()
		for v := range sess.Watch(sctx) {
			k.setView(v)
		}
	}()
	go func() {
		defer wg.Done()
		n.camp.campaignLoop(sctx, sess)
	}()
	// After a suspend of the machine (jumps), the session is in doubt
	// until its deadline moves past doubt: a keep-alive answered since.
	tick := time.NewTicker(jumpCheck)
	defer tick.Stop()
	var doubt clock.Instant
	inDoubt := false
	wasHealthy := true
	for {
		ch := sess.Changed()
		deadline := sess.Deadline()
		now := n.now()
		if inDoubt && deadline.After(doubt) {
			inDoubt = false
		}
		// A failed keep-alive or a lost connection (Healthy false) is not
		// doubt: the deadline was measured from a keep-alive the
		// coordinator answered, so the session is live until it passes.
		// Suspending on every blip would end leadership and drop the
		// cache on links that flap faster than the deadline runs out.
		healthy := sess.Healthy() || !(faultsOn && n.cfg.Faults.SuspendOnUnhealthy)
		if healthy && now.Before(deadline) && !inDoubt {
			if n.State() != StateOK {
				n.log.Info("serving", "deadline_in", deadline.Sub(now).Round(time.Millisecond))
				k.setServing(sess, StateOK, nil)
			}
		} else if n.State() == StateOK {
			n.log.Warn("suspended: coordinator session in doubt", "healthy", sess.Healthy(), "deadline_passed", !now.Before(deadline), "clock_jumped", inDoubt)
			n.met.suspended()
			k.setServing(sess, StateSuspended, fmt.Errorf("node %s: %w", n.cfg.ID, kvstore.ErrPartitioned))
		}
		if h := sess.Healthy(); h != wasHealthy {
			wasHealthy = h
			if !h && n.State() == StateOK {
				n.log.Info("coordinator keep-alive failing; serving until the session deadline", "deadline_in", deadline.Sub(now).Round(time.Millisecond))
			}
		}
		wait := deadline.Sub(now)
		if wait <= 0 {
			wait = time.Hour
		}
		timer := time.NewTimer(wait)
		select {
		case <-ch:
		case <-timer.C:
		case <-tick.C:
			if d, ok := jumps.check(); ok {
				k.clockJumped(d)
				// In doubt until a keep-alive answered from now on moves
				// the deadline: the one read now, not at the top of the
				// loop (a keep-alive answered in between, before the
				// watcher looked, proves nothing of the resume). The
				// node suspends at once, so the cache is dropped even
				// if such a keep-alive comes before the next turn.
				doubt, inDoubt = sess.Deadline(), true
				if n.State() == StateOK {
					n.log.Warn("suspended: coordinator session in doubt", "healthy", sess.Healthy(), "deadline_passed", !n.now().Before(doubt), "clock_jumped", true)
					n.met.suspended()
					k.setServing(sess, StateSuspended, fmt.Errorf("node %s: %w", n.cfg.ID, kvstore.ErrPartitioned))
				}
			}
		case <-sess.Done():
			timer.Stop()
			n.log.Warn("coordinator session ended", "err", sess.Err())
			if n.State() == StateOK {
				n.met.suspended()
			}
			k.setServing(nil, StateSuspended, fmt.Errorf("node %s: %w (session expired)", n.cfg.ID, kvstore.ErrPartitioned))
			return
		case <-n.ctx.Done():
			timer.Stop()
			return
		}
		timer.Stop()
	}
}

// setServing switches the serving state. Leaving StateOK cancels every
// pending operation with cause, drops the cache and ends leadership.
//
// The new state is stored, and the cache dropped, while the replicated
// state cannot change (replica.exclusive): install checks there too
// (replica.whenCurrent) that the state its fetch was sent under is still
// the current one, so no reply is installed after the drop.
func (k *sessionKeeper) setServing(sess coord.Session, st State, cause error) {
	n := k.n
	if st == StateOK {
		ctx, cancel := context.WithCancelCause(n.ctx)
		n.rep.exclusive(func() {
			n.serving.Store(&servingState{ctx: ctx, cancel: cancel, sess: sess, state: st})
		})
	} else {
		if n.closed.Load() && st != StateStopped {
			return
		}
		ctx, cancel := context.WithCancelCause(context.Background())
		cancel(cause)
		var old *servingState
		n.rep.exclusive(func() {
			old = n.serving.Swap(&servingState{ctx: ctx, cancel: cancel, sess: sess, state: st})
			n.reader.dropCache()
		})
		old.cancel(cause)
	}
	n.notify()
}

func (k *sessionKeeper) setView(v coord.View) {
	n := k.n
	n.view.Store(&viewState{leader: v.Leader, members: v.Members})
	n.leaderMoved()
	n.met.sawLeader(v.Leader)
	if l := n.lead.Load(); l != nil {
		l.viewChanged(v)
	}
	n.notify()
}

// ctxErr turns the end of an operation's context into the error to return.
func ctxErr(ctx context.Context) error {
	cause := context.Cause(ctx)
	if errors.Is(cause, context.DeadlineExceeded) {
		return fmt.Errorf("%w: %w", kvstore.ErrTimeout, cause)
	}
	return cause
}

// errResigned ends a leadership given up on purpose.
var errResigned = errors.New("leadership handed over (resign)")

// Resign hands leadership over: if this node leads, it stops leading at
// once (pending writes fail as outcome unknown), gives up its election key
// so another node is elected without waiting for a TTL, and stays on as a
// follower. It returns once the key is given up, or ctx ends. A rolling
// restart calls it before stopping a leader.
func (n *Node) Resign(ctx context.Context) error {
	return n.camp.resign(ctx)
}

// Ready reports whether the node serves: nil when it is in StateOK and
// sees a serving leader (itself or another), otherwise an error saying why
// (matching kvstore.ErrStopped, ErrPartitioned or ErrNoLeader). It is what a
// readiness probe asks.
func (n *Node) Ready() error {
	switch st := n.State(); st {
	case StateOK:
	case StateStopped:
		return fmt.Errorf("node %s: %w", n.cfg.ID, kvstore.ErrStopped)
	default:
		return fmt.Errorf("node %s: %w (state %s)", n.cfg.ID, kvstore.ErrPartitioned, st)
	}
	l := n.Leader()
	switch {
	case l.ID == "":
		return fmt.Errorf("node %s: %w known", n.cfg.ID, kvstore.ErrNoLeader)
	case l.ID == n.cfg.ID && !n.IsLeader():
		return fmt.Errorf("node %s: %w yet: elected in epoch %d, taking over", n.cfg.ID, kvstore.ErrNoLeader, l.Epoch)
	}
	return nil
}

// WaitServing waits until the node serves and sees a serving leader (itself
// or another), or ctx ends.
func (n *Node) WaitServing(ctx context.Context) error {
	for {
		ch := n.changed()
		if n.Ready() == nil {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("node %s: not serving (state %s, leader %q): %w", n.cfg.ID, n.State(), n.Leader().ID, ctx.Err())
		case <-time.After(50 * time.Millisecond):
			// The leader's serving flag is not part of the view; poll it.
		}
	}
}

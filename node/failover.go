package node

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/coord"
	"github.com/kvstore/kvstore/rpc/kvpb"
)

// errLeaderMoved ends a call in flight to a leader this node no longer sees
// as the leader. It names no sentinel: a write cut off by it may have been
// applied (the retry, with the same request id, finds out).
var errLeaderMoved = errors.New("the leader changed while the call was in flight")

// inflight holds the calls in flight from this node to a remote leader: a
// forwarded write or a fetch. Each ends as soon as the node sees another
// leader, or promises a later epoch, instead of waiting for an answer an
// old leader (paused, frozen, cut off) may never send.
type inflight struct {
	mu    sync.Mutex
	calls map[*leaderCall]struct{}
}

// leaderCall is one call in flight to the leader target.
type leaderCall struct {
	target coord.Leader
	cancel context.CancelCauseFunc
}

// toLeader derives the context of one call to the remote leader target. The
// context ends (cause errLeaderMoved) when this node sees a leader other
// than target or promises an epoch above target's, at once if it already
// does; done releases it.
func (rt *router) toLeader(ctx context.Context, target coord.Leader) (context.Context, func()) {
	cctx, cancel := context.WithCancelCause(ctx)
	if faultsOn && rt.n.cfg.Faults.KeepForwardsOnLeaderChange {
		return cctx, func() { cancel(nil) }
	}
	c := &leaderCall{target: target, cancel: cancel}
	rt.fwd.mu.Lock()
	// The view and the promised epoch are stored before leaderMoved takes
	// the lock: a change is seen either here or by that scan.
	if rt.movedFrom(target) {
		cancel(rt.movedErr(target))
	} else {
		if rt.fwd.calls == nil {
			rt.fwd.calls = make(map[*leaderCall]struct{})
		}
		rt.fwd.calls[c] = struct{}{}
	}
	rt.fwd.mu.Unlock()
	return cctx, func() {
		rt.fwd.mu.Lock()
		delete(rt.fwd.calls, c)
		rt.fwd.mu.Unlock()
		cancel(nil)
	}
}

// movedFrom reports whether target is no longer the leader this node
// should talk to: the view names another leader (or none), or the node
// promised a later epoch (a newer leader's message came first).
func (rt *router) movedFrom(target coord.Leader) bool {
	v := rt.n.view.Load().leader
	return v.ID != target.ID || v.Epoch != target.Epoch || rt.n.rep.epoch() > target.Epoch
}

func (rt *router) movedErr(target coord.Leader) error {
	v := rt.n.view.Load().leader
	return fmt.Errorf("node %s: call to leader %s (epoch %d) dropped: now leader %q (epoch %d), promised epoch %d: %w",
		rt.n.cfg.ID, target.ID, target.Epoch, v.ID, v.Epoch, rt.n.rep.epoch(), errLeaderMoved)
}

// leaderMoved ends every call in flight to a leader this node no longer
// sees as the leader. setView calls it after storing a view, and
// nodeEvents.promised after the promised epoch rose.
func (rt *router) leaderMoved() {
	rt.fwd.mu.Lock()
	defer rt.fwd.mu.Unlock()
	for c := range rt.fwd.calls {
		if rt.movedFrom(c.target) {
			c.cancel(rt.movedErr(c.target))
			delete(rt.fwd.calls, c)
		}
	}
}

// callErr is the error of a call to the leader that failed with err: the
// reason the node ended it if it did (errLeaderMoved, or the operation's own
// cause), else err.
func callErr(cctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if cause := context.Cause(cctx); cause != nil && errors.Is(cause, errLeaderMoved) {
		return cause
	}
	return err
}

// definiteErrs are the answers that prove a write attempt applied nothing,
// unless they come with kvstore.ErrOutcomeUnknown: each is given before the
// leader appends the entry (the leader wraps every failure after that as
// outcome unknown).
var definiteErrs = []error{
	kvstore.ErrBadRequest, kvstore.ErrTooLarge, kvstore.ErrBusy,
	kvstore.ErrPartitioned, kvstore.ErrStopped, kvstore.ErrNoLeader,
	kvstore.ErrNoQuorum, kvstore.ErrTimeout, kvstore.ErrNotLeader,
	kvstore.ErrStaleEpoch,
}

// definite reports whether err, the answer of a leader (or of this node's
// own leader role) to a write, proves that this attempt applied nothing. A
// transport failure or a call this node cut off matches no sentinel: the
// request may have been applied.
func definite(err error) bool {
	if errors.Is(err, kvstore.ErrOutcomeUnknown) {
		return false
	}
	for _, d := range definiteErrs {
		if errors.Is(err, d) {
			return true
		}
	}
	return false
}

// answerBefore pulls the deadline of an operation a caller sent (a client
// call, or a forwarded write, fetch or removal) in by a margin, a tenth of
// the time left (5 ms to 250 ms), so that the node's own answer reaches the
// caller before the caller's deadline cuts the call. That answer says what
// happened (ErrNoLeader: never sent to a leader; ErrTimeout alone: not
// applied; with ErrOutcomeUnknown: perhaps applied), where a call cut by
// the caller's deadline says nothing, and a write it cut counts as perhaps
// applied. Other node-to-node calls keep their deadline.
func answerBefore(ctx context.Context, fullMethod string) (context.Context, context.CancelFunc) {
	switch {
	case strings.HasPrefix(fullMethod, "/"+kvpb.KV_ServiceDesc.ServiceName+"/"),
		fullMethod == kvpb.Peer_Write_FullMethodName,
		fullMethod == kvpb.Peer_Fetch_FullMethodName,
		fullMethod == kvpb.Peer_RemoveVoter_FullMethodName:
	default:
		return ctx, func() {}
	}
	dl, ok := ctx.Deadline()
	if !ok {
		return ctx, func() {}
	}
	margin := min(max(time.Until(dl)/10, 5*time.Millisecond), 250*time.Millisecond)
	return context.WithDeadline(ctx, dl.Add(-margin))
}

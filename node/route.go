package node

// Finding the leader for an operation and retrying it there: shared by the
// read, write and voter-removal paths.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/coord"
)

// router finds the leader for an operation (this node's leader role or a
// remote one), paces the retries, and ends the calls in flight to a
// remote leader the moment it is no longer the leader (failover.go). Node
// embeds it: the read, write and voter-removal paths call it directly.
type router struct {
	n   *Node
	fwd inflight // calls in flight to a remote leader (failover.go)
}

// leaderTarget waits until a leader is known and returns it: this node's
// leader role, or the address of another node and that leader (id and
// epoch), for toLeader.
//
// With no leader to be had, it fails with ErrNoQuorum once a probe round
// that began after the wait shows no majority of the voters answering
// this node: no leader can come of its side (pre-vote), and waiting out
// the deadline would only hide that.
func (rt *router) leaderTarget(ctx context.Context) (*leader, string, coord.Leader, error) {
	r := rt.n.camp.reach.Load()
	var round uint64
	if r != nil {
		round = r.round() + 1 // a round in progress may have begun before
	}
	for {
		ch := rt.n.changed()
		v := rt.n.view.Load()
		if v.leader.ID == rt.n.cfg.ID {
			if l := rt.n.lead.Load(); l != nil && l.epoch == v.leader.Epoch {
				return l, "", v.leader, nil
			}
		} else if addr := v.members[v.leader.ID]; v.leader.ID != "" && addr != "" {
			return nil, addr, v.leader, nil
		}
		if err := rt.n.camp.noQuorum(r, round); err != nil {
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
				return nil, "", coord.Leader{}, fmt.Errorf("node %s: %w: %w", rt.n.cfg.ID, kvstore.ErrNoLeader, kvstore.ErrTimeout)
			}
			return nil, "", coord.Leader{}, ctxErr(ctx)
		}
	}
}

// retryPause waits a little before the next attempt, or returns ctx's error.
func (rt *router) retryPause(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return ctxErr(ctx)
	case <-rt.n.changed():
		return nil
	case <-time.After(rt.n.cfg.Heartbeat / 2):
		return nil
	}
}

// retryable reports whether an attempt may be retried (with the same
// request id): the leader moved, is electing, or could not be reached. This
// node's own partition or stop ends the operation's context, which the
// retry loop checks. A leader's refusal of the request itself is final:
// ErrBadRequest, and ErrTooLarge from a leader whose limits are smaller
// than this node's (limits are per node); every retry would be refused
// alike, and the caller would get ErrTimeout instead of the cause.
func retryable(err error) bool {
	return !errors.Is(err, kvstore.ErrBadRequest) && !errors.Is(err, kvstore.ErrTooLarge) && !errors.Is(err, kvstore.ErrNoQuorum)
}

// leaderErr names the leader an attempt went to, for the error message.
func (rt *router) leaderErr(ld coord.Leader, addr string, err error) error {
	return fmt.Errorf("leader %s (epoch %d) at %s: %w", ld.ID, ld.Epoch, addr, err)
}

// joinLast adds the last attempt's error to err's message, for diagnosis.
func joinLast(err, last error) error {
	if last == nil || errors.Is(err, last) {
		return err
	}
	return fmt.Errorf("%w (last attempt: %v)", err, last)
}

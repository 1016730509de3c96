package nemesis

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// The lost disks: a node's, and a node's that holds the last copy of
// acknowledged writes.
var (
	// LoseDisk crashes a node, deletes its data directory (a lost disk)
	// and restarts it; with Step.Twice it crashes and restarts it once
	// more. Its inbound RPC is off from before the crash until the heal,
	// so that no other leader reconciles it sooner: it must start
	// recovering after each restart, or Play reports ErrNotRecovering,
	// unless its own takeover reconciled it in between (see wipe).
	// Durable clusters only.
	LoseDisk Fault = loseDisk{base{"lose-disk", AtNodes}}
	// LoseLastCopy is LoseDisk on a follower (Pick, counted from the
	// leader) that holds the last copy of acknowledged writes: a minority
	// of the other followers lag first (their inbound RPC off for the
	// hold, while the clients write), then the follower loses its disk
	// (Twice as in LoseDisk), then the leader and every other node that
	// did not lag crash, and the laggards and the wiped node get their RPC
	// back. They are a majority only if the wiped node counts: it must
	// not, so no leader may serve until the heal restarts the crashed
	// nodes with their data. Durable clusters only.
	LoseLastCopy Fault = loseLastCopy{base{"lose-disk-last-copy", AtFollower}}
)

type loseDisk struct{ base }

func (loseDisk) Draw(d *Draw, st *Step) {
	st.Nodes = d.Perm[:1]
	st.Twice = d.Coin()
}

func (loseDisk) Inject(ctx context.Context, a Aimed, st Step) (Hit, error) {
	return Hit{Nodes: a.Nodes}, wipe(ctx, a.Target, a.Nodes[0], st.Twice)
}

type loseLastCopy struct{ base }

func (loseLastCopy) Draw(d *Draw, st *Step) {
	st.Pick = d.IntN(d.Size)
	st.Twice = d.Coin()
}

// Inject hits the wiped node, the laggards, then the crashed ones.
func (f loseLastCopy) Inject(ctx context.Context, a Aimed, st Step) (Hit, error) {
	t, active, ld := a.Target, a.Active, a.Nodes[0]
	if len(active) < 3 {
		return Hit{Nodes: []int{ld}}, fmt.Errorf("%s needs 3 nodes", f.Name())
	}
	wiped := follower(active, ld, st.Pick)
	var lag, crash []int
	for i := range active {
		n := follower(active, ld, st.Pick+1+i)
		if n == wiped || slices.Contains(lag, n) {
			continue
		}
		if len(lag) < (len(active)-1)/2 {
			lag = append(lag, n)
		}
	}
	for _, n := range active {
		if n != wiped && !slices.Contains(lag, n) {
			crash = append(crash, n)
		}
	}
	hit := Hit{Nodes: append(append([]int{wiped}, lag...), crash...)}
	for _, n := range lag {
		if err := t.RmiDown(n); err != nil {
			return hit, err
		}
	}
	select { // the clients write without the laggards
	case <-ctx.Done():
		return hit, ctx.Err()
	case <-time.After(st.Hold):
	}
	lost := wipe(ctx, t, wiped, st.Twice)
	if len(brokenIn(lost)) == 0 && lost != nil {
		return hit, lost
	}
	for _, n := range crash {
		if err := t.Kill(n); err != nil {
			return hit, errors.Join(lost, err)
		}
	}
	for _, n := range append(lag, wiped) {
		if err := t.RmiUp(n); err != nil {
			return hit, errors.Join(lost, err)
		}
	}
	return hit, lost
}

// LivenessExempt: no healthy majority, by design.
func (loseLastCopy) LivenessExempt(int) bool { return true }

// wipe crashes node n, deletes its data directory and restarts it, twice
// if twice, with its inbound RPC off (until the heal) so that no other
// leader reconciles it meanwhile. After each restart the node must have
// started recovering, or the error matches ErrNotRecovering and the step
// goes on (the schedule's checks judge what the broken node did). One
// exception: its outbound calls still work, so the node may win an
// election and reconcile itself in its own takeover (a majority of the
// others answering, its state pulled from the most up to date); killed
// after that, it rightly restarts with reconciled data. Whether its
// directory surely kept the mark when it was killed
// (Target.UnreconciledWhenKilled) tells.
func wipe(ctx context.Context, t Target, n int, twice bool) error {
	if err := t.RmiDown(n); err != nil {
		return err
	}
	if err := t.Kill(n); err != nil {
		return err
	}
	if err := t.WipeData(n); err != nil {
		return err
	}
	var broken []error
	unreconciled := true // as far as the node knew when last killed
	for i := 1; i <= 1+boolInt(twice); i++ {
		if i > 1 {
			if err := t.Kill(n); err != nil {
				return errors.Join(append(broken, err)...)
			}
			rec, err := t.UnreconciledWhenKilled(n)
			if err != nil {
				return errors.Join(append(broken, err)...)
			}
			unreconciled = rec
		}
		if err := t.Restart(ctx, n); err != nil {
			return errors.Join(append(broken, err)...)
		}
		rec, err := t.StartedRecovering(n)
		if err != nil {
			return errors.Join(append(broken, err)...)
		}
		if unreconciled && !rec {
			broken = append(broken, fmt.Errorf("%w: node %d, restart %d after its data directory was deleted, before any leader could reach it", ErrNotRecovering, n, i))
		}
	}
	return errors.Join(broken...)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

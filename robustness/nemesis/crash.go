package nemesis

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// The crashes: a node's, the leader's, every node's at once (a power
// loss) and every node's in turn.
var (
	// Kill crashes a node (memory lost); the heal restarts it.
	Kill Fault = kill{base{"kill", AtNodes}, oneNode{}}
	// KillLeader is Kill on the current leader.
	KillLeader Fault = kill{base{"kill-leader", AtLeader}, noDraw{}}
	// CrashAll is a power loss of the whole cluster: every node is killed
	// at once (Target.PowerLoss), and the group each one was committing
	// is left torn in its log (a later part of the write landed, its start
	// did not); the heal restarts them, and each one must come back as it
	// was, not recovering, or Play reports ErrLostData. Only nodes with a
	// data directory survive it: use it with durable clusters.
	CrashAll Fault = crashAll{base{"crash-all", AtNodes}, noDraw{}}
	// RollingCrash kills and restarts the nodes one after another, each
	// restart waited for before the next kill. With durable nodes nothing
	// is lost; without, each comes back recovering.
	RollingCrash Fault = rollingCrash{base{"rolling-crash", AtNodes}, noDraw{}}
)

type kill struct {
	base
	drawer
}

func (kill) Inject(_ context.Context, a Aimed, _ Step) (Hit, error) {
	return Hit{Nodes: a.Nodes}, a.Target.Kill(a.Nodes[0])
}

type crashAll struct {
	base
	noDraw
}

func (crashAll) Inject(_ context.Context, a Aimed, _ Step) (Hit, error) {
	before := map[int]bool{}
	nodes, err := powerLoss(a.Target, a.Active, a.Logf, before)
	return Hit{Nodes: nodes, recovering: before}, err
}

// Heal restarts every node, then checks that none lost its data.
func (crashAll) Heal(ctx context.Context, t Target, hit Hit) error {
	if err := t.Heal(ctx); err != nil {
		return err
	}
	return lostToPowerLoss(t, hit.recovering)
}

// LivenessExempt: every node crashed.
func (crashAll) LivenessExempt(int) bool { return true }

type rollingCrash struct {
	base
	noDraw
}

func (rollingCrash) Inject(ctx context.Context, a Aimed, _ Step) (Hit, error) {
	var nodes []int
	for _, n := range a.Active {
		nodes = append(nodes, n)
		err := a.Target.Kill(n)
		if err == nil {
			err = a.Target.Restart(ctx, n)
		}
		if err != nil {
			return Hit{Nodes: nodes}, err
		}
	}
	return Hit{Nodes: nodes}, nil
}

// LivenessExempt: a train of crashes, not one (see LivenessExempt).
func (rollingCrash) LivenessExempt(int) bool { return true }

// powerLoss cuts the power of every node at once (Target.PowerLoss: the
// group each was committing is left torn); the heal restarts them. It
// records in before whether each node was recovering.
func powerLoss(t Target, active []int, logf func(format string, args ...any), before map[int]bool) ([]int, error) {
	for _, n := range active {
		rec, err := t.Recovering(n)
		before[n] = rec || err != nil
	}
	// At once: one node's loss must not quiet the others first.
	torn, errs := make([]int, len(active)), make([]error, len(active))
	var wg sync.WaitGroup
	for i, n := range active {
		wg.Go(func() { torn[i], errs[i] = t.PowerLoss(n) })
	}
	wg.Wait()
	logf("nemesis: power loss: submissions in the torn group of each node: %v", torn)
	return active, errors.Join(errs...)
}

// lostToPowerLoss checks the nodes restarted after a power loss: one that
// came back recovering (Target.StartedRecovering), and was not recovering
// before (before), lost its data to it: ErrLostData.
func lostToPowerLoss(t Target, before map[int]bool) error {
	var broken []error
	for n, was := range before {
		if was {
			continue
		}
		if rec, err := t.StartedRecovering(n); err == nil && rec {
			broken = append(broken, fmt.Errorf("%w: node %d came back recovering, its data directory set aside", ErrLostData, n))
		}
	}
	return errors.Join(broken...)
}

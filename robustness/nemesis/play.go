package nemesis

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// ErrNotRecovering reports a broken promise that a step checks itself: a
// node restarted after it lost its data directory was not recovering
// before any leader could reconcile it (docs/design.md, Restarts).
var ErrNotRecovering = errors.New("nemesis: a node that lost its disk is not recovering")

// ErrLostData reports a broken promise that a step checks itself: a node
// restarted after a power loss, with its data directory, came back
// recovering (its log read as corrupt and was set aside), although it was
// not recovering before.
var ErrLostData = errors.New("nemesis: a node came back recovering after a power loss")

// ErrNotHealed reports that the cluster was not healthy again after a step.
var ErrNotHealed = errors.New("nemesis: the cluster did not heal")

// errNoFault is the inject error of a step without a fault.
var errNoFault = errors.New("step without a fault")

// Play runs the schedule against t. Between steps it waits for the
// cluster to be healthy (bounded by healTimeout); logf records what happened.
// It returns the number of faults injected. On return every fault is healed
// (or an error matching ErrNotHealed says why not). Promises a step checks
// itself and finds broken (ErrNotRecovering) do not stop the schedule: they
// are logged and returned at the end, joined with any ErrNotHealed.
func Play(ctx context.Context, t Target, s Schedule, healTimeout time.Duration, logf func(format string, args ...any)) (int, error) {
	return PlayObserved(ctx, t, s, healTimeout, logf, nil)
}

// Span is when one step of a schedule was in place: its fault from
// Injected (just before it was injected) to Healing (just before the heal
// began), and the heal until Healthy (zero if the cluster was not found
// healthy again).
type Span struct {
	Step  Step
	Nodes []int // the nodes it hit, as resolved when it was injected
	// Size is how many nodes were active when it was injected.
	Size                       int
	Injected, Healing, Healthy time.Time
}

// PlayObserved is Play, which also gives observe (if not nil) the span of
// each step once the step is over, healed or not.
func PlayObserved(ctx context.Context, t Target, s Schedule, healTimeout time.Duration, logf func(format string, args ...any), observe func(Span)) (int, error) {
	if observe == nil {
		observe = func(Span) {}
	}
	faults := 0
	var broken []error
	for _, st := range s.Steps {
		select {
		case <-ctx.Done():
			return faults, errors.Join(broken...)
		case <-time.After(st.Gap):
		}
		span := Span{Step: st, Injected: time.Now()}
		hit, err := inject(ctx, t, st, logf, &span.Size)
		span.Nodes = hit.Nodes
		for _, b := range brokenIn(err) {
			logf("nemesis: %s: BROKEN: %v", st, b)
			broken = append(broken, fmt.Errorf("%s: %w", st, b))
		}
		if err != nil && len(brokenIn(err)) == 0 {
			logf("nemesis: %s: inject failed: %v", st, err)
		} else {
			faults++
			logf("nemesis: %s on %v", name(st.Fault), hit.Nodes)
		}
		select {
		case <-ctx.Done():
		case <-time.After(st.Hold):
		}
		span.Healing = time.Now()
		hctx, cancel := context.WithTimeout(context.Background(), healTimeout)
		err = heal(hctx, t, st, hit)
		if err != nil && len(brokenIn(err)) > 0 {
			// Healed, and a promise found broken.
			logf("nemesis: %s: BROKEN: %v", st, err)
			broken = append(broken, fmt.Errorf("%s: %w", st, err))
			err = nil
		}
		if err == nil {
			err = t.WaitHealthy(hctx)
		}
		cancel()
		if err == nil {
			span.Healthy = time.Now()
		}
		observe(span)
		if err != nil {
			return faults, errors.Join(append(broken, fmt.Errorf("%w: after %s: %w", ErrNotHealed, st, err))...)
		}
		logf("nemesis: healed %s", name(st.Fault))
	}
	return faults, errors.Join(broken...)
}

// LivenessExempt reports whether step st, held in a cluster of size
// voters, is exempt from the liveness target (docs/guarantees.md: with a majority of
// voters healthy, a new leader serves within about one session TTL plus
// one lease): a stretch without acknowledged writes while it is held, and
// during its heal until the cluster is healthy again, says nothing about
// availability. Each fault says so itself (Fault.LivenessExempt).
//
// A voter is healthy when its process runs (not crashed, not paused), it
// reaches the coordinator, and it exchanges messages both ways with every
// other healthy voter; a majority is healthy when more than half the
// voters are healthy at once. Exempt, by fault:
//
//   - zk-down-majority: a majority cannot reach the coordinator.
//   - crash-all: every node crashed.
//   - lose-disk-last-copy: the leader and others crash, the rest lag or
//     lost their disk (a wiped node does not count until reconciled): no
//     healthy majority, by design.
//   - hand-over with under 5 nodes: the isolated follower and the
//     resigning leader leave no majority that can take over (see
//     AllFaults).
//   - rolling-crash: not one fault but a train of them: every node is
//     crashed in turn, the next as soon as the previous one was
//     restarted, so the leader is lost once and often twice in a row (the
//     node that took over is crashed next) while the restarted nodes
//     rejoin; each loss has the target, their sum does not.
//
// Every other fault hits at most a minority, or no node at all, and leaves
// the rest a connected majority, so the target holds: kill, kill-leader,
// lose-disk, replace-node and remove-voter (one node out), rmi-down and
// rmi-down-follower (one node's inbound calls off), zk-down, zk-stall,
// zk-down-leader and isolate (one node), partition (a minority side),
// partition-leader (alias cut-leader-from-peers: the leader alone),
// pause-leader (the leader alone), partition-one-way (calls to one node
// cut: the others stay connected), bridge (the bridge and one side, a
// majority, are connected both ways; the other side reaches the bridge
// only), delay (slow links, every message still arrives), and hand-over
// with 5 nodes.
func LivenessExempt(st Step, size int) bool {
	return st.Fault != nil && st.Fault.LivenessExempt(size)
}

// brokenIn lists the broken promises err holds (an inject error joins
// them with the reason the step stopped, if any).
func brokenIn(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, brokenIn(e)...)
		}
		return out
	}
	if errors.Is(err, ErrNotRecovering) || errors.Is(err, ErrLostData) {
		return []error{err}
	}
	return nil
}

func leader(ctx context.Context, t Target) (int, error) {
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	n, _, err := t.Leader(lctx)
	return n, err
}

// inject aims step st's fault at t (resolves its nodes, finds the leader)
// and injects it. size gets how many nodes were active.
func inject(ctx context.Context, t Target, st Step, logf func(format string, args ...any), size *int) (Hit, error) {
	a, err := aim(ctx, t, st, logf)
	*size = len(a.Active)
	if err != nil {
		return Hit{Nodes: a.Nodes}, err
	}
	return st.Fault.Inject(ctx, a, st)
}

// aim resolves step st's nodes among the active ones, and finds the
// leader if its fault is aimed at it. On an error, the nodes are those
// resolved so far.
func aim(ctx context.Context, t Target, st Step, logf func(format string, args ...any)) (Aimed, error) {
	a := Aimed{Target: t, Active: t.Active(), Logf: logf}
	resolve := func(positions []int) ([]int, error) {
		nodes := make([]int, len(positions))
		for i, p := range positions {
			if p < 0 || p >= len(a.Active) {
				return nil, fmt.Errorf("no node %d among the %d active ones %v", p, len(a.Active), a.Active)
			}
			nodes[i] = a.Active[p]
		}
		return nodes, nil
	}
	var err error
	if a.Nodes, err = resolve(st.Nodes); err != nil {
		return a, err
	}
	if a.Other, err = resolve(st.Other); err != nil {
		a.Nodes = nil
		return a, err
	}
	if st.Fault == nil {
		return a, errNoFault
	}
	if st.Fault.Aim() == AtNodes {
		return a, nil
	}
	ld, err := leader(ctx, t)
	if err != nil {
		a.Nodes = nil
		return a, err
	}
	a.Nodes = []int{ld}
	if st.Fault.Aim() == AtFollower && len(a.Active) < 2 {
		return a, fmt.Errorf("%s needs a follower", st.Fault.Name())
	}
	return a, nil
}

// heal heals step st, which hit hit.
func heal(ctx context.Context, t Target, st Step, hit Hit) error {
	if st.Fault == nil {
		return t.Heal(ctx)
	}
	return st.Fault.Heal(ctx, t, hit)
}

// follower is the pick-th active node after the leader ld, never ld
// itself.
func follower(active []int, ld, pick int) int {
	i := slices.Index(active, ld)
	return active[(i+1+pick%(len(active)-1))%len(active)]
}

// Package nemesis plays random fault schedules against a cluster, in the
// style of Jepsen's nemeses and etcd's robustness failpoints. A schedule is
// generated from a seed, so a failing run can be replayed exactly (the
// targets named "leader" are resolved when the fault is injected). Each step
// injects one named fault, holds it, heals it, and waits until the cluster is
// healthy again before the next step.
//
// Some faults change the membership: a node is retired for good and a new
// one takes its place. A step's node i is therefore the i-th node of
// Target.Active when the step is injected, not a fixed node number.
package nemesis

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/kvstore/kvstore"
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

// removeBudget bounds how long ReplaceNode and RemoveVoter retry a removal
// the leader refuses (it must first see the crashed node's Appends fail, a
// new leader must be elected if the leader crashed). A variable for tests.
var removeBudget = 15 * time.Second

// Target is what a nemesis breaks; *cluster.Cluster implements it.
type Target interface {
	// Active lists the numbers of the nodes in the cluster, in order:
	// every node but the retired ones (killed ones included).
	Active() []int
	Kill(n int) error
	// PowerLoss kills node n as a power loss would: what it was committing
	// to its data directory is left as a torn write. It returns how many
	// submissions that write held (0: none was in progress).
	PowerLoss(n int) (torn int, err error)
	Stop(n int) error
	Resign(ctx context.Context, n int) error
	Restart(ctx context.Context, n int) error
	RmiDown(n int) error
	RmiUp(n int) error
	ZkDown(n int) error
	ZkStall(n int) error
	ZkUp(n int) error
	Partition(drop bool, groups ...[]int) error
	// Bridge cuts side a from side b, both ways, while bridge reaches
	// both.
	Bridge(drop bool, a, b []int, bridge int) error
	// Pause makes node n look like a paused process to the other nodes
	// and the coordinator, until Heal.
	Pause(n int) error
	PartitionOneWay(drop bool, from, to []int) error
	HealPartition()
	SetLinkDelay(d time.Duration)
	SetNodeDelay(n int, d time.Duration) error
	Leader(ctx context.Context) (int, int64, error)
	Heal(ctx context.Context) error
	WaitHealthy(ctx context.Context) error
	// WipeData deletes killed node n's data directory (a lost disk).
	WipeData(n int) error
	// Recovering reports whether running node n is recovering.
	Recovering(n int) (bool, error)
	// StartedRecovering reports whether running node n was recovering
	// when it last started (a leader may have reconciled it since).
	StartedRecovering(n int) (bool, error)
	// Remove removes node n from the voters through another node.
	Remove(ctx context.Context, n int) error
	// Retire takes node n out of the cluster for good (it is crashed if
	// it runs): no longer Active, never restarted by Heal.
	Retire(n int) error
	// NewNode starts a node with a new number and id and waits until it
	// is a voter.
	NewNode(ctx context.Context) (int, error)
}

// Kind names a fault.
type Kind string

// The faults of docs/design.md's fault model (Assumptions).
const (
	Kill            Kind = "kill"             // crash a node (memory lost), then restart it
	KillLeader      Kind = "kill-leader"      // the same, on the current leader
	RmiDown         Kind = "rmi-down"         // a node's inbound RPC off
	ZkDown          Kind = "zk-down"          // a node cut from the coordinator
	ZkStall         Kind = "zk-stall"         // a node's coordinator connection stops answering
	ZkDownLeader    Kind = "zk-down-leader"   // the leader cut from the coordinator
	ZkDownMajority  Kind = "zk-down-majority" // a majority cut from the coordinator
	Partition       Kind = "partition"        // a minority cut from the rest, both ways
	PartitionLeader Kind = "partition-leader" // the leader cut from the rest, both ways
	// CutLeaderFromPeers is PartitionLeader under the name issue 14 gives
	// it: the leader's node-to-node links are cut both ways while its
	// coordinator connection works, so it keeps its session.
	CutLeaderFromPeers = PartitionLeader
	// PauseLeader pauses the leader as a stopped process (SIGSTOP, a long
	// GC pause) would look to the others (Target.Pause): no node and not
	// the coordinator hears from it, its session expires by TTL.
	PauseLeader Kind = "pause-leader"
	// Bridge splits the other nodes into two sides that cannot reach
	// each other while one node, the bridge, reaches both: the leader
	// when Step.Pick is 0, else the Pick-th follower counted from the
	// leader. Needs 3 nodes.
	Bridge  Kind = "bridge"
	OneWay  Kind = "partition-one-way" // calls from some nodes to others cut
	Delay   Kind = "delay"             // node-to-node messages delayed: of every node, or of the nodes named
	Isolate Kind = "isolate"           // a node cut from the coordinator and its peers at once
	// HandOver makes the leader resign (a rolling restart) while a
	// follower is isolated: the new leader is elected at once, while the
	// isolated node may still hold cached copies under the old epoch's
	// leases.
	HandOver Kind = "hand-over"
	// RmiDownFollower is RmiDown on a follower (Pick chooses which,
	// counted from the current leader): a holder of cached copies the
	// leader cannot reach, never the leader itself.
	RmiDownFollower Kind = "rmi-down-follower"
	// CrashAll is a power loss of the whole cluster: every node is killed
	// at once (Target.PowerLoss), and the group each one was committing
	// is left torn in its log (a later part of the write landed, its start
	// did not); the heal restarts them, and each one must come back as it
	// was, not recovering, or Play reports ErrLostData. Only nodes with a
	// data directory survive it: use it with durable clusters.
	CrashAll Kind = "crash-all"
	// RollingCrash kills and restarts the nodes one after another, each
	// restart waited for before the next kill. With durable nodes nothing
	// is lost; without, each comes back recovering.
	RollingCrash Kind = "rolling-crash"
	// LoseDisk crashes a node, deletes its data directory (a lost disk)
	// and restarts it; with Step.Twice it crashes and restarts it once
	// more. Its inbound RPC is off from before the crash until the heal,
	// so that no leader reconciles it sooner: it must be recovering after
	// each restart, or Play reports ErrNotRecovering. Durable clusters
	// only.
	LoseDisk Kind = "lose-disk"
	// LoseLastCopy is LoseDisk on a follower (Pick, counted from the
	// leader) that holds the last copy of acknowledged writes: a minority
	// of the other followers lag first (their inbound RPC off for the
	// hold, while the clients write), then the follower loses its disk
	// (Twice as in LoseDisk), then the leader and every other node that
	// did not lag crash, and the laggards and the wiped node get their RPC
	// back. They are a majority only if the wiped node counts: it must
	// not, so no leader may serve until the heal restarts the crashed
	// nodes with their data. Durable clusters only.
	LoseLastCopy Kind = "lose-disk-last-copy"
	// ReplaceNode replaces a node as docs/operations.md's procedure does: it crashes
	// for good, is removed from the voters through another node (retried
	// while the leader refuses, for up to removeBudget; then the step is
	// given up and the heal restarts the node), is retired, and a new node
	// with a new id is started and waited for until it is a voter.
	ReplaceNode Kind = "replace-node"
	// RemoveVoter removes a live follower (Pick, counted from the leader)
	// from the voters, which stops it; then it is retired and a new node
	// takes its place, so that the cluster does not shrink.
	RemoveVoter Kind = "remove-voter"
)

// DurableKinds is the fault mix for clusters whose nodes keep their state
// on disk: crashes of every node, at once and in a rolling order, and the
// leader's; a node's disk lost (also while it holds the last copy of
// writes); a node replaced by a new one, and a live voter removed and
// replaced.
var DurableKinds = []Kind{CrashAll, RollingCrash, KillLeader, Kill, LoseDisk, LoseLastCopy, ReplaceNode, RemoveVoter}

// AllKinds is every fault, for the default fault mix. HandOver is left
// out: with 3 nodes it leaves no majority (use it with 5). RmiDownFollower
// is left out too: RmiDown already hits followers (and the leader).
var AllKinds = []Kind{Kill, KillLeader, RmiDown, ZkDown, ZkStall, ZkDownLeader, ZkDownMajority, Partition, PartitionLeader, OneWay, Delay, Isolate, PauseLeader, Bridge}

// Step is one fault of a schedule.
type Step struct {
	Kind  Kind
	Nodes []int         // the nodes it hits (empty for "leader" kinds and for a delay of every link)
	Other []int         // for one-way partitions: the nodes whose calls are cut... to Nodes
	Drop  bool          // partitions: drop messages (timeouts) rather than refuse
	Delay time.Duration // for Delay
	Pick  int           // for HandOver, RmiDownFollower, LoseLastCopy, RemoveVoter: which follower, counted from the leader; for Bridge, 0 the leader, else follower Pick-1
	Twice bool          // for LoseDisk and LoseLastCopy: restart the wiped node twice before the heal
	Gap   time.Duration // quiet time before the fault
	Hold  time.Duration // how long the fault lasts
}

func (s Step) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "+%v %s", s.Gap.Round(time.Millisecond), s.Kind)
	if len(s.Nodes) > 0 {
		fmt.Fprintf(&b, " %v", s.Nodes)
	}
	if len(s.Other) > 0 {
		fmt.Fprintf(&b, " from %v", s.Other)
	}
	if s.Drop {
		b.WriteString(" (drop)")
	}
	if s.Delay > 0 {
		fmt.Fprintf(&b, " %v", s.Delay)
	}
	if s.Twice {
		b.WriteString(" twice")
	}
	if s.Kind == Bridge {
		if s.Pick == 0 {
			b.WriteString(" via the leader")
		} else {
			fmt.Fprintf(&b, " via follower %d", s.Pick-1)
		}
	}
	fmt.Fprintf(&b, " for %v", s.Hold.Round(time.Millisecond))
	return b.String()
}

// Schedule is a seeded list of steps.
type Schedule struct {
	Seed  uint64
	Steps []Step
}

func (s Schedule) String() string {
	parts := make([]string, len(s.Steps))
	for i, st := range s.Steps {
		parts[i] = st.String()
	}
	return fmt.Sprintf("seed %d: %s", s.Seed, strings.Join(parts, "; "))
}

// Options shape a generated schedule.
type Options struct {
	Size  int    // nodes in the cluster
	Steps int    // faults in the schedule
	Kinds []Kind // fault mix (default AllKinds)
	// MinHold and MaxHold bound each fault's duration; MaxGap bounds the
	// quiet time before each.
	MinHold, MaxHold, MaxGap time.Duration
	// LeaderHold, if longer than a step's drawn hold, is how long the
	// faults of LeaderKinds are held instead: long enough that the
	// others must elect a leader and serve before the heal (a liveness
	// target), not merely wait the fault out. The draws are the same
	// either way, so a seed gives the same steps but for these holds.
	LeaderHold time.Duration
}

// LeaderKinds are the faults of issue 14's liveness targets: each may take
// the leader out of service (or, a bridge, split the nodes around it) while
// a majority stays healthy, and the cluster must get a leader serving on
// its own; Options.LeaderHold holds them long enough to see whether it
// does.
var LeaderKinds = []Kind{KillLeader, ZkDownLeader, PartitionLeader, PauseLeader, Bridge}

// Generate makes the schedule of seed. The same seed and options always
// give the same schedule.
func Generate(seed uint64, o Options) Schedule {
	if len(o.Kinds) == 0 {
		o.Kinds = AllKinds
	}
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	minority := (o.Size - 1) / 2
	dur := func(lo, hi time.Duration) time.Duration {
		if hi <= lo {
			return lo
		}
		return lo + time.Duration(r.Int64N(int64(hi-lo)))
	}
	s := Schedule{Seed: seed}
	for i := 0; i < o.Steps; i++ {
		st := Step{Kind: o.Kinds[r.IntN(len(o.Kinds))], Gap: dur(0, o.MaxGap), Hold: dur(o.MinHold, o.MaxHold)}
		if slices.Contains(LeaderKinds, st.Kind) {
			st.Hold = max(st.Hold, o.LeaderHold)
		}
		perm := r.Perm(o.Size)
		switch st.Kind {
		case Kill, RmiDown, ZkDown, ZkStall, Isolate:
			st.Nodes = perm[:1]
		case ZkDownMajority:
			st.Nodes = perm[:minority+1]
		case Partition:
			st.Nodes = perm[:1+r.IntN(max(minority, 1))]
			st.Drop = r.IntN(2) == 0
		case PartitionLeader:
			st.Drop = r.IntN(2) == 0
		case OneWay:
			st.Nodes = perm[:1]
			st.Other = perm[1 : 2+r.IntN(o.Size-1)]
			st.Drop = r.IntN(2) == 0
		case Delay:
			// One in three delays every link a little; the others slow
			// down a minority of the nodes (each message to or from them)
			// more, so that the rest runs at full speed beside them.
			if r.IntN(3) == 0 {
				st.Delay = dur(5*time.Millisecond, 60*time.Millisecond)
			} else {
				st.Nodes = perm[:1+r.IntN(max(minority, 1))]
				st.Delay = dur(20*time.Millisecond, 200*time.Millisecond)
			}
		case HandOver, RmiDownFollower, RemoveVoter:
			st.Pick = r.IntN(o.Size)
		case Bridge:
			// The leader bridges half the time, a follower the other half.
			if r.IntN(2) == 1 && o.Size > 1 {
				st.Pick = 1 + r.IntN(o.Size-1)
			}
			st.Drop = r.IntN(2) == 0
		case LoseDisk:
			st.Nodes = perm[:1]
			st.Twice = r.IntN(2) == 0
		case LoseLastCopy:
			st.Pick = r.IntN(o.Size)
			st.Twice = r.IntN(2) == 0
		case ReplaceNode:
			st.Nodes = perm[:1]
		}
		s.Steps = append(s.Steps, st)
	}
	return s
}

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
		var before map[int]bool // CrashAll: was each node recovering?
		if st.Kind == CrashAll {
			before = map[int]bool{}
		}
		span := Span{Step: st, Injected: time.Now()}
		nodes, err := inject(ctx, t, st, logf, before, &span.Size)
		span.Nodes = nodes
		for _, b := range brokenIn(err) {
			logf("nemesis: %s: BROKEN: %v", st, b)
			broken = append(broken, fmt.Errorf("%s: %w", st, b))
		}
		if err != nil && len(brokenIn(err)) == 0 {
			logf("nemesis: %s: inject failed: %v", st, err)
		} else {
			faults++
			logf("nemesis: %s on %v", st.Kind, nodes)
		}
		select {
		case <-ctx.Done():
		case <-time.After(st.Hold):
		}
		span.Healing = time.Now()
		hctx, cancel := context.WithTimeout(context.Background(), healTimeout)
		err = heal(hctx, t)
		if err == nil && before != nil {
			if lost := lostToPowerLoss(t, before); lost != nil {
				logf("nemesis: %s: BROKEN: %v", st, lost)
				broken = append(broken, fmt.Errorf("%s: %w", st, lost))
			}
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
		logf("nemesis: healed %s", st.Kind)
	}
	return faults, errors.Join(broken...)
}

// LivenessExempt reports whether step st, held in a cluster of size
// voters, is exempt from the liveness target (docs/guarantees.md: with a majority of
// voters healthy, a new leader serves within about one session TTL plus
// one lease): a stretch without acknowledged writes while it is held, and
// during its heal until the cluster is healthy again, says nothing about
// availability.
//
// A voter is healthy when its process runs (not crashed, not paused), it
// reaches the coordinator, and it exchanges messages both ways with every
// other healthy voter; a majority is healthy when more than half the
// voters are healthy at once. Exempt, by kind:
//
//   - zk-down-majority: a majority cannot reach the coordinator.
//   - crash-all: every node crashed.
//   - lose-disk-last-copy: the leader and others crash, the rest lag or
//     lost their disk (a wiped node does not count until reconciled): no
//     healthy majority, by design.
//   - hand-over with under 5 nodes: the isolated follower and the
//     resigning leader leave no majority that can take over (see
//     AllKinds).
//   - rolling-crash: not one fault but a train of them: every node is
//     crashed in turn, the next as soon as the previous one was
//     restarted, so the leader is lost once and often twice in a row (the
//     node that took over is crashed next) while the restarted nodes
//     rejoin; each loss has the target, their sum does not.
//
// Every other kind hits at most a minority, or no node at all, and leaves
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
	switch st.Kind {
	case ZkDownMajority, CrashAll, LoseLastCopy, RollingCrash:
		return true
	case HandOver:
		return size < 5
	}
	return false
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

// byLeader lists the kinds whose target is found from the leader.
var byLeader = []Kind{KillLeader, ZkDownLeader, PartitionLeader, PauseLeader, Bridge, HandOver, RmiDownFollower, LoseLastCopy, RemoveVoter}

// needFollower lists the kinds that hit a follower of the leader.
var needFollower = []Kind{HandOver, RmiDownFollower, LoseLastCopy, RemoveVoter}

// For CrashAll, before gets whether each node was recovering before it;
// size gets how many nodes were active.
func inject(ctx context.Context, t Target, st Step, logf func(format string, args ...any), before map[int]bool, size *int) ([]int, error) {
	active := t.Active()
	*size = len(active)
	nodes := make([]int, len(st.Nodes))
	for i, p := range st.Nodes {
		if p < 0 || p >= len(active) {
			return nil, fmt.Errorf("no node %d among the %d active ones %v", p, len(active), active)
		}
		nodes[i] = active[p]
	}
	other := make([]int, len(st.Other))
	for i, p := range st.Other {
		if p < 0 || p >= len(active) {
			return nil, fmt.Errorf("no node %d among the %d active ones %v", p, len(active), active)
		}
		other[i] = active[p]
	}
	if slices.Contains(byLeader, st.Kind) {
		ld, err := leader(ctx, t)
		if err != nil {
			return nil, err
		}
		nodes = []int{ld}
	}
	if slices.Contains(needFollower, st.Kind) && len(active) < 2 {
		return nodes, fmt.Errorf("%s needs a follower", st.Kind)
	}
	var err error
	switch st.Kind {
	case Kill, KillLeader:
		err = t.Kill(nodes[0])
	case CrashAll:
		nodes, err = powerLoss(t, active, logf, before)
	case RollingCrash:
		nodes = nil
		for _, n := range active {
			nodes = append(nodes, n)
			if err = t.Kill(n); err == nil {
				err = t.Restart(ctx, n)
			}
			if err != nil {
				break
			}
		}
	case LoseDisk:
		err = loseDisk(ctx, t, nodes[0], st.Twice)
	case LoseLastCopy:
		nodes, err = loseLastCopy(ctx, t, active, nodes[0], st)
	case ReplaceNode:
		nodes, err = replace(ctx, t, nodes[0], true)
	case RemoveVoter:
		nodes, err = replace(ctx, t, follower(active, nodes[0], st.Pick), false)
	case RmiDown:
		err = t.RmiDown(nodes[0])
	case RmiDownFollower:
		nodes = []int{follower(active, nodes[0], st.Pick)}
		err = t.RmiDown(nodes[0])
	case ZkStall:
		err = t.ZkStall(nodes[0])
	case ZkDown, ZkDownLeader, ZkDownMajority:
		for _, n := range nodes {
			if err = t.ZkDown(n); err != nil {
				break
			}
		}
	case Isolate:
		if err = t.ZkDown(nodes[0]); err == nil {
			err = t.Partition(st.Drop, nodes)
		}
	case HandOver:
		f := follower(active, nodes[0], st.Pick)
		// The follower must not notice at once: its coordinator connection
		// stalls (no error to see) and its peers refuse it quickly, so the
		// new leader's Prepare does not wait on it.
		if err = t.ZkStall(f); err == nil {
			if err = t.Partition(false, []int{f}); err == nil {
				err = t.Resign(ctx, nodes[0])
			}
		}
		nodes = append(nodes, f)
	case Partition, PartitionLeader:
		err = t.Partition(st.Drop, nodes)
	case PauseLeader:
		err = t.Pause(nodes[0])
	case Bridge:
		nodes, err = bridge(t, active, nodes[0], st)
	case OneWay:
		err = t.PartitionOneWay(st.Drop, other, nodes)
	case Delay:
		if len(nodes) == 0 {
			t.SetLinkDelay(st.Delay)
		}
		for _, n := range nodes {
			if err = t.SetNodeDelay(n, st.Delay); err != nil {
				break
			}
		}
	default:
		err = fmt.Errorf("unknown fault %q", st.Kind)
	}
	return nodes, err
}

func heal(ctx context.Context, t Target) error { return t.Heal(ctx) }

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

// bridge plays Bridge with leader ld and returns the nodes it hit: the
// bridge, then side a, then side b. The nodes other than the bridge, in
// order from it around the active ones, are split in halves.
func bridge(t Target, active []int, ld int, st Step) ([]int, error) {
	if len(active) < 3 {
		return []int{ld}, fmt.Errorf("%s needs 3 nodes", st.Kind)
	}
	br := ld
	if st.Pick > 0 {
		br = follower(active, ld, st.Pick-1)
	}
	var rest []int
	for i := 0; i < len(active)-1; i++ {
		rest = append(rest, follower(active, br, i))
	}
	a, b := rest[:len(rest)/2], rest[len(rest)/2:]
	return append([]int{br}, rest...), t.Bridge(st.Drop, a, b, br)
}

// follower is the pick-th active node after the leader ld, never ld
// itself.
func follower(active []int, ld, pick int) int {
	i := slices.Index(active, ld)
	return active[(i+1+pick%(len(active)-1))%len(active)]
}

// loseDisk crashes node n, deletes its data directory and restarts it,
// twice if twice, with its inbound RPC off (until the heal) so that no
// leader reconciles it meanwhile. After each restart the node must be
// recovering: the error then matches ErrNotRecovering, and the step goes
// on (the schedule's checks judge what the broken node did).
func loseDisk(ctx context.Context, t Target, n int, twice bool) error {
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
	for i := 1; i <= 1+boolInt(twice); i++ {
		if i > 1 {
			if err := t.Kill(n); err != nil {
				return errors.Join(append(broken, err)...)
			}
		}
		if err := t.Restart(ctx, n); err != nil {
			return errors.Join(append(broken, err)...)
		}
		rec, err := t.Recovering(n)
		if err != nil {
			return errors.Join(append(broken, err)...)
		}
		if !rec {
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

// loseLastCopy plays LoseLastCopy with leader ld and returns the nodes it
// hit: the wiped one, the laggards, then the crashed ones.
func loseLastCopy(ctx context.Context, t Target, active []int, ld int, st Step) ([]int, error) {
	if len(active) < 3 {
		return []int{ld}, fmt.Errorf("%s needs 3 nodes", st.Kind)
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
	nodes := append(append([]int{wiped}, lag...), crash...)
	for _, n := range lag {
		if err := t.RmiDown(n); err != nil {
			return nodes, err
		}
	}
	select { // the clients write without the laggards
	case <-ctx.Done():
		return nodes, ctx.Err()
	case <-time.After(st.Hold):
	}
	lost := loseDisk(ctx, t, wiped, st.Twice)
	if len(brokenIn(lost)) == 0 && lost != nil {
		return nodes, lost
	}
	for _, n := range crash {
		if err := t.Kill(n); err != nil {
			return nodes, errors.Join(lost, err)
		}
	}
	for _, n := range append(lag, wiped) {
		if err := t.RmiUp(n); err != nil {
			return nodes, errors.Join(lost, err)
		}
	}
	return nodes, lost
}

// replace removes node n from the voters (crashing it first if crash),
// retires it and starts a new node in its place. It returns n and the new
// node. A removal the leader keeps refusing for removeBudget gives the
// step up: n stays in the cluster (the heal restarts it if it crashed).
func replace(ctx context.Context, t Target, n int, crash bool) ([]int, error) {
	if crash {
		if err := t.Kill(n); err != nil {
			return []int{n}, err
		}
	}
	rctx, cancel := context.WithTimeout(ctx, removeBudget)
	defer cancel()
	for {
		err := t.Remove(rctx, n)
		if err == nil || errors.Is(err, kvstore.ErrNotVoter) {
			// Not a voter (any more): an earlier attempt whose answer was
			// lost removed it.
			break
		}
		select {
		case <-rctx.Done():
			return []int{n}, fmt.Errorf("remove node %d: %w", n, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
	if err := t.Retire(n); err != nil {
		return []int{n}, err
	}
	nctx, ncancel := context.WithTimeout(ctx, time.Minute)
	defer ncancel()
	added, err := t.NewNode(nctx)
	if err != nil {
		return []int{n, added}, fmt.Errorf("new node in place of node %d: %w", n, err)
	}
	return []int{n, added}, nil
}

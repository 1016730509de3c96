package nemesis

import (
	"context"
	"math/rand/v2"
	"slices"
	"time"
)

// Fault is one fault of docs/design.md's fault model (Assumptions): how a step of it is drawn
// for a schedule, put in place on a cluster and healed, and whether the
// liveness target holds while it is. Each fault is a value (Kill,
// PartitionLeader, ...), named by the string schedules print; Faults lists
// them. Steps and mixes compare faults with ==, so an implementation must
// be comparable.
type Fault interface {
	// Name is the fault's name, as a printed schedule, KVSTORE_KINDS and
	// a replay command spell it.
	Name() string
	// Aim says at what the fault is aimed when a step is injected: the
	// step's own nodes, or the leader found then.
	Aim() Aim
	// Draw fills in the step's own fields (Nodes, Other, Drop, Delay,
	// Pick, Twice) from d. Which draws it makes, and in which order, is
	// part of the schedule a seed gives: change them and old seeds replay
	// other faults.
	Draw(d *Draw, st *Step)
	// Inject puts step st in place on the cluster a, whose nodes are
	// resolved for it, and returns the nodes it hit (some, on an error,
	// if it got that far). An error matching ErrNotRecovering says the
	// fault is in place but a promise it checked was found broken.
	Inject(ctx context.Context, a Aimed, st Step) (Hit, error)
	// Heal removes the fault hit left in place; Play then waits for the
	// cluster to be healthy. An error matching ErrLostData says the
	// cluster healed but a promise the heal checked was found broken;
	// any other error, that the cluster could not be healed.
	Heal(ctx context.Context, t Target, hit Hit) error
	// LivenessExempt reports whether a step of this fault, held in a
	// cluster of size voters, is exempt from the liveness target: see the
	// function LivenessExempt.
	LivenessExempt(size int) bool
}

// Aim is at what a fault is aimed when a step is injected.
type Aim int

const (
	// AtNodes aims at the step's nodes (Step.Nodes and Step.Other,
	// positions in Target.Active), or at no node at all.
	AtNodes Aim = iota
	// AtLeader aims at the leader, found when the step is injected.
	AtLeader
	// AtFollower aims at the leader too, and the fault also needs a
	// follower of it (Step.Pick says which): a cluster of one node gives
	// the step up.
	AtFollower
)

// Draw is the random source of Generate, for Fault.Draw.
type Draw struct {
	r *rand.Rand
	// Size is how many nodes the cluster has.
	Size int
	// Perm is a random order of the node positions 0..Size-1, drawn for
	// every step before Fault.Draw: a fault that hits k chosen nodes
	// takes Perm[:k].
	Perm []int
}

// IntN draws an int in [0, n).
func (d *Draw) IntN(n int) int { return d.r.IntN(n) }

// Coin draws true or false, as IntN(2) == 0.
func (d *Draw) Coin() bool { return d.r.IntN(2) == 0 }

// Duration draws a duration in [lo, hi), or gives lo if hi <= lo.
func (d *Draw) Duration(lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(d.r.Int64N(int64(hi-lo)))
}

// Minority is the largest minority of the cluster's nodes, (Size-1)/2.
func (d *Draw) Minority() int { return (d.Size - 1) / 2 }

// Aimed is a cluster with a step's fault aimed at it.
type Aimed struct {
	Target Target
	// Active is Target.Active when the step is injected.
	Active []int
	// Nodes are the step's nodes as node numbers; for a fault aimed
	// AtLeader or AtFollower, the leader alone.
	Nodes []int
	// Other are the step's other nodes (Step.Other) as node numbers.
	Other []int
	// Logf records what happened.
	Logf func(format string, args ...any)
}

// Hit is what an injected step hit.
type Hit struct {
	// Nodes are the nodes it hit, as node numbers.
	Nodes []int
	// recovering says, for a power loss, whether each node was
	// recovering before it (see lostToPowerLoss).
	recovering map[int]bool
}

// base is what most faults share: a name, an aim, Target.Heal for a heal,
// and no exemption from the liveness target.
type base struct {
	name string
	aim  Aim
}

func (b base) Name() string { return b.name }

// String is the name, so that a fault prints as its name.
func (b base) String() string { return b.name }

func (b base) Aim() Aim { return b.aim }

func (base) Heal(ctx context.Context, t Target, _ Hit) error { return t.Heal(ctx) }

func (base) LivenessExempt(int) bool { return false }

// drawer is how a fault draws its step's own fields (Fault.Draw), for the
// faults of a family that differ in it.
type drawer interface{ Draw(d *Draw, st *Step) }

// noDraw is Fault.Draw of a fault that draws nothing (it is aimed at the
// leader, or at every node).
type noDraw struct{}

func (noDraw) Draw(*Draw, *Step) {}

// oneNode is Fault.Draw of a fault that hits one chosen node.
type oneNode struct{}

func (oneNode) Draw(d *Draw, st *Step) { st.Nodes = d.Perm[:1] }

// pickFollower is Fault.Draw of a fault aimed at a follower: which one,
// counted from the leader (Step.Pick).
type pickFollower struct{}

func (pickFollower) Draw(d *Draw, st *Step) { st.Pick = d.IntN(d.Size) }

// every lists every fault, in the order of docs/design.md's fault model (Assumptions).
var every = []Fault{
	Kill, KillLeader, RmiDown, ZkDown, ZkStall, ZkDownLeader, ZkDownMajority,
	Partition, PartitionLeader, PauseLeader, Bridge, OneWay, Delay, Isolate,
	HandOver, RmiDownFollower, CrashAll, RollingCrash, LoseDisk, LoseLastCopy,
	ReplaceNode, RemoveVoter,
}

// Faults lists every fault.
func Faults() []Fault { return slices.Clone(every) }

// ByName finds the fault of a name, as a printed schedule spells it.
func ByName(name string) (Fault, bool) {
	i := slices.IndexFunc(every, func(f Fault) bool { return f.Name() == name })
	if i < 0 {
		return nil, false
	}
	return every[i], true
}

// DurableFaults is the fault mix for clusters whose nodes keep their state
// on disk: crashes of every node, at once and in a rolling order, and the
// leader's; a node's disk lost (also while it holds the last copy of
// writes); a node replaced by a new one, and a live voter removed and
// replaced.
var DurableFaults = []Fault{CrashAll, RollingCrash, KillLeader, Kill, LoseDisk, LoseLastCopy, ReplaceNode, RemoveVoter}

// AllFaults is every fault, for the default fault mix. HandOver is left
// out: with 3 nodes it leaves no majority (use it with 5). RmiDownFollower
// is left out too: RmiDown already hits followers (and the leader).
var AllFaults = []Fault{Kill, KillLeader, RmiDown, ZkDown, ZkStall, ZkDownLeader, ZkDownMajority, Partition, PartitionLeader, OneWay, Delay, Isolate, PauseLeader, Bridge}

// LeaderFaults are the faults of issue 14's liveness targets: each may take
// the leader out of service (or, a bridge, split the nodes around it) while
// a majority stays healthy, and the cluster must get a leader serving on
// its own; Options.LeaderHold holds them long enough to see whether it
// does.
var LeaderFaults = []Fault{KillLeader, ZkDownLeader, PartitionLeader, PauseLeader, Bridge}

// name is f's name, "" for no fault.
func name(f Fault) string {
	if f == nil {
		return ""
	}
	return f.Name()
}

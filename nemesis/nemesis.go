// Package nemesis plays random fault schedules against a cluster, in the
// style of Jepsen's nemeses and etcd's robustness failpoints. A schedule is
// generated from a seed, so a failing run can be replayed exactly (the
// targets named "leader" are resolved when the fault is injected). Each step
// injects one named fault, holds it, heals it, and waits until the cluster is
// healthy again before the next step.
package nemesis

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
)

// Target is what a nemesis breaks; *cluster.Cluster implements it.
type Target interface {
	Size() int
	Kill(n int) error
	Stop(n int) error
	Resign(ctx context.Context, n int) error
	Restart(ctx context.Context, n int) error
	RmiDown(n int) error
	RmiUp(n int) error
	ZkDown(n int) error
	ZkStall(n int) error
	ZkUp(n int) error
	Partition(drop bool, groups ...[]int) error
	PartitionOneWay(drop bool, from, to []int) error
	HealPartition()
	SetLinkDelay(d time.Duration)
	SetNodeDelay(n int, d time.Duration) error
	Leader(ctx context.Context) (int, int64, error)
	Heal(ctx context.Context) error
	WaitHealthy(ctx context.Context) error
}

// Kind names a fault.
type Kind string

// The faults of DESIGN.md's fault model.
const (
	Kill            Kind = "kill"              // crash a node (memory lost), then restart it
	KillLeader      Kind = "kill-leader"       // the same, on the current leader
	RmiDown         Kind = "rmi-down"          // a node's inbound RPC off
	ZkDown          Kind = "zk-down"           // a node cut from the coordinator
	ZkStall         Kind = "zk-stall"          // a node's coordinator connection stops answering
	ZkDownLeader    Kind = "zk-down-leader"    // the leader cut from the coordinator
	ZkDownMajority  Kind = "zk-down-majority"  // a majority cut from the coordinator
	Partition       Kind = "partition"         // a minority cut from the rest, both ways
	PartitionLeader Kind = "partition-leader"  // the leader cut from the rest, both ways
	OneWay          Kind = "partition-one-way" // calls from some nodes to others cut
	Delay           Kind = "delay"             // node-to-node messages delayed: of every node, or of the nodes named
	Isolate         Kind = "isolate"           // a node cut from the coordinator and its peers at once
	// HandOver makes the leader resign (a rolling restart) while a
	// follower is isolated: the new leader is elected at once, while the
	// isolated node may still hold cached copies under the old epoch's
	// leases.
	HandOver Kind = "hand-over"
	// RmiDownFollower is RmiDown on a follower (Pick chooses which,
	// counted from the current leader): a holder of cached copies the
	// leader cannot reach, never the leader itself.
	RmiDownFollower Kind = "rmi-down-follower"
	// CrashAll kills every node at once (a power loss of the whole
	// cluster); healing restarts them all. Only nodes with a data
	// directory survive it: use it with durable clusters.
	CrashAll Kind = "crash-all"
	// RollingCrash kills and restarts the nodes one after another, each
	// restart waited for before the next kill. With durable nodes nothing
	// is lost; without, each comes back recovering.
	RollingCrash Kind = "rolling-crash"
)

// DurableKinds is the fault mix for clusters whose nodes keep their state
// on disk: crashes of every node, at once and in a rolling order, and the
// leader's.
var DurableKinds = []Kind{CrashAll, RollingCrash, KillLeader, Kill}

// AllKinds is every fault, for the default fault mix. HandOver is left
// out: with 3 nodes it leaves no majority (use it with 5). RmiDownFollower
// is left out too: RmiDown already hits followers (and the leader).
var AllKinds = []Kind{Kill, KillLeader, RmiDown, ZkDown, ZkStall, ZkDownLeader, ZkDownMajority, Partition, PartitionLeader, OneWay, Delay, Isolate}

// Step is one fault of a schedule.
type Step struct {
	Kind  Kind
	Nodes []int         // the nodes it hits (empty for "leader" kinds and for a delay of every link)
	Other []int         // for one-way partitions: the nodes whose calls are cut... to Nodes
	Drop  bool          // partitions: drop messages (timeouts) rather than refuse
	Delay time.Duration // for Delay
	Pick  int           // for HandOver and RmiDownFollower: which follower, counted from the leader
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
}

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
		case HandOver, RmiDownFollower:
			st.Pick = r.IntN(o.Size)
		}
		s.Steps = append(s.Steps, st)
	}
	return s
}

// Play runs the schedule against t. Between steps it waits for the
// cluster to be healthy (bounded by healTimeout); logf records what happened.
// It returns the number of faults injected. On return every fault is healed
// (or an error says why not).
func Play(ctx context.Context, t Target, s Schedule, healTimeout time.Duration, logf func(format string, args ...any)) (int, error) {
	faults := 0
	for _, st := range s.Steps {
		select {
		case <-ctx.Done():
			return faults, nil
		case <-time.After(st.Gap):
		}
		nodes, err := inject(ctx, t, st)
		if err != nil {
			logf("nemesis: %s: inject failed: %v", st, err)
		} else {
			faults++
			logf("nemesis: %s on %v", st.Kind, nodes)
		}
		select {
		case <-ctx.Done():
		case <-time.After(st.Hold):
		}
		hctx, cancel := context.WithTimeout(context.Background(), healTimeout)
		err = heal(hctx, t)
		if err == nil {
			err = t.WaitHealthy(hctx)
		}
		cancel()
		if err != nil {
			return faults, fmt.Errorf("nemesis: after %s: %w", st, err)
		}
		logf("nemesis: healed %s", st.Kind)
	}
	return faults, nil
}

func leader(ctx context.Context, t Target) (int, error) {
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	n, _, err := t.Leader(lctx)
	return n, err
}

func inject(ctx context.Context, t Target, st Step) ([]int, error) {
	nodes := st.Nodes
	if st.Kind == KillLeader || st.Kind == ZkDownLeader || st.Kind == PartitionLeader || st.Kind == HandOver || st.Kind == RmiDownFollower {
		ld, err := leader(ctx, t)
		if err != nil {
			return nil, err
		}
		nodes = []int{ld}
	}
	if (st.Kind == HandOver || st.Kind == RmiDownFollower) && t.Size() < 2 {
		return nodes, fmt.Errorf("%s needs a follower", st.Kind)
	}
	var err error
	switch st.Kind {
	case Kill, KillLeader:
		err = t.Kill(nodes[0])
	case CrashAll:
		nodes = nil
		for n := 0; n < t.Size(); n++ {
			nodes = append(nodes, n)
			if err = t.Kill(n); err != nil {
				break
			}
		}
	case RollingCrash:
		nodes = nil
		for n := 0; n < t.Size() && err == nil; n++ {
			nodes = append(nodes, n)
			if err = t.Kill(n); err == nil {
				err = t.Restart(ctx, n)
			}
		}
	case RmiDown:
		err = t.RmiDown(nodes[0])
	case RmiDownFollower:
		nodes = []int{follower(t, nodes[0], st.Pick)}
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
		f := follower(t, nodes[0], st.Pick)
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
	case OneWay:
		err = t.PartitionOneWay(st.Drop, st.Other, nodes)
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

// follower is the pick-th node after the leader ld, never ld itself.
func follower(t Target, ld, pick int) int {
	return (ld + 1 + pick%(t.Size()-1)) % t.Size()
}

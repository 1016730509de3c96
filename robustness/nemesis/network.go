package nemesis

import (
	"context"
	"fmt"
	"time"
)

// The network faults: partitions (a minority, the leader, one way), a
// bridge, delays, and a node's inbound RPC turned off.
var (
	// Partition cuts a minority from the rest, both ways.
	Partition Fault = partition{base{"partition", AtNodes}}
	// PartitionLeader cuts the leader from the rest, both ways.
	PartitionLeader Fault = partitionLeader{partition{base{"partition-leader", AtLeader}}}
	// CutLeaderFromPeers is PartitionLeader under the name issue 14 gives
	// it: the leader's node-to-node links are cut both ways while its
	// coordinator connection works, so it keeps its session.
	CutLeaderFromPeers = PartitionLeader
	// OneWay cuts the calls from some nodes to others.
	OneWay Fault = oneWay{base{"partition-one-way", AtNodes}}
	// Bridge splits the other nodes into two sides that cannot reach
	// each other while one node, the bridge, reaches both: the leader
	// when Step.Pick is 0, else the Pick-th follower counted from the
	// leader. Needs 3 nodes.
	Bridge Fault = bridge{base{"bridge", AtLeader}}
	// Delay delays node-to-node messages: of every node, or of the nodes
	// named.
	Delay Fault = delay{base{"delay", AtNodes}}
	// RmiDown turns a node's inbound RPC off.
	RmiDown Fault = rmiDown{base{"rmi-down", AtNodes}, oneNode{}}
	// RmiDownFollower is RmiDown on a follower (Pick chooses which,
	// counted from the current leader): a holder of cached copies the
	// leader cannot reach, never the leader itself.
	RmiDownFollower Fault = rmiDown{base{"rmi-down-follower", AtFollower}, pickFollower{}}
)

type partition struct{ base }

func (partition) Draw(d *Draw, st *Step) {
	st.Nodes = d.Perm[:1+d.IntN(max(d.Minority(), 1))]
	st.Drop = d.Coin()
}

func (partition) Inject(_ context.Context, a Aimed, st Step) (Hit, error) {
	return Hit{Nodes: a.Nodes}, a.Target.Partition(st.Drop, a.Nodes)
}

type partitionLeader struct{ partition }

func (partitionLeader) Draw(d *Draw, st *Step) { st.Drop = d.Coin() }

type oneWay struct{ base }

func (oneWay) Draw(d *Draw, st *Step) {
	st.Nodes = d.Perm[:1]
	st.Other = d.Perm[1 : 2+d.IntN(d.Size-1)]
	st.Drop = d.Coin()
}

func (oneWay) Inject(_ context.Context, a Aimed, st Step) (Hit, error) {
	return Hit{Nodes: a.Nodes}, a.Target.PartitionOneWay(st.Drop, a.Other, a.Nodes)
}

type bridge struct{ base }

func (bridge) Draw(d *Draw, st *Step) {
	// The leader bridges half the time, a follower the other half.
	if d.IntN(2) == 1 && d.Size > 1 {
		st.Pick = 1 + d.IntN(d.Size-1)
	}
	st.Drop = d.Coin()
}

// Inject hits the bridge, then side a, then side b. The nodes other than
// the bridge, in order from it around the active ones, are split in
// halves.
func (f bridge) Inject(_ context.Context, a Aimed, st Step) (Hit, error) {
	ld := a.Nodes[0]
	if len(a.Active) < 3 {
		return Hit{Nodes: []int{ld}}, fmt.Errorf("%s needs 3 nodes", f.Name())
	}
	br := ld
	if st.Pick > 0 {
		br = follower(a.Active, ld, st.Pick-1)
	}
	var rest []int
	for i := 0; i < len(a.Active)-1; i++ {
		rest = append(rest, follower(a.Active, br, i))
	}
	sa, sb := rest[:len(rest)/2], rest[len(rest)/2:]
	return Hit{Nodes: append([]int{br}, rest...)}, a.Target.Bridge(st.Drop, sa, sb, br)
}

type delay struct{ base }

// Draw: one in three delays every link a little; the others slow down a
// minority of the nodes (each message to or from them) more, so that the
// rest runs at full speed beside them.
func (delay) Draw(d *Draw, st *Step) {
	if d.IntN(3) == 0 {
		st.Delay = d.Duration(5*time.Millisecond, 60*time.Millisecond)
	} else {
		st.Nodes = d.Perm[:1+d.IntN(max(d.Minority(), 1))]
		st.Delay = d.Duration(20*time.Millisecond, 200*time.Millisecond)
	}
}

func (delay) Inject(_ context.Context, a Aimed, st Step) (Hit, error) {
	if len(a.Nodes) == 0 {
		a.Target.SetLinkDelay(st.Delay)
	}
	for _, n := range a.Nodes {
		if err := a.Target.SetNodeDelay(n, st.Delay); err != nil {
			return Hit{Nodes: a.Nodes}, err
		}
	}
	return Hit{Nodes: a.Nodes}, nil
}

type rmiDown struct {
	base
	drawer
}

func (f rmiDown) Inject(_ context.Context, a Aimed, st Step) (Hit, error) {
	n := a.Nodes[0]
	if f.Aim() == AtFollower {
		n = follower(a.Active, n, st.Pick)
	}
	return Hit{Nodes: []int{n}}, a.Target.RmiDown(n)
}

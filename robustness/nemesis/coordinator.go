package nemesis

import "context"

// The coordinator faults: nodes cut from the coordinator (one, the leader,
// a majority), a stalled coordinator connection, and a node cut from the
// coordinator and its peers at once.
var (
	// ZkDown cuts a node from the coordinator.
	ZkDown Fault = zkDown{base{"zk-down", AtNodes}, oneNode{}}
	// ZkDownLeader cuts the leader from the coordinator.
	ZkDownLeader Fault = zkDown{base{"zk-down-leader", AtLeader}, noDraw{}}
	// ZkDownMajority cuts a majority from the coordinator.
	ZkDownMajority Fault = zkDownMajority{zkDown{base{"zk-down-majority", AtNodes}, majority{}}}
	// ZkStall makes a node's coordinator connection stop answering.
	ZkStall Fault = zkStall{base{"zk-stall", AtNodes}, oneNode{}}
	// Isolate cuts a node from the coordinator and its peers at once.
	Isolate Fault = isolate{base{"isolate", AtNodes}, oneNode{}}
)

type zkDown struct {
	base
	drawer
}

func (zkDown) Inject(_ context.Context, a Aimed, _ Step) (Hit, error) {
	for _, n := range a.Nodes {
		if err := a.Target.ZkDown(n); err != nil {
			return Hit{Nodes: a.Nodes}, err
		}
	}
	return Hit{Nodes: a.Nodes}, nil
}

type zkDownMajority struct{ zkDown }

// LivenessExempt: a majority cannot reach the coordinator.
func (zkDownMajority) LivenessExempt(int) bool { return true }

// majority is Fault.Draw of a fault that hits a majority of the nodes.
type majority struct{}

func (majority) Draw(d *Draw, st *Step) { st.Nodes = d.Perm[:d.Minority()+1] }

type zkStall struct {
	base
	oneNode
}

func (zkStall) Inject(_ context.Context, a Aimed, _ Step) (Hit, error) {
	return Hit{Nodes: a.Nodes}, a.Target.ZkStall(a.Nodes[0])
}

type isolate struct {
	base
	oneNode
}

func (isolate) Inject(_ context.Context, a Aimed, st Step) (Hit, error) {
	err := a.Target.ZkDown(a.Nodes[0])
	if err == nil {
		err = a.Target.Partition(st.Drop, a.Nodes)
	}
	return Hit{Nodes: a.Nodes}, err
}

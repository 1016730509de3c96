package nemesis

import "context"

// PauseLeader pauses the leader as a stopped process (SIGSTOP, a long GC
// pause) would look to the others (Target.Pause): no node and not the
// coordinator hears from it, its session expires by TTL.
var PauseLeader Fault = pauseLeader{base{"pause-leader", AtLeader}, noDraw{}}

type pauseLeader struct {
	base
	noDraw
}

func (pauseLeader) Inject(_ context.Context, a Aimed, _ Step) (Hit, error) {
	return Hit{Nodes: a.Nodes}, a.Target.Pause(a.Nodes[0])
}

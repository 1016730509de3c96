package nemesis

import "context"

// HandOver makes the leader resign (a rolling restart) while a follower
// (Pick, counted from the leader) is isolated: the new leader is elected
// at once, while the isolated node may still hold cached copies under the
// old epoch's leases.
var HandOver Fault = handOver{base{"hand-over", AtFollower}, pickFollower{}}

type handOver struct {
	base
	pickFollower
}

// Inject hits the leader and the isolated follower.
func (handOver) Inject(ctx context.Context, a Aimed, st Step) (Hit, error) {
	t, ld := a.Target, a.Nodes[0]
	f := follower(a.Active, ld, st.Pick)
	// The follower must not notice at once: its coordinator connection
	// stalls (no error to see) and its peers refuse it quickly, so the
	// new leader's Prepare does not wait on it.
	err := t.ZkStall(f)
	if err == nil {
		if err = t.Partition(false, []int{f}); err == nil {
			err = t.Resign(ctx, ld)
		}
	}
	return Hit{Nodes: []int{ld, f}}, err
}

// LivenessExempt: with under 5 nodes, the isolated follower and the
// resigning leader leave no majority that can take over.
func (handOver) LivenessExempt(size int) bool { return size < 5 }

package node

import (
	"context"
	"time"

	"github.com/kvstore/kvstore/durable"
	"github.com/kvstore/kvstore/rpc/kvpb"
	"github.com/kvstore/kvstore/store"
)

// What the tests of package node_test reach inside a node.

// SetDiskDelay makes the node's data directory a slow disk from its next
// group commit on (durable.DB.SetCommitDelay). Kill ends a commit waiting.
func (n *Node) SetDiskDelay(d time.Duration) { n.rep.disk.SetCommitDelay(d) }

// OnDisk is the position of the node's store it knows is on disk, as an
// early answer reports it.
func (n *Node) OnDisk() store.Version {
	n.rep.mu.Lock()
	defer n.rep.mu.Unlock()
	return n.rep.durableLocked()
}

// appendAt is appendEntries without a deadline, not pipelined.
func (r *replica) appendAt(epoch int64, ld leadership, prev store.Version, entries []store.Entry, early bool) (standing, *durable.Pending, error) {
	return r.appendEntries(context.Background(), epoch, ld, prev, entries, early, false)
}

// ForwardStats returns how many messages the node sent on its Forward
// streams and how many writes they carried.
func (n *Node) ForwardStats() (messages, writes int64) {
	return n.forwarder.sent.Load(), n.forwarder.carried.Load()
}

// ServeForwarded serves op at the node as its Forward stream serves an
// operation that arrived with the given deadline, and returns the answer.
func (n *Node) ServeForwarded(ctx context.Context, op *kvpb.ForwardedOp, deadline time.Time) *kvpb.ForwardedResult {
	got := make(chan *kvpb.ForwardedResult, 1)
	(&peerServer{n: n}).startForwarded(ctx, op, deadline, func(r *kvpb.ForwardedResult) { got <- r })
	return <-got
}

// ClusterName is the cluster name the node's messages carry.
func (n *Node) ClusterName() string { return n.cfg.Cluster }

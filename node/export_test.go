package node

import (
	"context"
	"time"

	"github.com/kvstore/kvstore/durable"
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

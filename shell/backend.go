package shell

import (
	"context"
)

// NodeInfo is one line of `list`.
type NodeInfo struct {
	Num   int    // node number, from 0 in creation order
	ID    string // node id, e.g. "n0"
	Addr  string // node-to-node RPC address
	Role  string // "leader" or "follower"
	State string // "ok", "zk-down", "rmi-down", "suspended", "stopped", ...
}

// Backend is what the shell drives: a cluster of numbered nodes with fault
// switches. cluster.Cluster implements it; fakeBackend in the tests is its
// in-memory twin. Every method that can block takes a context.
type Backend interface {
	// Get reads key through node n. found is false when the key has no value.
	Get(ctx context.Context, n int, key string) (value string, found bool, err error)
	// Put sets key to value through node n.
	Put(ctx context.Context, n int, key, value string) error
	// Delete removes key through node n.
	Delete(ctx context.Context, n int, key string) error
	// List describes every node, in number order.
	List() []NodeInfo
	// NewNode creates and starts one more node and returns its number.
	NewNode(ctx context.Context) (int, error)
	// RmiDown / RmiUp stop / resume node n's inbound node-to-node RPC.
	RmiDown(n int) error
	RmiUp(n int) error
	// ZkDown / ZkUp cut / restore node n's connection to the coordinator.
	ZkDown(n int) error
	ZkUp(n int) error
	// Kill crashes node n (memory lost); Restart starts it again, same id.
	Kill(n int) error
	Restart(ctx context.Context, n int) error
	// Remove removes node n from the voter record, through the leader; a
	// running node n stops (state "removed") and may be restarted, as a new
	// member.
	Remove(ctx context.Context, n int) error
	// Leader returns the leader's node number and epoch, waiting for an
	// election in progress up to ctx.
	Leader(ctx context.Context) (n int, epoch int64, err error)
}

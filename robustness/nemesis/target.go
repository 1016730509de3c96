package nemesis

import (
	"context"
	"time"
)

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
	// UnreconciledWhenKilled reports whether node n's data directory
	// surely kept its unreconciled mark when the node was last killed:
	// no leader, its own takeover included, had reconciled it.
	UnreconciledWhenKilled(n int) (bool, error)
	// Remove removes node n from the voters through another node.
	Remove(ctx context.Context, n int) error
	// Retire takes node n out of the cluster for good (it is crashed if
	// it runs): no longer Active, never restarted by Heal.
	Retire(n int) error
	// NewNode starts a node with a new number and id and waits until it
	// is a voter.
	NewNode(ctx context.Context) (int, error)
}

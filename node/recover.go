package node

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/kvstore/kvstore/quorum"
)

// Disaster recovery (docs/design.md, Coordinator rebuild and
// ForceNewCluster). The data lives on
// the nodes, but the voter record and the epochs live in the coordinator:
// a node that holds data never bootstraps a voter record on its own, and
// the recovery command (Config.ForceNewCluster) is the one explicit way to
// restart a cluster from one node's data.

// Sentinel errors of Start. Match them with errors.Is.
var (
	// ErrCoordinatorLost: the coordinator has no voter record but this
	// node's data directory holds data, so the coordinator was rebuilt or
	// lost its data. Bootstrapping here could make a stale node the whole
	// cluster and lose acknowledged writes; the node refuses to start.
	ErrCoordinatorLost = errors.New("node: the coordinator has no voter record but this node holds data: the coordinator appears rebuilt or its data lost; restart the cluster from its most up-to-date node with `kvstore node --force-new-cluster=<its id>` (see docs/durability.md: Disaster recovery)")
	// ErrOtherIncarnation: this node's data directory belongs to another
	// incarnation of the cluster record than the coordinator's: the
	// coordinator was rebuilt (its data lost) or the node was pointed at
	// another cluster (a mistyped --cluster) before. Joining could let an
	// empty or foreign leader overwrite this node's data, or this node's
	// foreign data win a takeover; the node refuses to start.
	ErrOtherIncarnation = errors.New("node: this node's data directory belongs to another cluster incarnation than the coordinator's cluster record: the coordinator appears rebuilt (its data lost) or this node was pointed at another cluster; to restart the cluster from its data, stop every node and run `kvstore node --force-new-cluster=<its id>` on the most up-to-date node (see docs/durability.md: Disaster recovery); to let this node join as a new node, move its data directory aside (or wipe it)")
	// ErrForceRefused: ForceNewCluster was refused because a majority of
	// the recorded voters is alive: the cluster can recover by itself.
	ErrForceRefused = errors.New("node: force-new-cluster refused")
)

// RecoveryCommand names the disaster-recovery command in messages.
const RecoveryCommand = "kvstore node --force-new-cluster=<node-id>"

// forceEpochGap is how far above this node's own epochs the recovery
// command sets the epoch base: another survivor may have promised a later
// epoch than this node (a takeover that reached it and not this one), and
// it must still see the new leader's epoch as the highest. Epochs of one
// coordinator are revisions or zxids: survivors' epochs never differ by
// anything near 2^32.
const forceEpochGap = 1 << 32

// forceNewCluster is Config.ForceNewCluster's work before the node starts:
// it refuses on a node with no data, and while a majority of the recorded
// voters is alive; it raises the epoch base above every epoch this node
// promised or applied (by forceEpochGap), adopts the coordinator's
// cluster incarnation inc (the explicit operator act that makes this
// node's data the incarnation's), and writes a voter record naming only
// this node.
func (b *boot) forceNewCluster(ctx context.Context, inc string) error {
	n := b.n
	if !n.rep.hasData() {
		return fmt.Errorf("node %s: %w: this node holds no data (an empty or new data directory): forcing a new cluster from it would start the cluster empty; run it on the most up-to-date survivor", n.cfg.ID, ErrForceRefused)
	}
	co := n.cfg.Coordinator
	voters, err := co.Voters(ctx)
	if err != nil {
		return fmt.Errorf("node %s: force-new-cluster: read voters: %w", n.cfg.ID, err)
	}
	if voters.Version != 0 {
		members, err := b.liveMembers(ctx)
		if err != nil {
			return fmt.Errorf("node %s: force-new-cluster: read the live members: %w", n.cfg.ID, err)
		}
		alive := map[string]bool{n.cfg.ID: true}
		var names []string
		for _, id := range voters.IDs {
			if _, ok := members[id]; ok || id == n.cfg.ID {
				alive[id] = true
				names = append(names, id)
			}
		}
		sort.Strings(names)
		if quorum.HasMajority(voters.IDs, alive) {
			return fmt.Errorf("node %s: %w: voters %v are alive (this node counted) of %v, a majority: start the nodes normally, the cluster recovers by itself; stop them first to force it", n.cfg.ID, ErrForceRefused, names, voters.IDs)
		}
	}
	applied, accepted := n.rep.applied(), n.rep.epoch()
	base := max(accepted, applied.Epoch) + forceEpochGap
	if err := co.RaiseEpochBase(ctx, base); err != nil {
		return fmt.Errorf("node %s: force-new-cluster: raise the epoch base: %w", n.cfg.ID, err)
	}
	// Before the voter record: restarted after a crash in between, the
	// node must pass the fence to run the command again.
	oldInc := b.incarnation
	if err := b.adoptIncarnation(ctx, inc); err != nil {
		return fmt.Errorf("node %s: force-new-cluster: %w", n.cfg.ID, err)
	}
	if err := co.ReplaceVoters(ctx, voters, []string{n.cfg.ID}); err != nil {
		return fmt.Errorf("node %s: force-new-cluster: write the voter record: %w", n.cfg.ID, err)
	}
	n.log.Error("FORCE-NEW-CLUSTER: the cluster restarts from this node's data alone; writes acknowledged only by the nodes that are gone are LOST; start the other surviving nodes normally, they are reconciled to this node's state and added back as voters",
		"applied", applied, "accepted_epoch", accepted, "epoch_base_at_least", base, "old_voters", voters.IDs, "old_voter_record_found", voters.Version != 0,
		"incarnation", inc, "previous_incarnation", oldInc)
	return nil
}

// liveMembers reads the registered members through a short session of its
// own (the node has none yet).
func (b *boot) liveMembers(ctx context.Context) (map[string]string, error) {
	n := b.n
	sess, err := n.cfg.Coordinator.NewSession(ctx, n.cfg.SessionTTL)
	if err != nil {
		return nil, err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), n.cfg.RPCTimeout)
		defer cancel()
		_ = sess.Close(cctx)
	}()
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	v, ok := <-sess.Watch(wctx)
	if !ok {
		return nil, fmt.Errorf("no view: %w", context.Cause(wctx))
	}
	return v.Members, nil
}

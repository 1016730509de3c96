package node

// What Start does before the node runs (docs/design.md, Restarts): the
// coordinator's records checked against the config and the data
// directory, the recovery command, the bootstrap of the voter record, and
// whether a returning voter is recovering. The steps of the recovery
// command are in recover.go.

import (
	"context"
	"errors"
	"fmt"

	"github.com/kvstore/kvstore/coord"
)

// boot runs Start's checks and decisions, once, before the node's
// goroutines.
type boot struct {
	n *Node
	// incarnation is the cluster incarnation the data directory belongs
	// to ("" if none is recorded, and without a data directory); read and
	// written only by New (openDisk) and Start, before the node's
	// goroutines.
	incarnation string
}

// run is Start up to serving: see Start.
func (b *boot) run(ctx context.Context) error {
	n := b.n
	inc, err := n.cfg.Coordinator.ClaimCluster(ctx, n.cfg.Cluster)
	if err != nil {
		return fmt.Errorf("node %s: %w", n.cfg.ID, err)
	}
	n.incarnation.Store(&inc)
	rec, err := n.cfg.Coordinator.ClaimSettings(ctx, n.cfg.Settings())
	if err != nil {
		return fmt.Errorf("node %s: claim settings: %w", n.cfg.ID, err)
	}
	if err := n.cfg.checkSettings(rec); err != nil {
		return fmt.Errorf("node %s: %w", n.cfg.ID, err)
	}
	if err := b.checkIncarnation(inc); err != nil {
		return err
	}
	if n.cfg.ForceNewCluster != "" {
		if err := b.forceNewCluster(ctx, inc); err != nil {
			return err
		}
	}
	voters, err := n.cfg.Coordinator.Voters(ctx)
	if err != nil {
		return fmt.Errorf("node %s: read voters: %w", n.cfg.ID, err)
	}
	if voters.Version == 0 && n.rep.hasData() && !(faultsOn && n.cfg.Faults.BootstrapWithData) {
		n.log.Error("refusing to start: no voter record but this node holds data", "err", ErrCoordinatorLost, "applied", n.Applied())
		return fmt.Errorf("node %s: %w", n.cfg.ID, ErrCoordinatorLost)
	}
	// A new directory, a lost disk, one from before incarnations: it
	// belongs to this incarnation from now on, durably before it counts.
	if err := b.adoptIncarnation(ctx, inc); err != nil {
		return err
	}
	bootstrapped := false
	if voters.Version == 0 {
		// No voter record: nothing was ever committed, so this node's
		// state is reconciled by definition. Record it before the record
		// makes this node the only voter: restarted after a crash, it
		// must not wait for a leader that only it could be.
		if err := b.bootstrapReconciled(ctx); err != nil {
			return fmt.Errorf("node %s: %w", n.cfg.ID, err)
		}
		err := n.cfg.Coordinator.CreateVoters(ctx, []string{n.cfg.ID})
		switch {
		case err == nil:
			n.log.Info("bootstrapped the voter record", "voters", []string{n.cfg.ID})
			bootstrapped = true
		case errors.Is(err, coord.ErrConflict):
			if voters, err = n.cfg.Coordinator.Voters(ctx); err != nil {
				return fmt.Errorf("node %s: read voters: %w", n.cfg.ID, err)
			}
		default:
			// The record may have been written all the same (an answer
			// lost): the next start finds it unsealed, naming this node.
			return fmt.Errorf("node %s: create voters: %w", n.cfg.ID, err)
		}
	}
	if !bootstrapped && voters.Contains(n.cfg.ID) && !n.rep.restored {
		if err := b.rejoinWithoutData(ctx, voters); err != nil {
			return err
		}
	}
	return nil
}

// bootstrapReconciled durably clears the unreconciled mark of a node that
// is about to create the voter record, or that found it unsealed (nothing
// was committed before either).
func (b *boot) bootstrapReconciled(ctx context.Context) error {
	n := b.n
	return n.waitDurable(ctx, n.rep.reconciled())
}

// rejoinWithoutData decides, in Start, what a voter that comes back
// without reconciled data (no data directory, a lost or set-aside one, or
// one no leader reconciled since) is. Normally it is recovering: it must
// not count toward any majority until a leader has reconciled it
// (docs/design.md, Restarts), since it may have lost writes it
// acknowledged.
//
// But a voter record that no leader has sealed (coord.Voters.Unsealed)
// proves that nothing was ever acknowledged: the first leader seals it
// before it serves anything (takeover.sealVoters), and that write reaches
// the coordinator before any write can reach this node, so before this
// node's crash and before the read of the record that Start just made.
// This node then lost nothing that counts, whatever memory it lost (its
// own bootstrap whose answer was lost, a crash before the first leader
// served), and it is reconciled by definition, like a bootstrapping node:
// otherwise a one-node cluster in memory would wait for good for a leader
// only it could be.
func (b *boot) rejoinWithoutData(ctx context.Context, voters coord.Voters) error {
	n := b.n
	if voters.Unsealed && !(faultsOn && n.cfg.Faults.IgnoreVoterSeal) {
		if err := b.bootstrapReconciled(ctx); err != nil {
			return fmt.Errorf("node %s: %w", n.cfg.ID, err)
		}
		n.log.Info("restarted without data, but no leader has sealed the voter record: nothing was ever committed, so this node counts as reconciled", "voters", voters.IDs)
		return nil
	}
	n.rep.setRecovering()
	n.log.Warn("restarted without reconciled data: recovering until a leader reconciles this node")
	return nil
}

// checkIncarnation is the fence of a data directory (docs/design.md,
// Cluster identity and incarnation): one that belongs to another
// incarnation than inc, the
// coordinator's, refuses to start with ErrOtherIncarnation, unless the
// node runs the recovery command (which adopts inc). A directory with no
// incarnation passes: adoptIncarnation records inc in it.
func (b *boot) checkIncarnation(inc string) error {
	n := b.n
	if b.incarnation == "" || b.incarnation == inc || n.cfg.ForceNewCluster != "" || (faultsOn && n.cfg.Faults.SkipIncarnationCheck) {
		return nil
	}
	n.log.Error("refusing to start: the data directory belongs to another cluster incarnation", "err", ErrOtherIncarnation,
		"dir", n.cfg.DataDir, "dir_incarnation", b.incarnation, "cluster", n.cfg.Cluster, "coordinator_incarnation", inc, "applied", n.Applied())
	return fmt.Errorf("node %s: %w (data directory %s: incarnation %s; cluster %q at the coordinator: incarnation %s)",
		n.cfg.ID, ErrOtherIncarnation, n.cfg.DataDir, b.incarnation, n.cfg.Cluster, inc)
}

// adoptIncarnation durably records inc as the cluster incarnation the
// data directory belongs to, if it records another or none. Start calls it
// before the node counts toward anything (serves RPC, creates the voter
// record); it writes nothing without a data directory.
func (b *boot) adoptIncarnation(ctx context.Context, inc string) error {
	n := b.n
	if !n.rep.persistent() || b.incarnation == inc {
		return nil
	}
	p := n.rep.setIncarnation(inc)
	if err := n.waitDurable(ctx, p); err != nil {
		return fmt.Errorf("node %s: record the cluster incarnation: %w", n.cfg.ID, err)
	}
	n.log.Info("recorded the cluster incarnation in the data directory", "incarnation", inc, "previous", b.incarnation)
	b.incarnation = inc
	return nil
}

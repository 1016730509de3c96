package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/kvstore/kvstore/coord"
	"github.com/kvstore/kvstore/durable"
	"github.com/kvstore/kvstore/store"
)

// Persistence. With Config.DataDir a node keeps a durable copy of its store
// (package durable) and mirrors every change of the in-memory store into it,
// in the same order and under the same lock (n.mu): entries applied,
// snapshots restored, epochs promised. A submission is made durable by the
// durable package's group commit; the node waits for it, after releasing
// n.mu, before it tells anyone: a follower before it answers Prepare,
// Append or GetSnapshot, the leader before it counts an entry toward the
// majority. Without DataDir every submission is nil and waiting is free.

// openDisk opens cfg.DataDir and loads what it holds into n.store. A data
// directory whose file is corrupt is set aside (renamed, never deleted) and
// the node starts empty: as a voter it then rejoins as recovering, like a
// node that lost its disk.
func (n *Node) openDisk() error {
	if n.cfg.DataDir == "" {
		return nil
	}
	o := durable.Options{NoSync: n.cfg.NoFsync, MaxRequests: n.cfg.MaxRequests, Logger: n.log, CommitDelay: n.cfg.slowDisk()}
	db, st, err := durable.Open(n.cfg.DataDir, o)
	if errors.Is(err, durable.ErrCorrupt) {
		aside := filepath.Join(n.cfg.DataDir, fmt.Sprintf("corrupt-%d", time.Now().Unix()))
		n.log.Error("data directory is corrupt: set aside, starting empty (recovering if a voter)", "dir", n.cfg.DataDir, "aside", aside, "err", err)
		if merr := moveAside(n.cfg.DataDir, aside); merr != nil {
			return fmt.Errorf("node %s: %w (and could not set it aside: %v)", n.cfg.ID, err, merr)
		}
		db, st, err = durable.Open(n.cfg.DataDir, o)
	}
	if err != nil {
		return fmt.Errorf("node %s: data directory: %w", n.cfg.ID, err)
	}
	n.disk = db
	if faultsOn && n.cfg.Faults.ForgetUnreconciled {
		st.Unreconciled = false
	}
	n.unreconciled = st.Unreconciled
	n.incarnation = st.Incarnation
	if !st.Fresh {
		n.store.Restore(st.Snapshot)
		n.acceptedEpoch = st.AcceptedEpoch
		n.acceptedEpochA.Store(st.AcceptedEpoch)
		n.accepted = leadership{id: st.AcceptedLeader, nonce: st.AcceptedLeadership}
		// Files no leader reconciled since they were created (a lost or
		// set-aside directory, restarted again; a crash right after
		// creating them) are not restored data, whatever they hold.
		n.restored = !st.Unreconciled
		n.log.Info("loaded the data directory", "dir", n.cfg.DataDir, "applied", st.Snapshot.Applied, "keys", len(st.Snapshot.Items), "accepted_epoch", st.AcceptedEpoch, "unreconciled", st.Unreconciled)
	}
	return nil
}

// bootstrapReconciled durably clears the unreconciled mark of a node that
// is about to create the voter record, or that found it unsealed (nothing
// was committed before either).
func (n *Node) bootstrapReconciled(ctx context.Context) error {
	n.mu.Lock()
	p := n.reconciledLocked()
	n.mu.Unlock()
	return n.waitDurable(ctx, p)
}

// rejoinWithoutData decides, in Start, what a voter that comes back
// without reconciled data (no data directory, a lost or set-aside one, or
// one no leader reconciled since) is. Normally it is recovering: it must
// not count toward any majority until a leader has reconciled it
// (docs/design.md, Restarts), since it may have lost writes it acknowledged.
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
func (n *Node) rejoinWithoutData(ctx context.Context, voters coord.Voters) error {
	if voters.Unsealed && !(faultsOn && n.cfg.Faults.IgnoreVoterSeal) {
		if err := n.bootstrapReconciled(ctx); err != nil {
			return fmt.Errorf("node %s: %w", n.cfg.ID, err)
		}
		n.log.Info("restarted without data, but no leader has sealed the voter record: nothing was ever committed, so this node counts as reconciled", "voters", voters.IDs)
		return nil
	}
	n.mu.Lock()
	n.recovering = true
	n.mu.Unlock()
	n.log.Warn("restarted without reconciled data: recovering until a leader reconciles this node")
	return nil
}

// checkIncarnation is the fence of a data directory (docs/design.md,
// Cluster identity and incarnation): one that belongs to another incarnation than inc, the
// coordinator's, refuses to start with ErrOtherIncarnation, unless the
// node runs the recovery command (which adopts inc). A directory with no
// incarnation passes: adoptIncarnation records inc in it.
func (n *Node) checkIncarnation(inc string) error {
	if n.incarnation == "" || n.incarnation == inc || n.cfg.ForceNewCluster != "" || (faultsOn && n.cfg.Faults.SkipIncarnationCheck) {
		return nil
	}
	n.log.Error("refusing to start: the data directory belongs to another cluster incarnation", "err", ErrOtherIncarnation,
		"dir", n.cfg.DataDir, "dir_incarnation", n.incarnation, "cluster", n.cfg.Cluster, "coordinator_incarnation", inc, "applied", n.Applied())
	return fmt.Errorf("node %s: %w (data directory %s: incarnation %s; cluster %q at the coordinator: incarnation %s)",
		n.cfg.ID, ErrOtherIncarnation, n.cfg.DataDir, n.incarnation, n.cfg.Cluster, inc)
}

// adoptIncarnation durably records inc as the cluster incarnation the
// data directory belongs to, if it records another or none. Start calls it
// before the node counts toward anything (serves RPC, creates the voter
// record); it writes nothing without a data directory.
func (n *Node) adoptIncarnation(ctx context.Context, inc string) error {
	if n.disk == nil || n.incarnation == inc {
		return nil
	}
	n.mu.Lock()
	p := n.submittedLocked(n.disk.SetIncarnation(inc))
	n.mu.Unlock()
	if err := n.waitDurable(ctx, p); err != nil {
		return fmt.Errorf("node %s: record the cluster incarnation: %w", n.cfg.ID, err)
	}
	n.log.Info("recorded the cluster incarnation in the data directory", "incarnation", inc, "previous", n.incarnation)
	n.incarnation = inc
	return nil
}

// reconciledLocked records that a leader reconciled this node: its state
// holds everything committed. It clears recovering and submits the end of
// the durable mark if it is set. Callers hold n.mu.
func (n *Node) reconciledLocked() *durable.Pending {
	n.recovering = false
	if n.disk == nil || !n.unreconciled {
		return nil
	}
	n.unreconciled = false
	return n.submittedLocked(n.disk.Reconciled())
}

// needsReconcileLocked reports whether this node must get a leader's
// snapshot before it is reconciled: it is recovering, or its data directory
// still carries the unreconciled mark (a joiner that is no voter yet).
// Callers hold n.mu.
func (n *Node) needsReconcileLocked() bool {
	return n.recovering || n.unreconciled
}

// moveAside moves every file of dir into the new directory aside (inside
// dir), so that dir can be opened afresh and nothing is deleted. Each step
// is durable before the next: dir is synced once aside exists in it, and
// aside and dir after every rename, so that a crash cannot bring back a
// later rename without the earlier ones (or the files in neither place).
// The files move in name order, state.db before the log files: a crash
// part way leaves either the whole log beside no state.db (which replays
// to the full state) or a log that starts after a gap, or a corrupt
// state.db (both corrupt again, and set aside again on the next start).
func moveAside(dir, aside string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	if err := os.Mkdir(aside, 0o700); err != nil {
		return err
	}
	if err := syncDir(dir); err != nil {
		return err
	}
	for _, e := range ents {
		if e.IsDir() {
			continue
		}
		if err := os.Rename(filepath.Join(dir, e.Name()), filepath.Join(aside, e.Name())); err != nil {
			return err
		}
		if err := syncDir(aside); err != nil {
			return err
		}
		if err := syncDir(dir); err != nil {
			return err
		}
	}
	return nil
}

// syncDir fsyncs directory dir, making the entries created, renamed or
// removed in it durable. A variable, for the test that checks when it is
// called.
var syncDir = func(dir string) error {
	if err := durable.SyncDir(dir); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// crashDisk closes the durable store at the moment of a crash (Kill): the
// submissions not yet committed are dropped, as a real crash loses them.
func (n *Node) crashDisk() {
	if n.disk != nil {
		_ = n.disk.Crash()
	}
}

// closeDisk closes the durable store after the node's goroutines ended.
func (n *Node) closeDisk() {
	if n.disk == nil {
		return
	}
	if err := n.disk.Close(); err != nil {
		n.log.Warn("closing the data directory", "err", err)
	}
}

// submittedLocked records p as the latest submission and returns it.
// Callers hold n.mu.
func (n *Node) submittedLocked(p *durable.Pending) *durable.Pending {
	if p != nil {
		n.lastPending = p
	}
	return p
}

// pendingLastLocked is the latest submission (nil if none): once it is
// durable, everything the store held when it was made is. Callers hold
// n.mu.
func (n *Node) pendingLastLocked() *durable.Pending { return n.lastPending }

// persistEntriesLocked mirrors entries just applied to the store; dup[i]
// reports that entries[i] repeated a request id and changed nothing but the
// position. Callers hold n.mu.
func (n *Node) persistEntriesLocked(entries []store.Entry, dup []bool) *durable.Pending {
	if n.disk == nil || len(entries) == 0 {
		return nil
	}
	out := entries
	for i, d := range dup {
		if d {
			if &out[0] == &entries[0] {
				out = append([]store.Entry(nil), entries...)
			}
			out[i] = store.Entry{Version: entries[i].Version, Op: store.OpNoop}
		}
	}
	return n.submittedLocked(n.disk.Append(out))
}

// persistRestoreLocked mirrors a store.Restore of a leader's state (a
// follower's snapshot, or the state a new leader adopts): its record also
// clears the unreconciled mark. Callers hold n.mu.
func (n *Node) persistRestoreLocked(snap store.Snapshot) *durable.Pending {
	if n.disk == nil {
		return nil
	}
	n.unreconciled = false
	return n.submittedLocked(n.disk.Restore(snap))
}

// waitEntriesDurable is waitDurable where entries are acknowledged (a
// follower's Append of entries, the leader's own count of its entries):
// the place the deliberate bug Faults.SkipDurableWait skips. Snapshots,
// promises and the reconcile records are always waited for, so the bug
// loses acknowledged entries, as it is meant to, rather than the marks that
// keep a node recovering (which would make a crashed cluster unable to
// elect instead of wrong).
func (n *Node) waitEntriesDurable(ctx context.Context, ps ...*durable.Pending) error {
	if faultsOn && n.cfg.Faults.SkipDurableWait {
		return nil
	}
	return n.waitDurable(ctx, ps...)
}

// waitDurable waits until every submission in ps is durable. Submissions
// commit in order, so it waits for them in turn.
func (n *Node) waitDurable(ctx context.Context, ps ...*durable.Pending) error {
	for _, p := range ps {
		if p == nil {
			continue
		}
		if err := p.Wait(ctx); err != nil {
			return fmt.Errorf("persist: %w", err)
		}
	}
	return nil
}

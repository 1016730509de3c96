package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/kvstore/kvstore/durable"
)

// Persistence. With Config.DataDir a node keeps a durable copy of its
// replicated state (package durable): the replica (replica.go) mirrors
// every change of the in-memory store into it, in the same order and under
// the same lock: entries applied, snapshots restored, epochs promised. A
// submission is made durable by the durable package's group commit; the
// node waits for it, after the replica's lock is released, before it tells
// anyone: a follower before it answers Prepare, Append or GetSnapshot, the
// leader before it counts an entry toward the majority. Without DataDir
// every submission is nil and waiting is free. This file opens, sets aside
// and closes the directory, and waits for submissions.

// openDisk opens cfg.DataDir and loads what it holds into the replica. A data
// directory whose file is corrupt is set aside (renamed, never deleted) and
// the node starts empty: as a voter it then rejoins as recovering, like a
// node that lost its disk.
func (b *boot) openDisk() error {
	n := b.n
	if n.cfg.DataDir == "" {
		return nil
	}
	o := durable.Options{NoSync: n.cfg.NoFsync, MaxRequests: n.cfg.MaxRequests, Logger: n.log, CommitDelay: n.cfg.slowDisk(),
		ObserveSync: func(d time.Duration) { n.walFsync.Observe(d.Seconds()) }}
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
	ignored := false
	if faultsOn && n.cfg.Faults.ForgetUnreconciled {
		ignored, st.Unreconciled = st.Unreconciled, false
	}
	n.rep.open(db, st)
	n.rep.ignoredMark = ignored // before the node's goroutines
	b.incarnation = st.Incarnation
	if !st.Fresh {
		n.log.Info("loaded the data directory", "dir", n.cfg.DataDir, "applied", st.Snapshot.Applied, "keys", len(st.Snapshot.Items), "accepted_epoch", st.AcceptedEpoch, "unreconciled", st.Unreconciled)
	}
	return nil
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
func (r *replica) crashDisk() {
	if r.disk != nil {
		_ = r.disk.Crash()
	}
}

// closeDisk closes the durable store after the node's goroutines ended.
func (r *replica) closeDisk(log *slog.Logger) {
	if r.disk == nil {
		return
	}
	if err := r.disk.Close(); err != nil {
		log.Warn("closing the data directory", "err", err)
	}
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

package durable

import (
	"errors"
	"fmt"
	"maps"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kvstore/kvstore/store"
)

// TestRestoreUnitAcrossTransactions: a Restore is logged as one unit of
// many records, which the checkpointer (and Open's replay) may apply in
// several bbolt transactions. A crash after some of them leaves state.db
// with part of the unit; the next Open replays the rest from the log, and
// holds the whole new state, never a mix of old and new.
func TestRestoreUnitAcrossTransactions(t *testing.T) {
	rc, rp := restoreChunkBytes, replayChunk
	t.Cleanup(func() {
		restoreChunkBytes, replayChunk = rc, rp
		testHookReplayed = nil
	})
	dir := t.TempDir()
	db, _ := mustOpen(t, dir, Options{NoSync: true})
	mustWait(t, db.Append(sets(20, "old", "old")))
	mustClose(t, db) // checkpointed: state.db holds the old state

	// The restore, logged and not checkpointed, then a crash.
	holdCheckpoints(t)
	restoreChunkBytes = 500
	snap := store.Snapshot{Applied: store.Version{Epoch: 2, Seq: 100}, Items: map[string]store.Item{},
		Requests: []store.Request{{ID: "r", Version: store.Version{Epoch: 2, Seq: 100}}}}
	for i := range 60 {
		snap.Items[fmt.Sprintf("new%02d", i)] = store.Item{Value: strings.Repeat("n", 200), Version: store.Version{Epoch: 2, Seq: uint64(i + 1)}}
	}
	db, _ = mustOpen(t, dir, Options{NoSync: true})
	mustWait(t, db.Restore(snap))
	if err := db.Crash(); err != nil {
		t.Fatal(err)
	}

	// Open replays the unit two records per transaction and "crashes"
	// after the second: state.db holds the new position and part of the
	// new items.
	replayChunk = 2
	errCrash := errors.New("test: crash during the replay")
	txs := 0
	var mid committed
	testHookReplayed = func(d *DB) error {
		if txs++; txs == 2 {
			mid = d.cs
			return errCrash
		}
		return nil
	}
	if _, _, err := Open(dir, Options{NoSync: true}); !errors.Is(err, errCrash) {
		t.Fatalf("Open with the crash hook: %v", err)
	}
	if mid.applied != snap.Applied || mid.dg.Items == 0 || mid.dg.Items >= uint64(len(snap.Items)) {
		t.Fatalf("after the crash state.db holds %d items at %s: not a part of the restore (the test checks nothing)", mid.dg.Items, mid.applied)
	}
	testHookReplayed = nil

	db, st := mustOpen(t, dir, Options{NoSync: true})
	defer mustClose(t, db)
	if st.Snapshot.Applied != snap.Applied || !maps.Equal(st.Snapshot.Items, snap.Items) {
		t.Fatalf("reopened at %s with %d items; want the restored state, %s with %d items", st.Snapshot.Applied, len(st.Snapshot.Items), snap.Applied, len(snap.Items))
	}
	t.Logf("a crash after %d of the %d items of the restore reopened whole", mid.dg.Items, len(snap.Items))
}

// TestReplayOnAFullDiskIsNotCorruption: Open replays the log into
// state.db; when the disk refuses that write (full, failing) the records
// are sound, so Open fails with the disk's error and not ErrCorrupt
// (a node sets aside a corrupt directory and rejoins as recovering; a
// majority doing so at once after a shared disk filled up could elect no
// one). Once the disk takes writes again, Open replays everything.
func TestReplayOnAFullDiskIsNotCorruption(t *testing.T) {
	t.Cleanup(func() { testHookCheckpointCommit = nil })
	holdCheckpoints(t)
	dir := t.TempDir()
	db, _ := mustOpen(t, dir, Options{NoSync: true})
	entries := sets(20, "k", "v")
	mustWait(t, db.Append(entries))
	if err := db.Crash(); err != nil { // logged, not checkpointed
		t.Fatal(err)
	}

	testHookCheckpointCommit = func() error { return fmt.Errorf("write state.db: %w", syscall.ENOSPC) }
	_, _, err := Open(dir, Options{NoSync: true})
	if err == nil || errors.Is(err, ErrCorrupt) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Open whose replay the disk refuses: %v; want the disk's error (ENOSPC), not ErrCorrupt", err)
	}
	testHookCheckpointCommit = nil

	db, st := mustOpen(t, dir, Options{NoSync: true})
	defer mustClose(t, db)
	if st.Snapshot.Applied != entries[len(entries)-1].Version || len(st.Snapshot.Items) != len(entries) {
		t.Fatalf("reopened at %s with %d items; want %s with %d", st.Snapshot.Applied, len(st.Snapshot.Items), entries[len(entries)-1].Version, len(entries))
	}
}

// holdCheckpoints stops the checkpointer from checkpointing on its own
// (by time or size) until the test ends: what is appended stays in the
// log only.
func holdCheckpoints(t *testing.T) {
	ci, cb, mx := checkpointInterval, checkpointBytes, maxUncheckpointed
	t.Cleanup(func() { checkpointInterval, checkpointBytes, maxUncheckpointed = ci, cb, mx })
	checkpointInterval, checkpointBytes, maxUncheckpointed = time.Hour, 1<<40, 1<<40
}

// sets returns n sets of keys prefix00, prefix01, ... to value, at
// positions 1.1 to 1.n.
func sets(n int, prefix, value string) []store.Entry {
	var es []store.Entry
	for i := range n {
		es = append(es, store.Entry{Version: store.Version{Epoch: 1, Seq: uint64(i + 1)}, Op: store.OpSet, Key: fmt.Sprintf("%s%02d", prefix, i), Value: value})
	}
	return es
}

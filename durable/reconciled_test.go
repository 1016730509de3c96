package durable

import (
	"encoding/binary"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/kvstore/kvstore/store"
)

// reopen closes db (crash: without a checkpoint, so the next Open replays
// the log; otherwise gracefully) and opens dir again.
func reopen(t *testing.T, db *DB, dir string, crash bool) (*DB, State) {
	t.Helper()
	if crash {
		if err := db.Crash(); err != nil {
			t.Fatalf("Crash: %v", err)
		}
	} else {
		mustClose(t, db)
	}
	return mustOpen(t, dir, Options{})
}

// TestUnreconciledMarkSurvivesReopen: a new directory is unreconciled, and
// stays so through any number of reopens (graceful or crash) and of
// submissions that are not reconciling ones (appends, promises); only a
// Reconciled submission clears it, durably.
func TestUnreconciledMarkSurvivesReopen(t *testing.T) {
	for _, crash := range []bool{false, true} {
		t.Run(map[bool]string{false: "close", true: "crash"}[crash], func(t *testing.T) {
			dir := t.TempDir()
			db, st := mustOpen(t, dir, Options{})
			if !st.Fresh || !st.Unreconciled {
				t.Fatalf("new directory: fresh %v unreconciled %v, want both", st.Fresh, st.Unreconciled)
			}
			// Reopened at once: the files exist, nothing was submitted.
			db, st = reopen(t, db, dir, crash)
			if st.Fresh || !st.Unreconciled {
				t.Fatalf("reopened before any submission: fresh %v unreconciled %v, want unreconciled files", st.Fresh, st.Unreconciled)
			}
			w := newWriter(t, db, store.New(0))
			w.append(w.next(0, store.OpSet, "a", "1", "r1"))
			mustWait(t, db.Promise(4))
			for i := 0; i < 3; i++ {
				db, st = reopen(t, db, dir, crash)
				if !st.Unreconciled {
					t.Fatalf("reopen %d after an append and a promise: the mark is gone", i+1)
				}
			}
			w.db = db
			w.append(w.next(0, store.OpSet, "b", "2", ""))
			mustWait(t, db.Reconciled())
			db, st = reopen(t, db, dir, crash)
			if st.Unreconciled {
				t.Fatal("reopened after Reconciled: still unreconciled")
			}
			if st.Snapshot.Applied.Seq != 2 || st.AcceptedEpoch != 4 {
				t.Fatalf("reopened at %s, epoch %d; want seq 2, epoch 4", st.Snapshot.Applied, st.AcceptedEpoch)
			}
			// Nothing sets it again.
			mustWait(t, db.Promise(5))
			_, st = reopen(t, db, dir, crash)
			if st.Unreconciled {
				t.Fatal("the mark came back")
			}
		})
	}
}

// TestRestoreClearsUnreconciledMark: a Restore is a leader's state; its own
// record clears the mark, so a crash cannot keep the snapshot and lose the
// clearing (or the reverse).
func TestRestoreClearsUnreconciledMark(t *testing.T) {
	for _, crash := range []bool{false, true} {
		t.Run(map[bool]string{false: "close", true: "crash"}[crash], func(t *testing.T) {
			dir := t.TempDir()
			db, _ := mustOpen(t, dir, Options{})
			snap := store.Snapshot{Applied: store.Version{Epoch: 2, Seq: 5}, Items: map[string]store.Item{"k": {Value: "v", Version: store.Version{Epoch: 2, Seq: 4}}}}
			p := db.Restore(snap)
			mustWait(t, p)
			_, st := reopen(t, db, dir, crash)
			if st.Unreconciled {
				t.Fatal("reopened after a Restore: still unreconciled")
			}
			sameSnapshot(t, "after the restore", st.Snapshot, snap)
		})
	}
}

// makeFormat1 rewrites the closed directory dir's state.db as a format 1
// file: format record 1, no unreconciled key.
func makeFormat1(t *testing.T, dir string) {
	t.Helper()
	b, err := bolt.Open(filepath.Join(dir, fileName), 0o600, boltOptions(false))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	err = b.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if err := meta.Delete(keyUnreconciled); err != nil {
			return err
		}
		rec := binary.BigEndian.AppendUint32(make([]byte, crcLen), formatV1)
		seal(bucketMeta, keyFormat, rec)
		return meta.Put(keyFormat, rec)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestFormat1IsReadAndUpgraded: a file written before the mark existed is
// read; at position zero it is unreconciled (an empty store is never
// restored data), beyond it not; either way it is rewritten as format 2
// with the mark it was given.
func TestFormat1IsReadAndUpgraded(t *testing.T) {
	for _, tc := range []struct {
		name    string
		entries int
		want    bool
	}{{"empty", 0, true}, {"with data", 2, false}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			db, _ := mustOpen(t, dir, Options{})
			w := newWriter(t, db, store.New(0))
			for i := 0; i < tc.entries; i++ {
				w.append(w.next(0, store.OpSet, "k", "v", ""))
			}
			mustWait(t, db.Reconciled()) // format 1 had no mark: show it is not read
			mustClose(t, db)
			makeFormat1(t, dir)
			db, st := mustOpen(t, dir, Options{})
			if st.Unreconciled != tc.want {
				t.Fatalf("format 1 file at %s: unreconciled %v, want %v", st.Snapshot.Applied, st.Unreconciled, tc.want)
			}
			if db.cs.format != formatVersion {
				t.Fatalf("format %d after Open, want it upgraded to %d", db.cs.format, formatVersion)
			}
			_, st = reopen(t, db, dir, true)
			if st.Unreconciled != tc.want {
				t.Fatalf("after the upgrade: unreconciled %v, want %v", st.Unreconciled, tc.want)
			}
		})
	}
}

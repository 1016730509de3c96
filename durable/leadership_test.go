package durable

import (
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// A promise names its leadership (epoch, leader id, leadership number); it
// survives a crash (replayed from the log) and a checkpoint, a second
// leadership of the same epoch does not replace it, a higher epoch does.
func TestPromiseLeadershipIsDurable(t *testing.T) {
	dir := t.TempDir()
	check := func(st State, epoch int64, leader string, nonce uint64) {
		t.Helper()
		if st.AcceptedEpoch != epoch || st.AcceptedLeader != leader || st.AcceptedLeadership != nonce {
			t.Fatalf("promise (%d, %q, %d), want (%d, %q, %d)", st.AcceptedEpoch, st.AcceptedLeader, st.AcceptedLeadership, epoch, leader, nonce)
		}
	}
	db, _ := mustOpen(t, dir, Options{})
	mustWait(t, db.PromiseLeadership(5, "a", 11))
	mustWait(t, db.PromiseLeadership(5, "b", 22)) // same epoch, another leadership: ignored
	mustWait(t, db.PromiseLeadership(4, "c", 33)) // lower: ignored
	if err := db.Crash(); err != nil {
		t.Fatal(err)
	}
	db, st := mustOpen(t, dir, Options{}) // from the log
	check(st, 5, "a", 11)
	mustClose(t, db)
	db, st = mustOpen(t, dir, Options{}) // from the checkpoint
	check(st, 5, "a", 11)
	mustWait(t, db.Promise(6)) // a promise without leadership clears it
	mustClose(t, db)
	db, st = mustOpen(t, dir, Options{})
	check(st, 6, "", 0)
	mustWait(t, db.PromiseLeadership(6, "d", 44)) // the same epoch, first leadership: recorded
	mustClose(t, db)
	db, st = mustOpen(t, dir, Options{})
	check(st, 6, "d", 44)
	mustClose(t, db)
}

// A directory written before leadership promises (no accepted_leadership
// key) opens, with no leadership.
func TestDirectoryWithoutLeadershipOpens(t *testing.T) {
	dir := t.TempDir()
	db, _ := mustOpen(t, dir, Options{})
	mustWait(t, db.PromiseLeadership(3, "a", 7))
	mustClose(t, db)
	b, err := bolt.Open(filepath.Join(dir, fileName), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = b.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Delete(keyLeadership) })
	if cerr := b.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	db, st := mustOpen(t, dir, Options{})
	defer mustClose(t, db)
	if st.AcceptedEpoch != 3 || st.AcceptedLeader != "" || st.AcceptedLeadership != 0 {
		t.Fatalf("old directory: promise (%d, %q, %d), want (3, \"\", 0)", st.AcceptedEpoch, st.AcceptedLeader, st.AcceptedLeadership)
	}
}

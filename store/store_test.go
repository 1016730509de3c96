package store

import (
	"fmt"
	"testing"
)

func v(e int64, s uint64) Version { return Version{Epoch: e, Seq: s} }

func TestApplyInOrder(t *testing.T) {
	s := New(0)
	if _, err := s.Apply(Entry{Version: v(1, 2), Op: OpSet, Key: "a", Value: "x"}); err == nil {
		t.Fatal("applied an entry that skips seq 1")
	}
	mustApply(t, s, Entry{Version: v(1, 1), Op: OpNoop})
	mustApply(t, s, Entry{Version: v(1, 2), Op: OpSet, Key: "a", Value: "x"})
	mustApply(t, s, Entry{Version: v(2, 3), Op: OpDelete, Key: "a"})
	it, ok := s.Get("a")
	if !ok || !it.Deleted || it.Version != v(2, 3) {
		t.Fatalf("after delete: %+v %v", it, ok)
	}
	if s.Applied() != v(2, 3) {
		t.Fatalf("applied %s", s.Applied())
	}
	if keys := s.Keys(); len(keys) != 0 {
		t.Fatalf("deleted key listed: %v", keys)
	}
}

// TestApplyReplacingReturnsThePreviousItem: ApplyReplacing returns what
// Get returned for the key just before (a tombstone included), and
// nothing for a new key.
func TestApplyReplacingReturnsThePreviousItem(t *testing.T) {
	s := New(0)
	for i, e := range []Entry{
		{Version: v(1, 1), Op: OpSet, Key: "a", Value: "x"},
		{Version: v(1, 2), Op: OpSet, Key: "a", Value: "y"},
		{Version: v(1, 3), Op: OpDelete, Key: "a"},
		{Version: v(1, 4), Op: OpSet, Key: "a", Value: "z"},
		{Version: v(1, 5), Op: OpSet, Key: "b", Value: "w"},
	} {
		want, wantHad := s.Get(e.Key)
		prev, had, dup, err := s.ApplyReplacing(e)
		if err != nil || dup || prev != want || had != wantHad {
			t.Fatalf("entry %d: prev %+v had %v dup %v err %v; want %+v %v", i, prev, had, dup, err, want, wantHad)
		}
	}
}

func TestDuplicateRequestAppliedOnce(t *testing.T) {
	s := New(0)
	mustApply(t, s, Entry{Version: v(1, 1), Op: OpSet, Key: "k", Value: "1", ReqID: "c1"})
	mustApply(t, s, Entry{Version: v(1, 2), Op: OpSet, Key: "k", Value: "2", ReqID: "c2"})
	dup, err := s.Apply(Entry{Version: v(1, 3), Op: OpSet, Key: "k", Value: "1", ReqID: "c1"})
	if err != nil || !dup {
		t.Fatalf("retry of c1: dup=%v err=%v", dup, err)
	}
	if it, _ := s.Get("k"); it.Value != "2" {
		t.Fatalf("retried write applied twice: k=%q", it.Value)
	}
	if got, _ := s.Request("c1"); got != v(1, 1) {
		t.Fatalf("c1 version %s", got)
	}
}

func TestRequestRingEvictsOldest(t *testing.T) {
	s := New(3)
	for i := 1; i <= 5; i++ {
		mustApply(t, s, Entry{Version: v(1, uint64(i)), Op: OpSet, Key: "k", Value: "v", ReqID: fmt.Sprint("r", i)})
	}
	for i, want := range []bool{false, false, true, true, true} {
		if _, ok := s.Request(fmt.Sprint("r", i+1)); ok != want {
			t.Errorf("r%d remembered=%v, want %v", i+1, ok, want)
		}
	}
}

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	s := New(2)
	for i := 1; i <= 4; i++ {
		mustApply(t, s, Entry{Version: v(1, uint64(i)), Op: OpSet, Key: fmt.Sprint("k", i%2), Value: fmt.Sprint(i), ReqID: fmt.Sprint("r", i)})
	}
	snap := s.Snapshot()
	mustApply(t, s, Entry{Version: v(1, 5), Op: OpSet, Key: "k0", Value: "changed"})
	if snap.Items["k0"].Value != "4" {
		t.Fatal("snapshot shares memory with the store")
	}
	r := New(2)
	r.Restore(snap)
	if r.Applied() != v(1, 4) {
		t.Fatalf("restored position %s", r.Applied())
	}
	if it, _ := r.Get("k1"); it.Value != "3" {
		t.Fatalf("k1=%q", it.Value)
	}
	if _, ok := r.Request("r2"); ok {
		t.Fatal("evicted request came back")
	}
	if _, ok := r.Request("r4"); !ok {
		t.Fatal("request lost in restore")
	}
	// The restored ring keeps evicting in order.
	mustApply(t, r, Entry{Version: v(1, 5), Op: OpSet, Key: "z", ReqID: "r5"})
	if _, ok := r.Request("r3"); ok {
		t.Fatal("oldest request not evicted after restore")
	}
}

func TestVersionOrder(t *testing.T) {
	if !v(1, 9).Less(v(2, 1)) || v(2, 1).Less(v(1, 9)) || v(1, 1).Less(v(1, 1)) {
		t.Fatal("versions order by epoch, then seq")
	}
}

func mustApply(t *testing.T, s *Store, e Entry) {
	t.Helper()
	if _, err := s.Apply(e); err != nil {
		t.Fatal(err)
	}
}

package node

import "testing"

// closed reports whether ch is closed, without waiting.
func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestCommitWaitersReleaseUpToTheCommitIndex(t *testing.T) {
	var w commitWaiters
	seven, five, nine := w.wait(7), w.wait(5), w.wait(9)
	if again := w.wait(7); again != seven {
		t.Fatal("a second wait for seq 7 got its own channel; want the first one's")
	}
	w.release(4)
	if closed(five) || closed(seven) || closed(nine) {
		t.Fatal("commit 4 released a wait for seq 5 or later")
	}
	w.release(7)
	if !closed(five) || !closed(seven) {
		t.Fatal("commit 7 left a wait for seq 5 or 7 waiting")
	}
	if closed(nine) {
		t.Fatal("commit 7 released the wait for seq 9")
	}
	if len(w.seqs) != 1 || len(w.chs) != 1 {
		t.Fatalf("after commit 7: %d seqs and %d channels kept, want 1 each (seq 9)", len(w.seqs), len(w.chs))
	}
	w.release(7) // no change: nothing is closed twice
	w.release(100)
	if !closed(nine) || len(w.seqs) != 0 || len(w.chs) != 0 {
		t.Fatalf("commit 100: seq 9 released %v, %d seqs and %d channels kept", closed(nine), len(w.seqs), len(w.chs))
	}
	if w.wait(3); len(w.seqs) != 1 {
		t.Fatal("a wait after the releases was not recorded")
	}
}

// TestCommitAdvanceReleasesItsWaiters: the commit rule wakes the writes
// waiting for the seqs it commits, and only those; a write whose majority
// came would otherwise sleep until its next liveness look.
func TestCommitAdvanceReleasesItsWaiters(t *testing.T) {
	n := newUnstartedNode(t)
	l := newLeader(n, 1, nil, t.Context(), nil)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.voters.IDs = []string{n.cfg.ID, "n2", "n3"}
	l.lastSeq = 6 // without a data directory, this node's own match
	l.repl.peers["n2"] = &progress{}
	l.repl.peers["n3"] = &progress{}
	five, six := l.committing.wait(5), l.committing.wait(6)
	if l.repl.advanceCommitLocked() || closed(five) {
		t.Fatalf("no follower holds anything, yet commit %d released a wait", l.commit)
	}
	l.repl.peers["n2"].match = 5
	if !l.repl.advanceCommitLocked() || l.commit != 5 {
		t.Fatalf("commit %d after a follower took seq 5; want 5, moved", l.commit)
	}
	if !closed(five) {
		t.Fatal("commit 5 left the write at seq 5 waiting")
	}
	if closed(six) {
		t.Fatal("commit 5 released the write at seq 6")
	}
	l.repl.peers["n3"].match = 6
	l.repl.recomputeCommitLocked()
	if !closed(six) {
		t.Fatalf("commit %d left the write at seq 6 waiting", l.commit)
	}
}

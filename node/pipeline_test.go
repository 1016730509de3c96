package node

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/kvstore/kvstore/store"
)

// TestAPipelinedAppendWaitsForItsPredecessor: the server runs calls
// concurrently, so a pipelined Append may reach the replica before the one
// it follows. It waits until the position moves and is then applied in
// order; one whose predecessor never comes ends with its call's context,
// changing nothing. Without the pipelined mark the same Append is refused
// at once with the position (the leader backfills).
func TestAPipelinedAppendWaitsForItsPredecessor(t *testing.T) {
	r, _ := testReplica(t, "")
	ld := leadership{"n1", 1}
	if st, _, err := r.appendAt(5, ld, pos(0, 0), []store.Entry{{Version: pos(5, 1), Op: store.OpNoop}}, false); err != nil || !st.ok {
		t.Fatalf("first append: ok %v, %v", st.ok, err)
	}
	if st, _, err := r.appendAt(5, ld, pos(5, 2), []store.Entry{setEntry(pos(5, 3), "b", "2", "")}, false); err != nil || st.ok || st.applied != pos(5, 1) {
		t.Fatalf("not pipelined, after a gap: ok %v applied %s, %v; want refused at 5.1", st.ok, st.applied, err)
	}

	type result struct {
		st  standing
		err error
	}
	second := make(chan result, 1)
	go func() {
		st, _, err := r.appendEntries(t.Context(), 5, ld, pos(5, 2), []store.Entry{setEntry(pos(5, 3), "b", "2", "")}, false, true)
		second <- result{st, err}
	}()
	select {
	case res := <-second:
		t.Fatalf("a pipelined Append answered before its predecessor came: ok %v applied %s, %v", res.st.ok, res.st.applied, res.err)
	case <-time.After(50 * time.Millisecond): // it should still wait; it must not answer
	}
	if st, _, err := r.appendAt(5, ld, pos(5, 1), []store.Entry{setEntry(pos(5, 2), "a", "1", "")}, false); err != nil || !st.ok {
		t.Fatalf("the predecessor: ok %v, %v", st.ok, err)
	}
	res := <-second
	if res.err != nil || !res.st.ok || res.st.applied != pos(5, 3) {
		t.Fatalf("the pipelined Append after its predecessor: ok %v applied %s, %v; want ok at 5.3", res.st.ok, res.st.applied, res.err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	st, _, err := r.appendEntries(ctx, 5, ld, pos(5, 9), []store.Entry{setEntry(pos(5, 10), "c", "3", "")}, false, true)
	if !errors.Is(err, context.DeadlineExceeded) || st.ok {
		t.Fatalf("a pipelined Append whose predecessor never came: ok %v, %v; want the deadline", st.ok, err)
	}
	if got := r.applied(); got != pos(5, 3) {
		t.Fatalf("position %s after the abandoned Append, want 5.3", got)
	}

	// A later leadership's promise wakes a waiting Append, which is then
	// refused as stale.
	go func() {
		st, _, err := r.appendEntries(t.Context(), 5, ld, pos(5, 9), []store.Entry{setEntry(pos(5, 10), "c", "3", "")}, false, true)
		second <- result{st, err}
	}()
	time.Sleep(10 * time.Millisecond) // let it wait (if it has not yet, it is refused at once: the same outcome)
	if st, _ := r.prepare(6, leadership{"n2", 2}); st.refused {
		t.Fatal("prepare of epoch 6 refused")
	}
	if res := <-second; res.err != nil || !res.st.refused {
		t.Fatalf("a waiting Append of epoch 5 after a promise of 6: refused %v, %v; want refused", res.st.refused, res.err)
	}
}

// TestPipelinedAnswersOnlyMoveForward: with several Appends in flight their
// answers come in any order; a taken one never moves match, received or
// next back, and a refused one sets them to what it names (the Appends
// behind it are void). A failed call sends the next Append from the last
// position answered, one at a time.
func TestPipelinedAnswersOnlyMoveForward(t *testing.T) {
	h := history{epoch: 5, base: pos(4, 10), last: 40}
	p := newProgress("f", 11)
	if !p.probing {
		t.Fatal("a new follower's progress should probe")
	}
	if !p.answer(h, pos(5, 20), true, false, false) || p.probing {
		t.Fatal("an answer taking the Append should end probing")
	}
	p.next = 41 // Appends up to 40 in flight
	if !p.answer(h, pos(5, 30), true, false, false) || p.match != 30 || p.next != 41 {
		t.Fatalf("answer 5.30 with Appends in flight: match %d next %d; want 30, 41", p.match, p.next)
	}
	if !p.answer(h, pos(5, 25), true, false, false) || p.match != 30 || p.received != 30 || p.next != 41 {
		t.Fatalf("a late answer 5.25 after 5.30: match %d received %d next %d; want 30, 30, 41", p.match, p.received, p.next)
	}
	if !p.answerEarly(h, pos(5, 35), pos(5, 28), true, 100) || p.received != 35 || p.match != 30 {
		t.Fatalf("early answer 5.35 (5.28 on disk): received %d match %d; want 35, 30", p.received, p.match)
	}
	if !p.answerEarly(h, pos(5, 32), pos(5, 31), true, 100) || p.received != 35 || p.match != 31 || p.next != 41 {
		t.Fatalf("a late early answer 5.32 (5.31 on disk): received %d match %d next %d; want 35, 31, 41", p.received, p.match, p.next)
	}
	p.failed()
	if !p.probing || p.next != 36 {
		t.Fatalf("after a failed call: probing %v next %d; want true, 36", p.probing, p.next)
	}
	if p.answer(h, pos(5, 33), false, false, false) || p.match != 33 || p.next != 34 || !p.probing {
		t.Fatalf("refused at 5.33: match %d next %d probing %v; want 33, 34, true", p.match, p.next, p.probing)
	}
	if p.answerEarly(h, pos(5, 38), pos(5, 33), false, 100) || p.received != 38 || p.next != 39 {
		t.Fatalf("refused early at 5.38: received %d next %d; want 38, 39", p.received, p.next)
	}
	q := newProgress("g", 11)
	q.next = 30
	q.failed()
	if q.next != 11 {
		t.Fatalf("a call failed before any answer: next %d, want the first seq sent, 11", q.next)
	}
}

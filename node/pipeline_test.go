package node

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/kvstore/kvstore/clock"
	"github.com/kvstore/kvstore/internal/soon"
	"github.com/kvstore/kvstore/rpc/kvpb"
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
	// A process that took no Append of this leadership yet (a follower
	// that restarted) has nothing in flight to wait for: it answers at once.
	if st, _, err := r.appendEntries(t.Context(), 5, ld, pos(5, 3), nil, false, true); err != nil || st.ok || st.applied != pos(0, 0) {
		t.Fatalf("pipelined, before any Append of the leadership: ok %v applied %s, %v; want refused at once at 0.0", st.ok, st.applied, err)
	}
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
	waitWaiting(t, r)
	select {
	case res := <-second:
		t.Fatalf("a pipelined Append answered before its predecessor came: ok %v applied %s, %v", res.st.ok, res.st.applied, res.err)
	default:
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
	waitWaiting(t, r)
	if st, _ := r.prepare(6, leadership{"n2", 2}); st.refused {
		t.Fatal("prepare of epoch 6 refused")
	}
	if res := <-second; res.err != nil || !res.st.refused {
		t.Fatalf("a waiting Append of epoch 5 after a promise of 6: refused %v, %v; want refused", res.st.refused, res.err)
	}
}

// TestAPipelinedAppendAfterASnapshotWaits: a process whose first message
// of a leadership was a snapshot (a new or recovering follower) took that
// leadership's state, so a pipelined Append that overtook its predecessor
// waits for it there too, rather than being refused at once, which the
// leader counts toward sending one Append at a time (maxUnordered).
func TestAPipelinedAppendAfterASnapshotWaits(t *testing.T) {
	r, _ := testReplica(t, "")
	ld := leadership{"n1", 1}
	snap := store.Snapshot{Applied: pos(5, 3), Items: map[string]store.Item{"a": {Value: "1", Version: pos(5, 2)}}}
	if st, _, err := r.installSnapshot(5, ld, snap); err != nil || !st.ok {
		t.Fatalf("install: ok %v, %v", st.ok, err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	st, _, err := r.appendEntries(ctx, 5, ld, pos(5, 4), []store.Entry{setEntry(pos(5, 5), "c", "3", "")}, false, true)
	if !errors.Is(err, context.DeadlineExceeded) || st.ok {
		t.Fatalf("a pipelined Append past the snapshot's position: ok %v applied %s, %v; want it to wait for its predecessor until its deadline", st.ok, st.applied, err)
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

// TestAFailureOvertakenByATakenAppendIsHarmless: a call that failed after
// one sent later took its Append (a barrier that timed out on a slow disk
// while entries went beside it) voids nothing; a failure with nothing
// taken after it does.
func TestAFailureOvertakenByATakenAppendIsHarmless(t *testing.T) {
	w := newAppendWindow(t.Context(), 2)
	first := w.add(&kvpb.AppendRequest{AnswerEarly: true}, clock.Instant{})
	second := w.add(&kvpb.AppendRequest{Entries: []*kvpb.Entry{{Key: "k"}}, AnswerEarly: true}, clock.Instant{})
	if !w.barrier || !w.room(2) || w.room(1) || w.early != 1 {
		t.Fatalf("a barrier and one Append in flight: barrier %v, room for 2 %v, for 1 %v, early bytes %d; want true, true, false, 1", w.barrier, w.room(2), w.room(1), w.early)
	}
	first.err, second.err = context.DeadlineExceeded, context.DeadlineExceeded
	if w.overtaken(first) {
		t.Fatal("a failure with nothing taken after it was taken as harmless")
	}
	w.taken = second.id
	if !w.overtaken(first) || w.overtaken(second) {
		t.Fatalf("after the second call took its Append: first overtaken %v, second %v; want true, false", w.overtaken(first), w.overtaken(second))
	}
	w.finished(first)
	w.finished(second)
	if w.barrier || w.calls != 0 || w.early != 0 {
		t.Fatalf("all finished: barrier %v calls %d early %d", w.barrier, w.calls, w.early)
	}
}

// TestBesideAppendsInFlightOnlyFullBatchesGo: with an Append in flight,
// the next goes only once as many entries wait as the last one carried,
// or when one of them is of a key the follower holds (a write waits for
// that follower to apply it): a small Append beside one in flight would
// cost the follower a disk write of its own.
func TestBesideAppendsInFlightOnlyFullBatchesGo(t *testing.T) {
	cfg := DefaultConfig()
	cfg.AppendsInFlight = 4
	l := logLeader(t, &Node{cfg: cfg})
	add := func(keys ...string) { appendSets(l, keys...) }
	p := &progress{id: "f", next: l.base.Seq + 1}
	w := newAppendWindow(t.Context(), cfg.AppendsInFlight)
	send := func(want int, pipelined bool) {
		t.Helper()
		req, _ := l.repl.buildAppend(p, w, false)
		if req == nil || len(req.Entries) != want || req.Pipelined != pipelined {
			t.Fatalf("want an Append of %d entries (pipelined %v), got %v", want, pipelined, req)
		}
		w.add(req, clock.Instant{})
	}
	add("a", "b", "c")
	send(3, false)
	add("d", "e")
	if req, _ := l.repl.buildAppend(p, w, false); req != nil {
		t.Fatalf("2 entries went beside an Append of 3 in flight: %v", req)
	}
	add("f")
	send(3, true)
	add("g")
	l.leases.held.grant("h", "f", 1, clock.Instant{})
	if req, _ := l.repl.buildAppend(p, w, false); req != nil {
		t.Fatalf("1 entry of a key the follower does not hold went beside Appends in flight: %v", req)
	}
	add("h")
	send(2, true)
}

// waitWaiting waits until an Append waits in r for its predecessor.
func waitWaiting(t *testing.T, r *replica) {
	t.Helper()
	soon.Succeeds(t, 10*time.Second, func() error {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.waiting != 1 {
			return fmt.Errorf("%d Appends waiting, want 1", r.waiting)
		}
		return nil
	})
}

// TestAnOlderFollowerGetsOneAppendAtATime: a follower that refuses at once
// the pipelined Appends that overtook their predecessors (an older one,
// which ignores the mark) gets one Append at a time after maxUnordered
// such refusals, for the rest of the leadership; a refusal naming a
// position at or past prev (a retry it applied already) does not count.
func TestAnOlderFollowerGetsOneAppendAtATime(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxBatch = 10 // 40 entries wait: four batches
	l := logLeader(t, &Node{cfg: cfg, rep: newReplica(16, nil)})
	for i := range 40 {
		appendSets(l, fmt.Sprint("k", i))
	}
	refuse := func(p *progress, prev, at uint64) appendOutcome {
		req := &kvpb.AppendRequest{Epoch: 3, Prev: toPos(pos(3, prev)), Pipelined: true}
		resp := &kvpb.AppendResponse{Ok: false, AcceptedEpoch: 3, Applied: toPos(pos(3, at))}
		return l.repl.handleAppend(p, &appendCall{req: req, resp: resp}, false)
	}
	p := &progress{id: "f", next: 21, received: 20, match: 20}
	for i := range maxUnordered {
		if refuse(p, 25, 20) != appendRefused {
			t.Fatal("a refused Append was not taken as refused")
		}
		if i < maxUnordered-1 && refuse(p, 20, 22) != appendRefused {
			t.Fatal("a refused Append was not taken as refused")
		}
	}
	if p.unordered != maxUnordered {
		t.Fatalf("unordered %d after %d refusals below prev, want %d", p.unordered, maxUnordered, maxUnordered)
	}
	p.probing = false
	w := newAppendWindow(t.Context(), DefaultAppendsInFlight)
	req, _ := l.repl.buildAppend(p, w, false)
	if req == nil {
		t.Fatal("no Append with nothing in flight")
	}
	w.add(req, clock.Instant{})
	if req, _ := l.repl.buildAppend(p, w, false); req != nil {
		t.Fatalf("a second Append in flight to a follower that refuses overtaking ones: %v", req)
	}
	p.unordered = 0
	if req, _ := l.repl.buildAppend(p, w, false); req == nil || !req.Pipelined {
		t.Fatalf("to a follower that waits for overtaken Appends a second should go, pipelined: %v", req)
	}
}

// logLeader is a leader of epoch 3 on n with no peers, its log empty after
// position 2.10.
func logLeader(t *testing.T, n *Node) *leader {
	l := newLeader(n, 3, nil, t.Context(), nil)
	l.entryLog = entryLog{base: store.Version{Epoch: 2, Seq: 10}}
	l.lastSeq = l.base.Seq
	return l
}

// appendSets adds to l's log an entry setting each key, in order.
func appendSets(l *leader, keys ...string) {
	for _, k := range keys {
		l.lastSeq++
		l.log = append(l.log, setEntry(pos(3, l.lastSeq), k, "v", ""))
	}
}

// TestAnOldAnswerBelowTheLogSendsNoSnapshot: the Appends of a window are
// answered in any order, and the log is trimmed once every follower has
// its start on disk. An answer naming a position the log has trimmed
// since, from a follower known to hold the log's start, is old news if it
// took its Append or came after a later Append's answer: the follower is
// not sent a whole snapshot for it, and what it says is on disk still
// counts. A fresh refusal below the log, an answer asking to be
// reconciled, or one from a follower not known to hold the log's start,
// still gets a snapshot.
func TestAnOldAnswerBelowTheLogSendsNoSnapshot(t *testing.T) {
	type answer struct {
		ok, early, barrier, reconcile bool
		received, applied             uint64
	}
	for _, tc := range []struct {
		name         string
		late         bool
		a            answer
		match        uint64
		wantSnapshot bool
		wantMatch    uint64
	}{
		{"late early answer", true, answer{ok: true, early: true, received: 25, applied: 22}, 40, false, 40},
		{"early answer that took its Append", false, answer{ok: true, early: true, received: 25, applied: 22}, 40, false, 40},
		{"late answer from the disk", true, answer{ok: true, applied: 25}, 40, false, 40},
		{"late refusal", true, answer{applied: 25}, 40, false, 40},
		{"late barrier whose disk moved on", true, answer{ok: true, early: true, barrier: true, received: 25, applied: 42}, 40, false, 42},
		{"fresh refusal below the log", false, answer{applied: 25}, 40, true, 0},
		{"late answer asking to be reconciled", true, answer{ok: true, reconcile: true, applied: 25}, 40, true, 0},
		{"late answer from a follower behind the log", true, answer{ok: true, early: true, received: 25, applied: 22}, 25, true, 0},
	} {
		l := logLeader(t, &Node{cfg: DefaultConfig(), rep: newReplica(16, nil)})
		for i := range 40 {
			appendSets(l, fmt.Sprint("k", i)) // seqs 11 to 50
		}
		// Trimmed to 30, the lowest position every follower has on disk.
		l.entryLog.base, l.entryLog.log = pos(3, 30), l.entryLog.log[20:]
		p := &progress{id: "f", next: 51, received: 45, match: tc.match, answered: true, reachable: true}
		req := &kvpb.AppendRequest{Epoch: 3, Prev: toPos(pos(3, 22)), Pipelined: true, AnswerEarly: tc.a.early}
		if !tc.a.barrier {
			req.Entries = []*kvpb.Entry{toEntry(l.entryLog.log[0])}
		}
		resp := &kvpb.AppendResponse{Ok: tc.a.ok, Reconcile: tc.a.reconcile, AcceptedEpoch: 3, Applied: toPos(pos(3, tc.a.applied))}
		if tc.a.early {
			resp.Received = toPos(pos(3, tc.a.received))
		}
		got := l.repl.handleAppend(p, &appendCall{req: req, resp: resp}, tc.late)
		if p.snapshot != tc.wantSnapshot {
			t.Errorf("%s: snapshot %v, want %v (progress %+v)", tc.name, p.snapshot, tc.wantSnapshot, *p)
		}
		if !tc.wantSnapshot && (got != appendTaken || p.match != tc.wantMatch || p.next != 51 || p.received != 45) {
			t.Errorf("%s: outcome %v, progress %+v; want taken, match %d, next 51, received 45", tc.name, got, *p, tc.wantMatch)
		}
	}
}

// TestAnAnswerIsLateAfterALaterCallsWasTaken: the replicator tells
// handleAppend an answer is late when a call sent after it had its answer
// taken, and only then.
func TestAnAnswerIsLateAfterALaterCallsWasTaken(t *testing.T) {
	w := newAppendWindow(t.Context(), 4)
	var calls []*appendCall
	for range 3 {
		calls = append(calls, w.add(&kvpb.AppendRequest{Entries: []*kvpb.Entry{{}}}, clock.Instant{}))
	}
	for _, c := range calls {
		if w.late(c) {
			t.Fatalf("call %d late with no answer taken", c.id)
		}
	}
	w.taken = calls[1].id
	if !w.late(calls[0]) || w.late(calls[1]) || w.late(calls[2]) {
		t.Errorf("after call %d was taken: late %v %v %v, want true false false", calls[1].id, w.late(calls[0]), w.late(calls[1]), w.late(calls[2]))
	}
}

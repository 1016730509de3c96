package node

import (
	"testing"
	"time"

	"github.com/kvstore/kvstore/store"
)

// TestEarlyAnswerOnlyOnceThePromiseIsOnDisk: a follower with a data
// directory answers entries early (before they are on disk) only when the
// leader asks, its promise to that leader is on disk and it needs no
// reconciling; an early answer reports, as on disk, only a position whose
// submission is durable. Heartbeats (no entries) always wait for the disk.
func TestEarlyAnswerOnlyOnceThePromiseIsOnDisk(t *testing.T) {
	r, _ := testReplica(t, t.TempDir())
	waitSubmitted(t, r.reconciled())
	ld := leadership{"n1", 1}
	r.disk.SetCommitDelay(time.Hour) // nothing submitted from here on is durable
	t.Cleanup(func() { _ = r.disk.Crash() })

	// The promise to epoch 5 is submitted by this Append, not durable: no
	// early answer, the caller waits for the submission.
	st, p, err := r.appendAt(5, ld, pos(0, 0), []store.Entry{{Version: pos(5, 1), Op: store.OpNoop}}, true)
	if err != nil || !st.ok || st.early || p == nil {
		t.Fatalf("first append of epoch 5: ok %v early %v pending %v, %v; want ok, not early, a submission", st.ok, st.early, p != nil, err)
	}
	if p.Durable() {
		t.Fatal("a submission behind a stalled disk is durable")
	}
	r.mu.Lock()
	r.promise = nil // as if that promise had been made durable (by Prepare, say)
	r.mu.Unlock()

	// Asked early, promise durable: answered at once, with nothing known on
	// disk since the store was opened.
	st, p, err = r.appendAt(5, ld, pos(5, 1), []store.Entry{setEntry(pos(5, 2), "k", "v", "")}, true)
	if err != nil || !st.ok || !st.early || p != nil || st.applied != pos(5, 2) || st.onDisk != (store.Version{}) {
		t.Fatalf("early append: ok %v early %v pending %v applied %s on disk %s, %v; want early at 5.2, nothing on disk", st.ok, st.early, p != nil, st.applied, st.onDisk, err)
	}
	// Not asked: the answer waits.
	if st, p, _ = r.appendAt(5, ld, pos(5, 2), []store.Entry{setEntry(pos(5, 3), "k", "w", "")}, false); st.early || p == nil {
		t.Fatalf("append not asked early: early %v pending %v; want a wait", st.early, p != nil)
	}
	// A heartbeat not asked early waits for everything taken so far; asked
	// early, for the oldest entries not known on disk.
	if st, p, _ = r.appendAt(5, ld, pos(5, 3), nil, false); st.early || p != r.last {
		t.Fatalf("heartbeat: early %v; want a wait for the latest submission", st.early)
	}
	r.mu.Lock()
	oldest := r.flushing[0].p
	r.mu.Unlock()
	if st, p, _ = r.appendAt(5, ld, pos(5, 3), nil, true); !st.early || p != oldest || p == r.last {
		t.Fatalf("heartbeat asked early: early %v; want early, waiting for the oldest submission not on disk", st.early)
	}
	// Entries that do not follow: refused, at once when asked early (the
	// leader learns the position without waiting for the disk).
	if st, p, _ = r.appendAt(5, ld, pos(5, 9), []store.Entry{setEntry(pos(5, 10), "k", "x", "")}, true); st.ok || !st.early || p != nil || st.applied != pos(5, 3) {
		t.Fatalf("append after a gap, asked early: ok %v early %v applied %s; want refused at once at 5.3", st.ok, st.early, st.applied)
	}
	if st, p, _ = r.appendAt(5, ld, pos(5, 9), []store.Entry{setEntry(pos(5, 10), "k", "x", "")}, false); st.ok || st.early || p != r.last {
		t.Fatalf("append after a gap: ok %v early %v; want refused after the disk", st.ok, st.early)
	}
	if err := r.disk.Crash(); err != nil { // ends the stalled commit
		t.Log(err)
	}
}

// TestOnDiskFollowsDurableSubmissions: durableLocked moves to the position
// of the latest submission found durable, in order, and forgets what a
// restore replaced.
func TestOnDiskFollowsDurableSubmissions(t *testing.T) {
	r, _ := testReplica(t, t.TempDir())
	waitSubmitted(t, r.reconciled())
	ld := leadership{"n1", 1}
	st, p, _ := r.appendAt(5, ld, pos(0, 0), []store.Entry{{Version: pos(5, 1), Op: store.OpNoop}}, true)
	waitSubmitted(t, p)
	st, _, _ = r.appendAt(5, ld, pos(5, 1), []store.Entry{setEntry(pos(5, 2), "a", "1", "")}, true)
	if !st.early {
		t.Fatalf("append with the promise on disk: early %v, want true", st.early)
	}
	waitSubmitted(t, r.last)
	r.mu.Lock()
	got := r.durableLocked()
	r.mu.Unlock()
	if got != pos(5, 2) {
		t.Fatalf("on disk after both submissions are durable: %s, want 5.2", got)
	}
	v := store.New(0)
	if _, err := v.Apply(store.Entry{Version: pos(6, 1), Op: store.OpNoop}); err != nil {
		t.Fatal(err)
	}
	next := leadership{"n2", 2}
	r.prepare(6, next)
	restored, err := r.restore(6, next, v.View())
	if err != nil {
		t.Fatal(err)
	}
	waitSubmitted(t, restored)
	r.mu.Lock()
	got, marks := r.durableLocked(), len(r.flushing)
	r.mu.Unlock()
	if got != (store.Version{}) || marks != 0 {
		t.Fatalf("after a restore: on disk %s, %d marks; want none", got, marks)
	}
}

// TestEarlyAnswersMoveReceivedNotMatch: the leader takes an early answer's
// received position as applied (its holder dropped older copies) and next
// to send, but counts toward the commit only what the answer says is on
// disk, and only on this epoch's history. A normal answer sets both.
func TestEarlyAnswersMoveReceivedNotMatch(t *testing.T) {
	h := history{epoch: 5, base: pos(4, 10), last: 20}
	p := newProgress("f", 11)
	p.answerEarly(h, pos(5, 15), pos(4, 10), true, 100)
	if p.received != 15 || p.next != 16 || p.match != 10 || !p.unflushed() {
		t.Fatalf("early answer 5.15 with the base on disk: received %d next %d match %d; want 15, 16, 10", p.received, p.next, p.match)
	}
	p.answerEarly(h, pos(5, 18), pos(3, 40), true, 100) // on disk: of another history
	if p.received != 18 || p.match != 10 {
		t.Fatalf("on disk of another history: received %d match %d; want 18, 10", p.received, p.match)
	}
	p.answerEarly(h, pos(5, 19), pos(5, 17), true, 100)
	if p.match != 17 || p.received != 19 {
		t.Fatalf("on disk 5.17: match %d received %d; want 17, 19", p.match, p.received)
	}
	p.answerEarly(h, pos(5, 20), pos(5, 12), true, 100) // an older report never lowers match
	if p.match != 17 {
		t.Fatalf("on disk 5.12 after 5.17: match %d, want 17", p.match)
	}
	p.answer(h, pos(5, 20), true, false, false)
	if p.match != 20 || p.received != 20 || p.unflushed() {
		t.Fatalf("normal answer 5.20: match %d received %d; want 20, 20", p.match, p.received)
	}
	p.answer(h, pos(5, 12), true, true, false) // reconcile: lost its store
	if p.match != 0 || p.received != 0 || !p.snapshot {
		t.Fatalf("reconcile answer: match %d received %d snapshot %v; want 0, 0, true", p.match, p.received, p.snapshot)
	}
}

// TestWhenTheLeaderAsksEarly: an Append asks for an early answer when it
// carries a key the follower holds, or when the follower has entries it
// answered early that it has not reported on disk (so that they do not
// queue behind its disk; an empty Append then waits for that disk), but
// not past maxEarlyBytes of such entries while the follower's disk reports
// no progress: a stalled disk then holds replication back rather than
// letting its queue grow.
func TestWhenTheLeaderAsksEarly(t *testing.T) {
	h := history{epoch: 5, base: pos(4, 10), last: 1000}
	p := newProgress("f", 11)
	if p.asksEarly(false, true, 0) || !p.asksEarly(true, true, 0) || p.asksEarly(false, false, 0) {
		t.Fatal("flushed follower: want early only for a held key")
	}
	p.answerEarly(h, pos(5, 15), pos(4, 10), true, maxEarlyBytes/2)
	if !p.asksEarly(false, true, 0) || !p.asksEarly(false, false, 0) {
		t.Fatal("with entries answered early and not on disk: every Append should ask early")
	}
	p.answerEarly(h, pos(5, 20), pos(4, 10), true, maxEarlyBytes/2)
	if p.early != maxEarlyBytes || !p.unflushed() {
		t.Fatalf("early %d unflushed %v, want %d, true", p.early, p.unflushed(), maxEarlyBytes)
	}
	if p.asksEarly(true, true, 0) || p.asksEarly(false, true, 0) {
		t.Fatal("past maxEarlyBytes an Append of entries should wait for the disk")
	}
	if !p.asksEarly(false, false, 0) {
		t.Fatal("an empty Append should still wait for the disk early (it adds nothing to the queue)")
	}
	q := newProgress("g", 11)
	q.answerEarly(h, pos(5, 15), pos(4, 10), true, maxEarlyBytes/2)
	if q.asksEarly(true, true, maxEarlyBytes/2) || !q.asksEarly(true, true, maxEarlyBytes/4) {
		t.Fatal("the bytes asked early and still in flight should count toward maxEarlyBytes")
	}
	p.answerEarly(h, pos(5, 25), pos(5, 12), true, 100) // the disk moved on: slow, not stalled
	if p.early != 100 || !p.asksEarly(false, true, 0) {
		t.Fatalf("after the disk moved on: early %d; want 100, asking early again", p.early)
	}
	p.answerEarly(h, pos(5, 25), pos(5, 25), true, 0) // the disk caught up
	if p.early != 0 || p.unflushed() || p.asksEarly(false, true, 0) {
		t.Fatalf("after the disk caught up: early %d unflushed %v; want 0, false", p.early, p.unflushed())
	}
}

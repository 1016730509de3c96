package node

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/kvstore/kvstore/rpc"
	"github.com/kvstore/kvstore/store"
)

// TestAppendBatchesStayUnderTheByteBudget builds the Appends a follower far
// behind receives: each one holds at most MaxBatchBytes of keys, values and
// request ids (an entry over the budget travels alone), they follow each
// other without a gap, and together they carry every entry. Without the
// budget, 1024 values of 1 MiB would make a 1 GiB Append, over
// rpc.MaxMsgSize, and the follower could never catch up.
func TestAppendBatchesStayUnderTheByteBudget(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxBatchBytes = 10_000
	n := &Node{cfg: cfg}
	l := newLeader(n, 3, nil, t.Context(), nil)
	l.entryLog = entryLog{base: store.Version{Epoch: 2, Seq: 10}}
	sizes := []int{100, 3000, 4000, 2500, 12_000, 1, 9000, 9000, 500}
	for i, size := range sizes {
		seq := l.base.Seq + uint64(i) + 1
		l.log = append(l.log, store.Entry{Version: store.Version{Epoch: 3, Seq: seq}, Op: store.OpSet,
			Key: fmt.Sprint("k", i), Value: strings.Repeat("v", size), ReqID: fmt.Sprint("r", i)})
		l.lastSeq = seq
	}
	p := &progress{next: l.base.Seq + 1}
	var got []int
	for p.next <= l.lastSeq {
		from := p.next
		req, _ := l.repl.buildAppend(p, newAppendWindow(t.Context(), 1), false)
		if req.Snapshot != nil || len(req.Entries) == 0 {
			t.Fatalf("at seq %d: an Append with no entries (snapshot %v)", from, req.Snapshot != nil)
		}
		if req.Prev.Seq != from-1 {
			t.Fatalf("Append after %d, want after %d", req.Prev.Seq, from-1)
		}
		bytes := 0
		for _, e := range req.Entries {
			bytes += len(e.Key) + len(e.Value) + len(e.ReqId)
		}
		if len(req.Entries) > 1 && bytes > cfg.MaxBatchBytes {
			t.Errorf("an Append of %d entries carries %d bytes, over MaxBatchBytes %d", len(req.Entries), bytes, cfg.MaxBatchBytes)
		}
		if size := proto.Size(req); size > rpc.MaxMsgSize {
			t.Errorf("an Append of %d bytes, over rpc.MaxMsgSize", size)
		}
		got = append(got, len(req.Entries))
		if p.next != req.Entries[len(req.Entries)-1].Seq+1 {
			t.Fatalf("after an Append up to %d, next %d", req.Entries[len(req.Entries)-1].Seq, p.next)
		}
	}
	// With 4 bytes of key and request id each: 104+3004+4004+2504 fit in
	// 10 000; 12 004 travels alone; then 5+9004, then 9004+504.
	if want := []int{4, 1, 2, 2}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("entries per Append %v, want %v", got, want)
	}
}

// TestCommitRule is the commit rule with no network: a majority of the
// voters' matched seqs, from this epoch's no-op on, never going back.
func TestCommitRule(t *testing.T) {
	abc := []string{"a", "b", "c"}
	for _, tc := range []struct {
		name          string
		voters        []string
		match         map[string]uint64
		commit, start uint64
		want          uint64
	}{
		{"a majority's seq", abc, map[string]uint64{"a": 9, "b": 7, "c": 2}, 0, 1, 7},
		{"one voter alone commits nothing", abc, map[string]uint64{"a": 9}, 0, 1, 0},
		{"older than the no-op: not by counting", abc, map[string]uint64{"a": 9, "b": 4, "c": 4}, 0, 5, 0},
		{"the no-op itself commits", abc, map[string]uint64{"a": 9, "b": 5, "c": 4}, 0, 5, 5},
		{"never goes back", abc, map[string]uint64{"a": 9, "b": 3, "c": 3}, 6, 1, 6},
		{"a follower that lost its place does not lower it", abc, map[string]uint64{"a": 9, "b": 0, "c": 0}, 6, 1, 6},
		{"non-voters do not count", abc, map[string]uint64{"a": 9, "x": 9, "y": 9}, 0, 1, 0},
		{"one voter: its own durable seq", []string{"a"}, map[string]uint64{"a": 4}, 2, 1, 4},
		{"four voters need three", []string{"a", "b", "c", "d"}, map[string]uint64{"a": 9, "b": 8, "c": 2, "d": 1}, 0, 1, 2},
		{"no voters: no commit", nil, map[string]uint64{"a": 9}, 3, 1, 3},
	} {
		if got := commitRule(tc.voters, tc.match, tc.commit, tc.start); got != tc.want {
			t.Errorf("%s: commitRule(%v, %v, commit %d, start %d) = %d, want %d", tc.name, tc.voters, tc.match, tc.commit, tc.start, got, tc.want)
		}
	}
}

// TestProgressAnswer is how a follower's answer to an Append moves its
// progress: on this epoch's history it matches there and is sent what
// follows; off it, or asking to be reconciled, it needs a snapshot.
func TestProgressAnswer(t *testing.T) {
	v := func(e int64, s uint64) store.Version { return store.Version{Epoch: e, Seq: s} }
	h := history{epoch: 3, base: v(2, 10), last: 15}
	type want struct {
		match, next uint64
		snapshot    bool
	}
	for _, tc := range []struct {
		name                    string
		applied                 store.Version
		ok, reconcile, snapshot bool
		want                    want
	}{
		{"at an entry of the log", v(3, 13), true, false, false, want{13, 14, false}},
		{"at the log's last entry", v(3, 15), true, false, false, want{15, 16, false}},
		{"at the log's base, of an older epoch", v(2, 10), true, false, false, want{10, 11, false}},
		{"refused, but on the history: resend from there", v(3, 12), false, false, false, want{12, 13, false}},
		{"an older epoch after the base: off the history", v(2, 12), false, false, false, want{0, 7, true}},
		{"before the log: a snapshot", v(3, 9), false, false, false, want{0, 7, true}},
		{"beyond the log (lost memory of a later epoch?)", v(3, 16), false, false, false, want{0, 7, true}},
		{"asks to be reconciled, even on the history", v(3, 13), true, true, false, want{0, 7, true}},
		{"took a snapshot", v(3, 15), true, false, true, want{15, 16, false}},
		{"took a snapshot at a position the log trimmed since", v(3, 8), true, false, true, want{8, 9, false}},
		{"refused a snapshot off the history", v(1, 4), false, false, true, want{0, 7, true}},
	} {
		p := newProgress("b", 7)
		p.answer(h, tc.applied, tc.ok, tc.reconcile, tc.snapshot)
		got := want{p.match, p.next, p.snapshot}
		if got != tc.want || !p.reachable || !p.answered {
			t.Errorf("%s: progress %+v (reachable %v, answered %v), want %+v", tc.name, got, p.reachable, p.answered, tc.want)
		}
		if pending := p.pending(h.last); pending != (got.snapshot || got.next <= h.last) {
			t.Errorf("%s: pending %v with %+v at last %d", tc.name, pending, got, h.last)
		}
	}
	p := newProgress("b", 7)
	p.answer(h, v(3, 15), true, false, false)
	if p.pending(h.last) {
		t.Error("a follower at the log's last entry has something pending")
	}
	p.failed()
	if p.reachable || !p.answered || p.match != 15 {
		t.Errorf("after a failed Append: %+v; want unreachable, still answered at 15", *p)
	}
}

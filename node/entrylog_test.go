package node

import (
	"slices"
	"testing"

	"github.com/kvstore/kvstore/store"
)

// logOf is an entry log after base (epoch 2) holding the entries of epoch
// 3 from base.Seq+1 to last.
func logOf(base, last uint64) *entryLog {
	g := &entryLog{}
	g.restart(store.Version{Epoch: 2, Seq: base}, store.Entry{Version: store.Version{Epoch: 3, Seq: base + 1}, Op: store.OpNoop})
	for s := base + 2; s <= last; s++ {
		g.add(store.Entry{Version: store.Version{Epoch: 3, Seq: s}, Op: store.OpSet, Key: "k", Value: "v"})
	}
	return g
}

// TestEntryLogPosAt: the log answers for base and its own entries only.
func TestEntryLogPosAt(t *testing.T) {
	g := logOf(10, 15)
	for _, tc := range []struct {
		seq uint64
		ok  bool
		at  store.Version
	}{
		{9, false, store.Version{}},
		{10, true, store.Version{Epoch: 2, Seq: 10}},
		{11, true, store.Version{Epoch: 3, Seq: 11}},
		{15, true, store.Version{Epoch: 3, Seq: 15}},
		{16, false, store.Version{}},
	} {
		if at, ok := g.posAt(tc.seq); ok != tc.ok || at != tc.at {
			t.Errorf("posAt(%d) = %v, %v; want %v, %v", tc.seq, at, ok, tc.at, tc.ok)
		}
	}
	if h := g.history(3); h != (history{epoch: 3, base: store.Version{Epoch: 2, Seq: 10}, last: 15}) {
		t.Errorf("history = %+v", h)
	}
	if b := g.batch(12, 2, 1<<20); len(b) != 2 || b[0].Version.Seq != 12 || b[1].Version.Seq != 13 {
		t.Errorf("batch(12, 2 entries) = %v, want seqs 12 and 13", b)
	}
	if b := g.batch(15, 10, 1<<20); len(b) != 1 || b[0].Version.Seq != 15 {
		t.Errorf("batch(15, 10 entries) = %v, want seq 15 alone", b)
	}
}

// TestEntryLogBatchLimits: a batch stops at maxN entries and at maxBytes
// (an entry larger than that travels alone), and, being the log's own
// entries, cannot be appended to in place.
func TestEntryLogBatchLimits(t *testing.T) {
	g := logOf(10, 20) // entries 12 to 20 carry 2 bytes each ("k", "v")
	for _, tc := range []struct {
		next           uint64
		maxN, maxBytes int
		want           []uint64
	}{
		{12, 3, 1 << 20, []uint64{12, 13, 14}},
		{12, 100, 5, []uint64{12, 13}},
		{12, 100, 1, []uint64{12}}, // larger than maxBytes: alone
		{19, 100, 1 << 20, []uint64{19, 20}},
		{11, 2, 1 << 20, []uint64{11, 12}}, // the no-op, 0 bytes
	} {
		b := g.batch(tc.next, tc.maxN, tc.maxBytes)
		var got []uint64
		for _, e := range b {
			got = append(got, e.Version.Seq)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("batch(%d, %d, %d) = seqs %v, want %v", tc.next, tc.maxN, tc.maxBytes, got, tc.want)
		}
	}
	b := g.batch(12, 2, 1<<20)
	_ = append(b, store.Entry{Key: "overwritten"})
	if at, _ := g.posAt(14); at.Seq != 14 || g.log[14-g.base.Seq-1].Key != "k" {
		t.Errorf("appending to a batch wrote into the log: entry 14 is %+v", g.log[14-g.base.Seq-1])
	}
}

// TestEntryLogTrim: the log drops what every follower has once that is
// more than trimSlack entries, and keeps at most maxLog entries whatever
// the followers lack.
func TestEntryLogTrim(t *testing.T) {
	for _, tc := range []struct {
		name          string
		base, last    uint64
		matched       uint64
		maxLog        int
		wantBase, len uint64
	}{
		{"all matched, under the slack: kept", 0, 1000, 1000, 100000, 0, 1000},
		{"all matched, past the slack: trimmed to the last", 0, 2000, 2000, 100000, 2000, 0},
		{"trimmed to the slowest follower", 0, 3000, 1500, 100000, 1500, 1500},
		{"a follower at 0 keeps everything", 0, 3000, 0, 100000, 0, 3000},
		{"beyond maxLog: the newest maxLog kept", 0, 3000, 0, 1000, 2000, 1000},
		{"beyond maxLog, under the slack from base: still trimmed", 1500, 3000, 0, 1000, 2000, 1000},
		{"matched beyond last counts as last", 0, 2000, 5000, 100000, 2000, 0},
		{"matched behind base: nothing", 2000, 2500, 100, 100000, 2000, 500},
	} {
		g := logOf(tc.base, tc.last)
		g.trim(tc.matched, tc.maxLog)
		if g.base.Seq != tc.wantBase || uint64(len(g.log)) != tc.len || g.lastSeq != tc.last {
			t.Errorf("%s: trim(%d, %d) of (%d, %d]: base %d, %d entries, last %d; want base %d, %d entries",
				tc.name, tc.matched, tc.maxLog, tc.base, tc.last, g.base.Seq, len(g.log), g.lastSeq, tc.wantBase, tc.len)
		}
		if len(g.log) > 0 && g.log[0].Version.Seq != g.base.Seq+1 {
			t.Errorf("%s: first entry %d after base %d", tc.name, g.log[0].Version.Seq, g.base.Seq)
		}
		if at, ok := g.posAt(g.base.Seq); !ok || at.Seq != g.base.Seq {
			t.Errorf("%s: base %d not a position of the log", tc.name, g.base.Seq)
		}
	}
}

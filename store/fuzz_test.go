package store

import (
	"flag"
	"fmt"
	"maps"
	"slices"
	"testing"

	"github.com/kvstore/kvstore/internal/fuzzcorpus"
)

// FuzzStore applies a sequence of entries (good and bad) to a store, and
// now and then moves it into a new store by Snapshot and Restore, and
// compares it after every step with a model: a map, a position and a FIFO
// of request ids. A refused entry changes nothing; the store's invariants
// (Check) hold throughout. The input is read three bytes a step: what,
// key, request id.
func FuzzStore(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		const maxReqs = 4
		s := New(maxReqs)
		m := &model{items: map[string]Item{}, max: maxReqs}
		for i := 0; i+2 < len(data); i += 3 {
			what, kb, rb := data[i], data[i+1], data[i+2]
			key := fmt.Sprint("k", kb%4)
			if kb >= 0xf0 {
				key = ""
			}
			id := ""
			if rb%3 != 0 {
				id = fmt.Sprint("r", rb%8)
			}
			e := Entry{Version: Version{Epoch: 1 + int64(what>>4), Seq: m.applied.Seq + 1}, Key: key, Value: fmt.Sprint("v", i), ReqID: id}
			switch what % 6 {
			case 0:
				e.Op = OpSet
			case 1:
				e.Op, e.Value = OpDelete, ""
			case 2:
				e.Op, e.Key, e.Value, e.ReqID = OpNoop, "", "", ""
			case 3:
				e.Op = Op(3 + what%5) // unknown
			case 4:
				e.Op = OpSet
				e.Version.Seq += 1 + uint64(kb%3) // does not follow
			case 5:
				s2 := New(maxReqs)
				s2.Restore(s.Snapshot())
				if !sameSnapshot(s2.Snapshot(), s.Snapshot()) {
					t.Fatalf("step %d: restored as %v, snapshot %v", i/3, s2.Snapshot(), s.Snapshot())
				}
				s = s2
				continue
			}
			before := s.Snapshot()
			dup, err := s.Apply(e)
			wdup, werr := m.apply(e)
			if (err != nil) != (werr != nil) || dup != wdup {
				t.Fatalf("step %d: apply %+v: dup %v err %v, the model says dup %v err %v", i/3, e, dup, err, wdup, werr)
			}
			if err != nil && !sameSnapshot(before, s.Snapshot()) {
				t.Fatalf("step %d: refused %+v (%v) but changed the store", i/3, e, err)
			}
			if got, want := s.Snapshot(), m.snapshot(); !sameSnapshot(got, want) {
				t.Fatalf("step %d: after %+v the store holds\n%v\nthe model\n%v", i/3, e, got, want)
			}
			if err := s.Check(); err != nil {
				t.Fatalf("step %d: after %+v: %v", i/3, e, err)
			}
			for _, r := range m.reqs {
				if v, ok := s.Request(r.ID); !ok || v != r.Version {
					t.Fatalf("step %d: request %q is %s (%v), want %s", i/3, r.ID, v, ok, r.Version)
				}
			}
		}
	})
}

type model struct {
	items   map[string]Item
	applied Version
	reqs    []Request
	max     int
}

func (m *model) apply(e Entry) (bool, error) {
	if e.Version.Seq != m.applied.Seq+1 || e.Version.Epoch < m.applied.Epoch || (e.Op != OpNoop && e.Op != OpSet && e.Op != OpDelete) || (e.Op != OpNoop && e.Key == "") {
		return false, fmt.Errorf("refused")
	}
	m.applied = e.Version
	if e.ReqID != "" {
		if slices.ContainsFunc(m.reqs, func(r Request) bool { return r.ID == e.ReqID }) {
			return true, nil
		}
		if len(m.reqs) == m.max {
			m.reqs = m.reqs[1:]
		}
		m.reqs = append(m.reqs, Request{ID: e.ReqID, Version: e.Version})
	}
	switch e.Op {
	case OpSet:
		m.items[e.Key] = Item{Value: e.Value, Version: e.Version}
	case OpDelete:
		m.items[e.Key] = Item{Deleted: true, Version: e.Version}
	}
	return false, nil
}

func (m *model) snapshot() Snapshot {
	return Snapshot{Applied: m.applied, Items: maps.Clone(m.items), Requests: slices.Clone(m.reqs)}
}

func sameSnapshot(a, b Snapshot) bool {
	return a.Applied == b.Applied && maps.Equal(a.Items, b.Items) && slices.Equal(a.Requests, b.Requests)
}

// TestSnapshotCheck: Check refuses each kind of impossible state.
func TestSnapshotCheck(t *testing.T) {
	good := func() Snapshot {
		return Snapshot{Applied: v(3, 9), Items: map[string]Item{"a": {Value: "1", Version: v(2, 4)}, "b": {Deleted: true, Version: v(3, 9)}},
			Requests: []Request{{ID: "r1", Version: v(2, 4)}, {ID: "r2", Version: v(3, 8)}}}
	}
	if err := good().Check(); err != nil {
		t.Fatalf("a good snapshot: %v", err)
	}
	for _, tc := range []struct {
		name   string
		change func(*Snapshot)
	}{
		{"empty key", func(s *Snapshot) { s.Items[""] = Item{Value: "x", Version: v(1, 1)} }},
		{"tombstone with a value", func(s *Snapshot) { s.Items["b"] = Item{Deleted: true, Value: "x", Version: v(3, 9)} }},
		{"item above the applied position", func(s *Snapshot) { s.Items["c"] = Item{Value: "x", Version: v(4, 1)} }},
		{"item seq above the applied seq", func(s *Snapshot) { s.Items["c"] = Item{Value: "x", Version: v(2, 10)} }},
		{"item at seq 0", func(s *Snapshot) { s.Items["c"] = Item{Value: "x"} }},
		{"two items at one seq", func(s *Snapshot) { s.Items["c"] = Item{Value: "x", Version: v(2, 4)} }},
		{"empty request id", func(s *Snapshot) { s.Requests[0].ID = "" }},
		{"request id twice", func(s *Snapshot) { s.Requests[1].ID = "r1" }},
		{"requests out of order", func(s *Snapshot) { s.Requests[0], s.Requests[1] = s.Requests[1], s.Requests[0] }},
		{"request above the applied position", func(s *Snapshot) { s.Requests = append(s.Requests, Request{ID: "r3", Version: v(3, 10)}) }},
	} {
		s := good()
		tc.change(&s)
		if err := s.Check(); err == nil {
			t.Errorf("%s: accepted", tc.name)
		} else {
			t.Logf("%s: %v", tc.name, err)
		}
	}
}

// TestRestoreListsEachRequestOnce: a request id listed twice is remembered
// once, so evicting it cannot leave the ring naming an id the table forgot.
func TestRestoreListsEachRequestOnce(t *testing.T) {
	s := New(3)
	s.Restore(Snapshot{Applied: v(1, 3), Items: map[string]Item{}, Requests: []Request{{ID: "a", Version: v(1, 1)}, {ID: "b", Version: v(1, 2)}, {ID: "a", Version: v(1, 3)}}})
	for i := uint64(4); i <= 6; i++ {
		mustApply(t, s, Entry{Version: v(1, i), Op: OpNoop, ReqID: fmt.Sprint("n", i)})
		if err := s.Check(); err != nil {
			t.Fatalf("after seq %d: %v", i, err)
		}
	}
}

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the fuzz seed corpora in testdata/fuzz/")

// TestFuzzCorpus keeps testdata/fuzz/FuzzStore in step
// (-update-corpus rewrites it).
func TestFuzzCorpus(t *testing.T) {
	fuzzcorpus.Sync(t, "FuzzStore", *updateCorpus, []fuzzcorpus.Seed{
		// sets, a delete, a retried request id, a no-op, a restore, more
		{Name: "1", Values: []any{[]byte{0x10, 0, 1, 0x10, 1, 2, 0x11, 0, 4, 0x10, 2, 1, 0x12, 0, 0, 0x15, 0, 0, 0x20, 3, 5, 0x20, 0, 7, 0x20, 1, 8}}},
		// bad entries among good ones: an empty key, an unknown op, a gap
		{Name: "2", Values: []any{[]byte{0x10, 0, 1, 0x10, 0xf5, 1, 0x13, 1, 2, 0x14, 1, 2, 0x11, 1, 2}}},
		// more request ids than the table holds, then a restore
		{Name: "3", Values: []any{[]byte{0, 0, 1, 0, 1, 2, 0, 2, 4, 0, 3, 5, 0, 0, 7, 0, 1, 8, 5, 0, 0, 0, 2, 1}}},
	})
}

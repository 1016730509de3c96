// Package store is KVStore's replicated state machine: a versioned map plus
// the table of recent request ids used to apply each client write once. It is
// pure (no goroutines, clocks or I/O) and not safe for concurrent use: the
// node guards it with its own mutex.
//
// The items are an ordered copy-on-write B-tree (github.com/google/btree, as
// etcd's index): View freezes the state in constant time, and the view can
// be read in key order, from any key on, while the store goes on changing
// (a leader streams a snapshot in chunks this way, with no whole copy).
package store

import (
	"fmt"
	"slices"

	"github.com/google/btree"
)

// Version orders states and values: the epoch of the leader that created an
// entry, then the entry's sequence number. seq keeps growing across epochs.
type Version struct {
	Epoch int64
	Seq   uint64
}

// Less reports whether v orders before w.
func (v Version) Less(w Version) bool {
	if v.Epoch != w.Epoch {
		return v.Epoch < w.Epoch
	}
	return v.Seq < w.Seq
}

// String formats v as epoch.seq.
func (v Version) String() string { return fmt.Sprintf("%d.%d", v.Epoch, v.Seq) }

// Op is what an entry does.
type Op int

// Entry operations.
const (
	OpNoop Op = iota
	OpSet
	OpDelete
)

// Entry is one replicated write. Applying entries in seq order from the same
// starting state always yields the same state.
type Entry struct {
	Version Version
	Op      Op
	Key     string
	Value   string
	ReqID   string // may be empty (no deduplication)
}

// Item is a key's current value; a deleted key is kept as a tombstone so its
// version is remembered.
type Item struct {
	Value   string
	Deleted bool
	Version Version
}

// Request is a remembered request id and the version its write produced.
type Request struct {
	ID      string
	Version Version
}

// Snapshot is a whole state, detached from the store it came from.
type Snapshot struct {
	Applied  Version
	Items    map[string]Item
	Requests []Request // oldest first
}

// DefaultMaxRequests is how many request ids a store remembers by default.
const DefaultMaxRequests = 65536

// kv is one key and its item, as the B-tree holds them.
type kv struct {
	key string
	Item
}

func lessKV(a, b kv) bool { return a.key < b.key }

// degree is the B-tree's degree: nodes of up to 63 items.
const degree = 32

func newTree() *btree.BTreeG[kv] { return btree.NewG(degree, lessKV) }

// Store is the versioned map. The zero value is not usable; call New.
type Store struct {
	items   *btree.BTreeG[kv]
	applied Version

	maxReqs  int
	reqs     map[string]Version
	reqOrder []string // ring of remembered ids, oldest at reqHead
	reqHead  int
}

// New returns an empty store at Version{} that remembers up to maxRequests
// request ids (DefaultMaxRequests if maxRequests <= 0).
func New(maxRequests int) *Store {
	if maxRequests <= 0 {
		maxRequests = DefaultMaxRequests
	}
	return &Store{items: newTree(), maxReqs: maxRequests, reqs: make(map[string]Version)}
}

// Applied is the position of the last applied entry.
func (s *Store) Applied() Version { return s.applied }

// Get returns the key's item; ok is false if the key was never written.
func (s *Store) Get(key string) (Item, bool) {
	e, ok := s.items.Get(kv{key: key})
	return e.Item, ok
}

// Len is the number of keys, tombstones included.
func (s *Store) Len() int { return s.items.Len() }

// Request returns the version produced by request id, if remembered.
func (s *Store) Request(id string) (Version, bool) {
	v, ok := s.reqs[id]
	return v, ok
}

// Apply applies e, which must directly follow the current position
// (e.Version.Seq == Applied().Seq+1). A write whose request id was already
// applied changes nothing but the position; dup reports it. An entry that
// does not follow (its seq, or an epoch before the position's: positions
// never go back), has an unknown op, or sets or deletes the empty key is
// refused and changes nothing.
func (s *Store) Apply(e Entry) (dup bool, err error) {
	_, _, dup, err = s.ApplyReplacing(e)
	return dup, err
}

// ApplyReplacing is Apply, also returning the item e replaced (had: the
// store held one for e's key): the key's item before e, as Get would have
// returned it, without a second lookup.
func (s *Store) ApplyReplacing(e Entry) (prev Item, had, dup bool, err error) {
	switch {
	case e.Version.Seq != s.applied.Seq+1 || e.Version.Seq == 0 || e.Version.Epoch < s.applied.Epoch:
		return Item{}, false, false, fmt.Errorf("store: entry %s does not follow %s", e.Version, s.applied)
	case e.Op != OpNoop && e.Op != OpSet && e.Op != OpDelete:
		return Item{}, false, false, fmt.Errorf("store: entry %s has unknown op %d", e.Version, e.Op)
	case e.Op != OpNoop && e.Key == "":
		return Item{}, false, false, fmt.Errorf("store: entry %s writes the empty key", e.Version)
	}
	s.applied = e.Version
	if e.ReqID != "" {
		if _, seen := s.reqs[e.ReqID]; seen {
			return Item{}, false, true, nil
		}
		s.remember(e.ReqID, e.Version)
	}
	var old kv
	switch e.Op {
	case OpSet:
		old, had = s.items.ReplaceOrInsert(kv{e.Key, Item{Value: e.Value, Version: e.Version}})
	case OpDelete:
		old, had = s.items.ReplaceOrInsert(kv{e.Key, Item{Deleted: true, Version: e.Version}})
	}
	return old.Item, had, false, nil
}

func (s *Store) remember(id string, v Version) {
	if len(s.reqOrder) < s.maxReqs {
		s.reqOrder = append(s.reqOrder, id)
	} else {
		delete(s.reqs, s.reqOrder[s.reqHead])
		s.reqOrder[s.reqHead] = id
		s.reqHead = (s.reqHead + 1) % s.maxReqs
	}
	s.reqs[id] = v
}

// Snapshot returns a copy of the whole state. It copies every item (not
// the bytes of keys and values): for tests and small states; View freezes
// the state without a copy.
func (s *Store) Snapshot() Snapshot { return s.View().Snapshot() }

// View freezes the whole state: the items in constant time (the B-tree is
// shared copy-on-write: later changes of the store copy the nodes they
// touch), the remembered request ids in a copy (at most MaxRequests). The
// view never changes and may be read from another goroutine while the
// store goes on changing.
func (s *Store) View() *View {
	return &View{applied: s.applied, items: s.items.Clone(), reqs: s.requests()}
}

// requests lists the remembered request ids, oldest first.
func (s *Store) requests() []Request {
	reqs := make([]Request, 0, len(s.reqOrder))
	for i := range s.reqOrder {
		id := s.reqOrder[(s.reqHead+i)%len(s.reqOrder)]
		reqs = append(reqs, Request{ID: id, Version: s.reqs[id]})
	}
	return reqs
}

// Restore replaces the whole state with snap. Of a request id listed twice
// only the first is remembered (a valid snapshot, see Snapshot.Check, lists
// each once): the table must hold each id once, or evicting one copy would
// forget an id the other still names.
func (s *Store) Restore(snap Snapshot) {
	v := snap.View()
	s.restore(v.applied, v.items, v.reqs)
}

// RestoreView replaces the whole state with v's, sharing v's items
// copy-on-write (constant time); request ids as Restore.
func (s *Store) RestoreView(v *View) {
	s.restore(v.applied, v.items.Clone(), v.reqs)
}

func (s *Store) restore(applied Version, items *btree.BTreeG[kv], reqs []Request) {
	s.items = items
	s.applied = applied
	s.reqs = make(map[string]Version, min(len(reqs), s.maxReqs))
	s.reqOrder = slices.Grow(s.reqOrder[:0], min(len(reqs), s.maxReqs))
	s.reqHead = 0
	seen := make(map[string]bool, len(reqs))
	for _, r := range reqs {
		if seen[r.ID] {
			continue
		}
		seen[r.ID] = true
		s.remember(r.ID, r.Version)
	}
}

// Check verifies the store's invariants (Snapshot.Check) and that its
// request table is consistent, and returns the first violation. It is for
// tests: it copies the whole state.
func (s *Store) Check() error {
	if len(s.reqs) != len(s.reqOrder) || len(s.reqOrder) > s.maxReqs {
		return fmt.Errorf("store: request table holds %d ids, its ring %d (at most %d)", len(s.reqs), len(s.reqOrder), s.maxReqs)
	}
	for _, id := range s.reqOrder {
		if _, ok := s.reqs[id]; !ok {
			return fmt.Errorf("store: request ring names %q, the table does not", id)
		}
	}
	return s.Snapshot().Check()
}

// Check verifies that snap is a state some history of entries can produce,
// and returns the first violation:
//
//   - every key is non-empty and a tombstone keeps no value;
//   - every item and every remembered request has a version with a seq of
//     at least 1, at most the applied position (seq included: seqs keep
//     growing across epochs), and a seq of its own (each entry writes at
//     most one key and carries at most one request id);
//   - request ids are non-empty, listed once, oldest (lowest seq) first.
func (snap Snapshot) Check() error {
	bad := func(v Version) string {
		if v.Seq == 0 {
			return "no version (seq 0)"
		}
		if snap.Applied.Less(v) || v.Seq > snap.Applied.Seq {
			return fmt.Sprintf("version %s, beyond the applied position", v)
		}
		return ""
	}
	itemSeqs := make(map[uint64]string, len(snap.Items))
	for k, it := range snap.Items {
		switch {
		case k == "":
			return fmt.Errorf("store: snapshot at %s has an item with an empty key", snap.Applied)
		case it.Deleted && it.Value != "":
			return fmt.Errorf("store: snapshot at %s: tombstone of %q keeps a value", snap.Applied, k)
		case bad(it.Version) != "":
			return fmt.Errorf("store: snapshot at %s: item %q has %s", snap.Applied, k, bad(it.Version))
		}
		if other, dup := itemSeqs[it.Version.Seq]; dup {
			return fmt.Errorf("store: snapshot at %s: items %q and %q both have seq %d", snap.Applied, min(k, other), max(k, other), it.Version.Seq)
		}
		itemSeqs[it.Version.Seq] = k
	}
	ids := make(map[string]bool, len(snap.Requests))
	var last uint64
	for i, r := range snap.Requests {
		switch {
		case r.ID == "":
			return fmt.Errorf("store: snapshot at %s: request %d has an empty id", snap.Applied, i)
		case ids[r.ID]:
			return fmt.Errorf("store: snapshot at %s: request id %q is listed twice", snap.Applied, r.ID)
		case bad(r.Version) != "":
			return fmt.Errorf("store: snapshot at %s: request %q has %s", snap.Applied, r.ID, bad(r.Version))
		case r.Version.Seq <= last:
			return fmt.Errorf("store: snapshot at %s: request %q at %s is not after the request before it (seq %d)", snap.Applied, r.ID, r.Version, last)
		}
		ids[r.ID] = true
		last = r.Version.Seq
	}
	return nil
}

// Keys returns every live (not deleted) key, sorted.
func (s *Store) Keys() []string {
	keys := make([]string, 0, s.items.Len())
	s.items.Ascend(func(e kv) bool {
		if !e.Deleted {
			keys = append(keys, e.key)
		}
		return true
	})
	return keys
}

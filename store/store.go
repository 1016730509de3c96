// Package store is KVStore's replicated state machine: a versioned map plus
// the table of recent request ids used to apply each client write once. It is
// pure (no goroutines, clocks or I/O) and not safe for concurrent use: the
// node guards it with its own mutex.
package store

import (
	"fmt"
	"sort"
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

// Store is the versioned map. The zero value is not usable; call New.
type Store struct {
	items   map[string]Item
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
	return &Store{items: make(map[string]Item), maxReqs: maxRequests, reqs: make(map[string]Version)}
}

// Applied is the position of the last applied entry.
func (s *Store) Applied() Version { return s.applied }

// Get returns the key's item; ok is false if the key was never written.
func (s *Store) Get(key string) (Item, bool) {
	it, ok := s.items[key]
	return it, ok
}

// Len is the number of keys, tombstones included.
func (s *Store) Len() int { return len(s.items) }

// Request returns the version produced by request id, if remembered.
func (s *Store) Request(id string) (Version, bool) {
	v, ok := s.reqs[id]
	return v, ok
}

// Apply applies e, which must directly follow the current position
// (e.Version.Seq == Applied().Seq+1). A write whose request id was already
// applied changes nothing but the position; dup reports it.
func (s *Store) Apply(e Entry) (dup bool, err error) {
	if e.Version.Seq != s.applied.Seq+1 {
		return false, fmt.Errorf("store: entry %s does not follow %s", e.Version, s.applied)
	}
	s.applied = e.Version
	if e.ReqID != "" {
		if _, seen := s.reqs[e.ReqID]; seen {
			return true, nil
		}
		s.remember(e.ReqID, e.Version)
	}
	switch e.Op {
	case OpSet:
		s.items[e.Key] = Item{Value: e.Value, Version: e.Version}
	case OpDelete:
		s.items[e.Key] = Item{Deleted: true, Version: e.Version}
	}
	return false, nil
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

// Snapshot returns a copy of the whole state.
func (s *Store) Snapshot() Snapshot {
	items := make(map[string]Item, len(s.items))
	for k, v := range s.items {
		items[k] = v
	}
	reqs := make([]Request, 0, len(s.reqOrder))
	for i := range s.reqOrder {
		id := s.reqOrder[(s.reqHead+i)%len(s.reqOrder)]
		reqs = append(reqs, Request{ID: id, Version: s.reqs[id]})
	}
	return Snapshot{Applied: s.applied, Items: items, Requests: reqs}
}

// Restore replaces the whole state with snap.
func (s *Store) Restore(snap Snapshot) {
	s.items = make(map[string]Item, len(snap.Items))
	for k, v := range snap.Items {
		s.items[k] = v
	}
	s.applied = snap.Applied
	s.reqs = make(map[string]Version)
	s.reqOrder = s.reqOrder[:0]
	s.reqHead = 0
	for _, r := range snap.Requests {
		s.remember(r.ID, r.Version)
	}
}

// Keys returns every live (not deleted) key, sorted.
func (s *Store) Keys() []string {
	keys := make([]string, 0, len(s.items))
	for k, it := range s.items {
		if !it.Deleted {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

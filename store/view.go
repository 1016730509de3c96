package store

import (
	"fmt"

	"github.com/google/btree"
)

// View is a frozen state (Store.View): its position, its items in key
// order, and the remembered request ids, oldest first. It never changes, and
// is safe for concurrent reads.
type View struct {
	applied Version
	items   *btree.BTreeG[kv]
	reqs    []Request
}

// Applied is the position of the state.
func (v *View) Applied() Version { return v.applied }

// Len is the number of keys, tombstones included.
func (v *View) Len() int { return v.items.Len() }

// Requests are the remembered request ids, oldest first. The caller must
// not modify them.
func (v *View) Requests() []Request { return v.reqs }

// Ascend calls fn for each key after after (every key if after is ""), in
// key order, until fn returns false.
func (v *View) Ascend(after string, fn func(key string, it Item) bool) {
	v.items.AscendGreaterOrEqual(kv{key: after}, func(e kv) bool {
		if e.key == after {
			return true
		}
		return fn(e.key, e.Item)
	})
}

// Snapshot copies the view into a Snapshot (every item; keys and values are
// shared, not copied).
func (v *View) Snapshot() Snapshot {
	items := make(map[string]Item, v.items.Len())
	v.items.Ascend(func(e kv) bool {
		items[e.key] = e.Item
		return true
	})
	return Snapshot{Applied: v.applied, Items: items, Requests: append([]Request(nil), v.reqs...)}
}

// Check verifies the view as Snapshot.Check does, without copying it.
func (v *View) Check() error {
	bad := func(ver Version) string {
		if ver.Seq == 0 {
			return "no version (seq 0)"
		}
		if v.applied.Less(ver) || ver.Seq > v.applied.Seq {
			return fmt.Sprintf("version %s, beyond the applied position", ver)
		}
		return ""
	}
	itemSeqs := make(map[uint64]string, v.items.Len())
	var err error
	v.items.Ascend(func(e kv) bool {
		switch {
		case e.key == "":
			err = fmt.Errorf("store: snapshot at %s has an item with an empty key", v.applied)
		case e.Deleted && e.Value != "":
			err = fmt.Errorf("store: snapshot at %s: tombstone of %q keeps a value", v.applied, e.key)
		case bad(e.Version) != "":
			err = fmt.Errorf("store: snapshot at %s: item %q has %s", v.applied, e.key, bad(e.Version))
		}
		if other, dup := itemSeqs[e.Version.Seq]; dup && err == nil {
			err = fmt.Errorf("store: snapshot at %s: items %q and %q both have seq %d", v.applied, min(e.key, other), max(e.key, other), e.Version.Seq)
		}
		itemSeqs[e.Version.Seq] = e.key
		return err == nil
	})
	if err != nil {
		return err
	}
	return Snapshot{Applied: v.applied, Requests: v.reqs}.Check()
}

// Builder builds a View from items given in ascending key order: a
// snapshot received in chunks is staged in one. The zero value is not
// usable; call NewBuilder.
type Builder struct {
	items *btree.BTreeG[kv]
	last  string
}

// NewBuilder returns an empty builder.
func NewBuilder() *Builder { return &Builder{items: newTree()} }

// Add adds key's item; keys must be non-empty and ascending.
func (b *Builder) Add(key string, it Item) error {
	if key == "" || key <= b.last {
		return fmt.Errorf("store: snapshot key %q does not follow %q", key, b.last)
	}
	b.items.ReplaceOrInsert(kv{key, it})
	b.last = key
	return nil
}

// Last is the last key added ("" if none).
func (b *Builder) Last() string { return b.last }

// Len is the number of items added.
func (b *Builder) Len() int { return b.items.Len() }

// View is the state of the items added, at applied with the request ids
// reqs (oldest first). The builder may go on (the view is a copy-on-write
// clone).
func (b *Builder) View(applied Version, reqs []Request) *View {
	return &View{applied: applied, items: b.items.Clone(), reqs: append([]Request(nil), reqs...)}
}

// View is the state of snap as a View (it copies the items' headers into
// a B-tree; keys and values are shared).
func (snap Snapshot) View() *View {
	items := newTree()
	for k, it := range snap.Items {
		items.ReplaceOrInsert(kv{k, it})
	}
	return &View{applied: snap.Applied, items: items, reqs: append([]Request(nil), snap.Requests...)}
}

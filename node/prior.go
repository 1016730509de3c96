package node

// Reads of a key with a write in flight (docs/design.md, Reads during a
// write). The leader's store holds a key's latest write as soon as it is
// appended, before it is visible (committed, no older copy readable). A
// read of that key used to wait for the write's visibility: a commit and,
// with fsync, a disk flush on a majority, milliseconds in which a hot
// key's readers all stood still. Instead the leader keeps, for each key
// with writes in flight, the latest of its values that is visible, and
// answers a read with it (without a lease) while the newer write is not
// visible yet. That is linearizable: the newer write is not acknowledged
// and no reader has seen it (only visible values are handed out), so the
// read takes effect before it.
//
// The table is only ever behind the truth by writes no one has seen: a
// value is recorded as visible when the next write of its key is appended
// (if it is visible then) and when its own write completes its visibility
// wait, before that write is acknowledged. A write whose writer gave up
// may become visible unrecorded; until a later one is, readers get the
// value before it, which is still linearizable (its outcome is unknown
// and no one read it). A retried write that completes on an earlier entry
// whose value the store no longer holds drops the key's record: its
// readers wait, as before.

import (
	"github.com/kvstore/kvstore/store"
)

// priorValue is the latest visible value of a key whose latest write is
// not visible yet.
type priorValue struct {
	item  store.Item
	found bool   // item is a value, not a tombstone or a key never written
	top   uint64 // the seq of the key's latest write appended
}

// priorTable is the leader's record of priorValues: key -> value. The
// leader's l.mu guards it.
type priorTable map[string]priorValue

// visibleNowLocked reports whether the write of key at seq (0: never
// written) is visible now: committed, and no holder can still read an
// older copy. It does not wait.
func (l *leader) visibleNowLocked(key string, seq uint64) bool {
	if l.commit < seq {
		return false
	}
	skip := false
	pending, _, _ := l.leases.pendingLocked(key, seq, l.n.now(), &skip)
	return pending == 0
}

// appendingLocked records, before the write of key at seq is appended,
// the key's current value cur (ok: the store holds one) as its latest
// visible value, if it is visible now; a value that is not visible yet
// leaves the record as it is.
func (l *leader) appendingLocked(key string, cur store.Item, ok bool, seq uint64) {
	p, had := l.prior[key]
	if l.visibleNowLocked(key, cur.Version.Seq) && (!had || p.item.Version.Seq < cur.Version.Seq) {
		p = priorValue{item: cur, found: ok && !cur.Deleted}
		had = true
	}
	if had {
		p.top = seq
		l.prior[key] = p
	}
}

// visibleLocked records that the write of key at ver (e: its entry; nil
// for a retried write whose entry is an earlier one) completed its wait
// for visibility.
func (l *leader) visibleLocked(key string, ver store.Version, e *store.Entry) {
	if faultsOn && l.n.cfg.Faults.StalePrior {
		return // the deliberate bug: the record never moves on
	}
	p, had := l.prior[key]
	if !had {
		return
	}
	if ver.Seq >= p.top {
		delete(l.prior, key) // the latest write is visible
		return
	}
	if ver.Seq <= p.item.Version.Seq {
		return
	}
	if e == nil {
		// Its value may be gone from the store: readers wait instead.
		delete(l.prior, key)
		return
	}
	p.item = store.Item{Value: e.Value, Deleted: e.Op == store.OpDelete, Version: ver}
	p.found = e.Op == store.OpSet
	l.prior[key] = p
}

// priorLocked is the value to answer a read of key with when its latest
// write (at latest) is not visible: ok false when the read must wait for
// that write instead. A record whose latest write became visible goes.
func (l *leader) priorLocked(key string, latest uint64) (p priorValue, ok bool) {
	p, had := l.prior[key]
	if faultsOn && l.n.cfg.Faults.StalePrior && had {
		return p, true
	}
	if !had {
		return p, false
	}
	if l.visibleNowLocked(key, latest) {
		delete(l.prior, key)
		return p, false
	}
	return p, p.top == latest
}

// sweepPriorLocked forgets the records of keys whose latest write became
// visible without its writer seeing it (it gave up waiting).
func (l *leader) sweepPriorLocked() {
	for key, p := range l.prior {
		if l.visibleNowLocked(key, p.top) {
			delete(l.prior, key)
		}
	}
}

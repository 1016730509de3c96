package node

import (
	"slices"

	"github.com/kvstore/kvstore/store"
)

// entryLog is the leader's log of this epoch's history, kept for the
// followers that lag: the position base, then the entries after it up to
// lastSeq. The leader embeds it, and its l.mu guards it.
type entryLog struct {
	base    store.Version // the position just before log[0]
	log     []store.Entry // entries after base, in seq order
	lastSeq uint64
}

// restart makes the log hold first alone, after base.
func (g *entryLog) restart(base store.Version, first store.Entry) {
	g.base, g.log, g.lastSeq = base, []store.Entry{first}, first.Version.Seq
}

// add appends e, the entry at lastSeq+1.
func (g *entryLog) add(e store.Entry) {
	g.log = append(g.log, e)
	g.lastSeq = e.Version.Seq
}

// history is the part of epoch's history the log holds.
func (g *entryLog) history(epoch int64) history {
	return history{epoch: epoch, base: g.base, last: g.lastSeq}
}

// posAt is the position of seq in this epoch's history, if the log has it.
func (g *entryLog) posAt(seq uint64) (store.Version, bool) {
	if seq == g.base.Seq {
		return g.base, true
	}
	if seq < g.base.Seq || seq > g.lastSeq {
		return store.Version{}, false
	}
	return g.log[seq-g.base.Seq-1].Version, true
}

// batch returns the entries from seq next on for one Append: at most
// maxN, with at most maxBytes of keys, values and request ids (an entry
// larger than that travels alone). next must be in the log (posAt(next-1)).
// The entries are the log's own, not a copy: read them only under the lock
// that guards the log (the slice's capacity ends at its length, so an
// append to it cannot write into the log).
func (g *entryLog) batch(next uint64, maxN, maxBytes int) []store.Entry {
	last := min(g.lastSeq, next-1+uint64(maxN))
	from := int(next - g.base.Seq - 1)
	to := from
	budget := maxBytes
	for s := next; s <= last; s++ {
		e := &g.log[to]
		size := len(e.Key) + len(e.Value) + len(e.ReqID)
		if to > from && size > budget {
			break // the rest goes in the next Append
		}
		budget -= size
		to++
	}
	return g.log[from:to:to]
}

// trimSlack is how many entries every follower has that the log keeps
// before it trims them (trimming copies the rest).
const trimSlack = 1024

// trim drops the entries every follower has (up to matched, the lowest
// seq they matched), in steps of more than trimSlack, and the entries
// beyond the newest maxLog (followers that lag that far get a snapshot).
func (g *entryLog) trim(matched uint64, maxLog int) {
	cut := min(g.lastSeq, matched)
	if keep := uint64(maxLog); g.lastSeq > keep {
		cut = max(cut, g.lastSeq-keep)
	}
	if cut <= g.base.Seq+trimSlack && len(g.log) <= maxLog {
		return
	}
	if cut <= g.base.Seq {
		return
	}
	i := int(cut - g.base.Seq)
	g.base = g.log[i-1].Version
	g.log = slices.Clone(g.log[i:])
}

package node

import (
	"time"

	"github.com/kvstore/kvstore/clock"
)

// holding is a cached copy a holder may read: the version of the key it
// holds and when its lease ends.
type holding struct {
	seq uint64        // the copy's version (its write's seq; 0: never written)
	end clock.Instant // when its lease ends, on the leader's clock
}

// holdings are who holds a cached copy of which key until when: key ->
// holder -> its copy. The rules are pure functions of the time, the
// holdings and how far each holder has applied the log (applied; 0 for a
// holder the leader sends no entries to): they do not care whether a
// holder is a node or, later, a client that caches copies. They change
// only the holdings they are called on: no clock, no lock, no network.
type holdings map[string]map[string]holding

// grant records holder as holding key's copy at seq until end.
func (hs holdings) grant(key, holder string, seq uint64, end clock.Instant) {
	m := hs[key]
	if m == nil {
		m = make(map[string]holding)
		hs[key] = m
	}
	m[holder] = holding{seq: seq, end: end}
}

// pending counts the holders of key that may still read a copy older than
// seq at now: the copy is older, the holder has not applied seq (applying
// it drops the copy) and its lease has not ended. next is the earliest end
// of their leases. It forgets holdings whose lease ended (counting in
// expired those that were pending) and those whose copy the holder has
// provably dropped (it applied latest, the key's latest write, newer than
// the copy; a later copy needs a new grant, recorded anew). If *skip is
// set it forgets one pending holder and clears *skip
// (Faults.SkipInvalidation).
func (hs holdings) pending(key string, seq, latest uint64, now clock.Instant, applied func(holder string) uint64, skip *bool) (pending int, next clock.Instant, expired int) {
	m := hs[key]
	if len(m) == 0 {
		return 0, next, 0
	}
	for id, h := range m {
		match := applied(id)
		older := h.seq < seq && match < seq
		if !now.Before(h.end) {
			if older {
				expired++
			}
			delete(m, id)
			continue
		}
		if h.seq < latest && match >= latest {
			delete(m, id)
			continue
		}
		if !older {
			continue
		}
		if *skip {
			// The deliberate bug: forget one holder that still has a live
			// older copy, as if it had dropped it.
			*skip = false
			delete(m, id)
			continue
		}
		if pending == 0 || h.end.Before(next) {
			next = h.end
		}
		pending++
	}
	if len(m) == 0 {
		delete(hs, key)
	}
	return pending, next, expired
}

// live counts the holders of a copy of key older than seq whose lease has
// not ended at now: the cached copies a write at seq must invalidate.
func (hs holdings) live(key string, seq uint64, now clock.Instant) int {
	n := 0
	for _, h := range hs[key] {
		if h.seq < seq && now.Before(h.end) {
			n++
		}
	}
	return n
}

// sweep forgets every holding whose lease has ended at now.
func (hs holdings) sweep(now clock.Instant) {
	for key, m := range hs {
		for id, h := range m {
			if !now.Before(h.end) {
				delete(m, id)
			}
		}
		if len(m) == 0 {
			delete(hs, key)
		}
	}
}

// sweepTicks is how many heartbeats pass between sweeps of ended leases.
const sweepTicks = 16

// sweepHolders forgets holdings whose lease has ended, for keys no write or
// read has looked at since.
func (l *leader) sweepHolders() {
	now := l.n.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.holders.sweep(now)
}

// pendingHoldersLocked is holdings.pending for key at the key's latest
// write in the store, with the followers' matched positions.
func (l *leader) pendingHoldersLocked(key string, seq uint64, now clock.Instant, skip *bool) (pending int, next clock.Instant, expired int) {
	if len(l.holders[key]) == 0 {
		return 0, next, 0
	}
	it, _ := l.n.rep.get(key)
	return l.holders.pending(key, seq, it.Version.Seq, now, l.appliedLocked, skip)
}

// appliedLocked is how far holder id has applied this epoch's history, as
// far as the leader knows: its matched seq, or 0.
func (l *leader) appliedLocked(id string) uint64 {
	if p := l.repl.peers[id]; p != nil {
		return p.match
	}
	return 0
}

// liveHoldersLocked counts the nodes holding a lease on a copy of key older
// than seq that has not ended at now: the cached copies the write at seq
// must invalidate.
func (l *leader) liveHoldersLocked(key string, seq uint64, now clock.Instant) int {
	return l.holders.live(key, seq, now)
}

// grantLocked records node id as a holder of key's copy at seq (the key's
// current version, checked by the caller) and returns the lease it may use,
// or 0 when it may not cache (this node no longer leads with a live
// session, unknown or unreachable node, or a newer write of the key
// already applied).
//
// The leader itself gets a lease without being recorded as a holder: it
// drops its own copy when it applies the next write of key, and its copy is
// readable only while it still leads in this epoch with a live session, like
// any follower's.
func (l *leader) grantLocked(key, id string, seq uint64) time.Duration {
	n := l.n
	if id == "" {
		return 0
	}
	// Checked under l.mu right before the grant: a visibility wait may have
	// outlasted the session or the epoch.
	if l.checkLive() != nil {
		return 0
	}
	it, _ := n.rep.get(key)
	if it.Version.Seq != seq {
		return 0
	}
	if id == n.cfg.ID {
		return n.cfg.LeaseDuration
	}
	if p := l.repl.peers[id]; p == nil || !p.reachable {
		return 0
	}
	l.holders.grant(key, id, seq, n.now().Add(n.cfg.leaderLease()))
	return n.cfg.LeaseDuration
}

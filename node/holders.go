package node

import (
	"time"

	"github.com/kvstore/kvstore/clock"
)

// sweepTicks is how many heartbeats pass between sweeps of ended leases.
const sweepTicks = 16

// sweepHolders forgets holdings whose lease has ended, for keys no write or
// read has looked at since.
func (l *leader) sweepHolders() {
	now := l.n.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	for key, hs := range l.holders {
		for id, h := range hs {
			if !now.Before(h.end) {
				delete(hs, id)
			}
		}
		if len(hs) == 0 {
			delete(l.holders, key)
		}
	}
}

// holding is the leader's record of a cached copy a node may read.
type holding struct {
	seq uint64        // the copy's version (its write's seq; 0: never written)
	end clock.Instant // when its lease ends, on the leader's clock
}

// pendingHoldersLocked counts the holders of key that may still read a
// copy older than seq: the copy is older, the holder has not applied seq
// (applying it drops the copy) and its lease has not ended. next is the
// earliest end of their leases. It forgets holdings whose lease ended
// (counting in expired those that were pending) and those whose copy the
// holder has provably dropped (it applied the key's latest write, newer than
// the copy; a later copy needs a new grant, recorded anew). If *skip is set
// it forgets one pending holder and clears *skip (Faults.SkipInvalidation).
func (l *leader) pendingHoldersLocked(key string, seq uint64, now clock.Instant, skip *bool) (pending int, next clock.Instant, expired int) {
	hs := l.holders[key]
	if len(hs) == 0 {
		return 0, next, 0
	}
	l.n.mu.Lock()
	it, _ := l.n.store.Get(key)
	l.n.mu.Unlock()
	latest := it.Version.Seq
	for id, h := range hs {
		var match uint64
		if p := l.peers[id]; p != nil {
			match = p.match
		}
		older := h.seq < seq && match < seq
		if !now.Before(h.end) {
			if older {
				expired++
			}
			delete(hs, id)
			continue
		}
		if h.seq < latest && match >= latest {
			delete(hs, id)
			continue
		}
		if !older {
			continue
		}
		if *skip {
			// The deliberate bug: forget one holder that still has a live
			// older copy, as if it had dropped it.
			*skip = false
			delete(hs, id)
			continue
		}
		if pending == 0 || h.end.Before(next) {
			next = h.end
		}
		pending++
	}
	if len(hs) == 0 {
		delete(l.holders, key)
	}
	return pending, next, expired
}

// liveHoldersLocked counts the nodes holding a lease on a copy of key older
// than seq that has not ended at now: the cached copies the write at seq
// must invalidate.
func (l *leader) liveHoldersLocked(key string, seq uint64, now clock.Instant) int {
	live := 0
	for _, h := range l.holders[key] {
		if h.seq < seq && now.Before(h.end) {
			live++
		}
	}
	return live
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
	n.mu.Lock()
	it, _ := n.store.Get(key)
	n.mu.Unlock()
	if it.Version.Seq != seq {
		return 0
	}
	if id == n.cfg.ID {
		return n.cfg.LeaseDuration
	}
	if p := l.peers[id]; p == nil || !p.reachable {
		return 0
	}
	hs := l.holders[key]
	if hs == nil {
		hs = make(map[string]holding)
		l.holders[key] = hs
	}
	hs[id] = holding{seq: seq, end: n.now().Add(n.cfg.leaderLease())}
	return n.cfg.LeaseDuration
}

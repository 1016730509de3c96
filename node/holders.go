package node

import (
	"context"
	"fmt"
	"time"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/clock"
	"github.com/kvstore/kvstore/rpc/kvpb"
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

// leaseTable is the leader's side of the cached copies: the holdings it
// granted in this epoch, the grants, and the waits for a write to be
// visible (committed, and no holder still reading an older copy). The
// leader's l.mu guards it.
type leaseTable struct {
	l    *leader
	held holdings // key -> node id -> its copy
}

// sweep forgets holdings whose lease has ended, for keys no write or read
// has looked at since.
func (t *leaseTable) sweep() {
	l := t.l
	now := l.n.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	t.held.sweep(now)
	l.sweepPriorLocked()
}

// pendingLocked is holdings.pending for key at the key's latest write in
// the store, with the followers' matched positions.
func (t *leaseTable) pendingLocked(key string, seq uint64, now clock.Instant, skip *bool) (pending int, next clock.Instant, expired int) {
	if len(t.held[key]) == 0 {
		return 0, next, 0
	}
	it, _ := t.l.n.rep.get(key)
	return t.held.pending(key, seq, it.Version.Seq, now, t.appliedLocked, skip)
}

// appliedLocked is how far holder id has applied this epoch's history, as
// far as the leader knows: the seq its latest answer said it applied (in
// memory: an early answer's received), or 0. Applying an entry drops the
// holder's older copy of its key; the disk has nothing to do with it.
func (t *leaseTable) appliedLocked(id string) uint64 {
	if p := t.l.repl.peers[id]; p != nil {
		return max(p.match, p.received)
	}
	return 0
}

// heldBy reports whether holder id has a holding of key recorded (live or
// not yet swept). Callers hold l.mu.
func (t *leaseTable) heldBy(key, id string) bool {
	_, ok := t.held[key][id]
	return ok
}

// liveLocked counts the nodes holding a lease on a copy of key older than
// seq that has not ended at now: the cached copies the write at seq must
// invalidate.
func (t *leaseTable) liveLocked(key string, seq uint64, now clock.Instant) int {
	return t.held.live(key, seq, now)
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
func (t *leaseTable) grantLocked(key, id string, seq uint64) time.Duration {
	l := t.l
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
	t.held.grant(key, id, seq, n.now().Add(n.cfg.leaderLease()))
	return n.cfg.LeaseDuration
}

// renew grants node id a new lease on each of its copies of keys whose
// version is still the key's latest and visible: the rule of a read
// (leader.read) without the wait, so a copy of a version that is not
// visible, or no longer the latest, is not renewed (its lease in the
// answer is 0) and simply ends. The holder measures the renewed lease from
// when it sent the request, before this grant, as for a Fetch. It fails
// only when this node no longer leads; before the takeover ends it renews
// nothing.
func (t *leaseTable) renew(id string, keys []*kvpb.RenewKey) ([]int64, error) {
	if err := t.l.checkLive(); err != nil {
		return nil, err
	}
	leases := make([]int64, len(keys))
	for start := 0; start < len(keys); start += renewChunk {
		if err := t.renewSome(id, keys[start:min(start+renewChunk, len(keys))], leases[start:]); err != nil {
			return nil, err
		}
	}
	return leases, nil
}

// renewChunk is how many keys renew handles per hold of l.mu: writes
// wait behind it, so it lets go between chunks of a long renewal.
const renewChunk = 64

// renewSome is renew for one chunk of keys, writing each key's
// lease in milliseconds to leases (0: not renewed). It takes l.mu.
func (t *leaseTable) renewSome(id string, keys []*kvpb.RenewKey, leases []int64) error {
	l := t.l
	n := l.n
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.serving {
		return nil
	}
	for i, k := range keys {
		v := fromPos(k.Version)
		cur, err := n.rep.current(k.Key, l.tenureLocked())
		if err != nil {
			return fmt.Errorf("node %s: %w", n.cfg.ID, err)
		}
		if cur.Version != v || !l.visibleNowLocked(k.Key, v.Seq) {
			continue
		}
		lease := t.grantLocked(k.Key, id, v.Seq)
		if faultsOn && n.cfg.Faults.RenewWithoutHolding && lease > 0 {
			// The deliberate bug: renew the copy but forget its holder,
			// so that the next write of the key does not wait for it.
			delete(t.held[k.Key], id)
		}
		leases[i] = lease.Milliseconds()
	}
	return nil
}

// awaitVisible waits until the entry at seq (a write of key, or 0 for a key
// never written) is visible: committed, and no holder can still read a copy
// of key older than it. The commit wait is bounded by QuorumTimeout (then
// ErrNoQuorum), the holder wait by their leases. For a write (write true)
// every failure is outcome unknown. then, unless nil, runs under l.mu at
// the moment the entry is found visible (what the caller does with a
// visible entry, without taking the lock again) and its error is
// returned.
//
// A wait for the commit index wakes only when the index reaches seq
// (commitWaiters), at the latest every Heartbeat to look at the leader's
// liveness; a wait for holders wakes at every step of the replication,
// since any answer may say a holder applied seq.
func (t *leaseTable) awaitVisible(ctx context.Context, key string, seq uint64, write bool, then func() error) error {
	l := t.l
	n := l.n
	qDeadline := n.now().Add(n.cfg.QuorumTimeout)
	unknown := func(err error) error {
		if write {
			return fmt.Errorf("%w: %w", kvstore.ErrOutcomeUnknown, err)
		}
		return err
	}
	// For kvstore_lease_waits_total (writes): blocked is when only holders
	// still kept the write waiting; leaseEnded is set when a holder that was
	// pending then was forgotten because its lease ran out, not because it
	// applied the write.
	var blocked clock.Instant
	leaseEnded := false
	skip := write && (faultsOn && n.cfg.Faults.SkipInvalidation)
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		now := n.now()
		l.mu.Lock()
		committed := l.commit >= seq
		pending, next, expired := t.pendingLocked(key, seq, now, &skip)
		if !write && (faultsOn && n.cfg.Faults.SkipReadGate) {
			pending = 0 // the deliberate bug
		}
		if expired > 0 && !blocked.IsZero() {
			leaseEnded = true
		}
		if committed && pending == 0 {
			var err error
			if then != nil {
				err = then()
			}
			l.mu.Unlock()
			if write && leaseEnded {
				n.met.leaseWaits.Inc()
				n.met.leaseWaitSeconds.Add(now.Sub(blocked).Seconds())
			}
			return err
		}
		var ch <-chan struct{} = l.changedCh
		if !committed {
			ch = l.committing.wait(seq)
		}
		l.mu.Unlock()
		if l.ctx.Err() != nil {
			// A new leader waits out every lease of this epoch.
			return unknown(fmt.Errorf("node %s: %w (epoch %d ended: %v)", n.cfg.ID, kvstore.ErrNotLeader, l.epoch, context.Cause(l.ctx)))
		}
		if err := l.checkLive(); err != nil {
			return unknown(err)
		}
		if ctx.Err() != nil {
			return unknown(ctxErr(ctx))
		}
		if !committed && !now.Before(qDeadline) {
			return unknown(fmt.Errorf("node %s: %w: entry %d not on a majority of voters after %v", n.cfg.ID, kvstore.ErrNoQuorum, seq, n.cfg.QuorumTimeout))
		}
		if committed && blocked.IsZero() {
			blocked = now
		}
		wake := min(qDeadline.Sub(now), n.cfg.Heartbeat)
		if committed {
			wake = time.Hour
		}
		if pending > 0 {
			wake = min(wake, next.Sub(now))
		}
		if timer == nil {
			timer = time.NewTimer(max(wake, time.Millisecond))
		} else {
			timer.Reset(max(wake, time.Millisecond))
		}
		select {
		case <-ch:
		case <-timer.C:
		case <-l.ctx.Done():
		case <-ctx.Done():
		}
	}
}

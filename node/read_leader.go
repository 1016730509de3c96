package node

import (
	"context"
	"fmt"
	"time"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/clock"
	"github.com/kvstore/kvstore/store"
)

// readResult is what the leader answers a read: the key's visible value
// (found false: none), its version and the lease the reader may cache it
// for (0: none).
type readResult struct {
	value   string
	found   bool
	version store.Version
	lease   time.Duration
}

// read returns key's visible value and grants node from a lease on it,
// unless a newer write of key arrived while the read waited for visibility:
// then the value is returned with no lease (0).
func (l *leader) read(ctx context.Context, key, from string) (readResult, error) {
	n := l.n
	if err := l.waitServing(ctx); err != nil {
		return readResult{}, err
	}
	if err := l.checkLive(); err != nil {
		return readResult{}, err
	}
	it, ok := n.rep.get(key)
	// The value may come from a write that is not visible yet (not on
	// a majority, or older copies still readable): serve it only once
	// it is.
	if err := l.awaitVisible(ctx, key, it.Version.Seq, false); err != nil {
		return readResult{}, err
	}
	l.mu.Lock()
	cur, err := n.rep.current(key, l.tenureLocked())
	if err != nil {
		l.mu.Unlock()
		return readResult{}, fmt.Errorf("node %s: %w", n.cfg.ID, err)
	}
	// Liveness may have been lost while this read waited: no value and
	// no lease from a leader that cannot prove it still leads.
	if err := l.checkLive(); err != nil {
		l.mu.Unlock()
		return readResult{}, err
	}
	res := readResult{value: it.Value, found: ok && !it.Deleted, version: it.Version}
	if cur.Version == it.Version {
		res.lease = l.grantLocked(key, from, it.Version.Seq)
	}
	// Otherwise a newer write came while this read waited (and may be
	// acknowledged already): the value read is still a linearizable
	// answer (it was the latest write of key when the read looked,
	// after the read began, and visible before it returns), but no
	// copy of it may be cached. Reading again instead would starve a
	// reader of a key written continuously.
	l.mu.Unlock()
	return res, nil
}

// awaitVisible waits until the entry at seq (a write of key, or 0 for a key
// never written) is visible: committed, and no holder can still read a copy
// of key older than it. The commit wait is bounded by QuorumTimeout (then
// ErrNoQuorum), the holder wait by their leases. For a write (write true)
// every failure is outcome unknown.
func (l *leader) awaitVisible(ctx context.Context, key string, seq uint64, write bool) error {
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
	for {
		now := n.now()
		l.mu.Lock()
		committed := l.commit >= seq
		pending, next, expired := l.pendingHoldersLocked(key, seq, now, &skip)
		if !write && (faultsOn && n.cfg.Faults.SkipReadGate) {
			pending = 0 // the deliberate bug
		}
		ch := l.changedCh
		l.mu.Unlock()
		if expired > 0 && !blocked.IsZero() {
			leaseEnded = true
		}
		if committed && pending == 0 {
			if write && leaseEnded {
				n.met.leaseWaits.Inc()
				n.met.leaseWaitSeconds.Add(now.Sub(blocked).Seconds())
			}
			return nil
		}
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
		wake := qDeadline.Sub(now)
		if committed {
			wake = time.Hour
		}
		if pending > 0 {
			wake = min(wake, next.Sub(now))
		}
		t := time.NewTimer(max(wake, time.Millisecond))
		select {
		case <-ch:
		case <-t.C:
		case <-l.ctx.Done():
		case <-ctx.Done():
		}
		t.Stop()
	}
}

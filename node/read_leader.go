package node

import (
	"context"
	"fmt"
	"time"

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
	if err := l.waitServing(ctx); err != nil {
		return readResult{}, err
	}
	if err := l.checkLive(); err != nil {
		return readResult{}, err
	}
	res, wait, err := l.readNow(key, from)
	if err != nil || wait == nil {
		return res, err
	}
	return wait(ctx)
}

// readNow is read once the leader serves, up to its wait: it answers at
// once if key's latest write is visible, or, while it is not, with the
// latest value that is (no lease) if the leader knows it. Otherwise it
// returns wait, which waits until that write is visible and answers; it
// changed nothing a reader can observe then (it may have forgotten ended
// leases), so a caller that must not block (a forwarded fetch,
// forward.go) may drop wait and read again later.
func (l *leader) readNow(key, from string) (res readResult, wait func(context.Context) (readResult, error), err error) {
	n := l.n
	var it store.Item
	var ok bool
	// serve answers with it, the visible value: under l.mu, right where
	// it was found visible.
	serve := func() error {
		cur, err := n.rep.current(key, l.tenureLocked())
		if err != nil {
			return fmt.Errorf("node %s: %w", n.cfg.ID, err)
		}
		// Liveness may have been lost while this read waited: no value
		// and no lease from a leader that cannot prove it still leads.
		if err := l.checkLive(); err != nil {
			return err
		}
		res = readResult{value: it.Value, found: ok && !it.Deleted, version: it.Version}
		if cur.Version == it.Version {
			res.lease = l.leases.grantLocked(key, from, it.Version.Seq)
		}
		// Otherwise a newer write came while this read waited (and may
		// be acknowledged already): the value read is still a
		// linearizable answer (it was the latest write of key when the
		// read looked, after the read began, and visible before it
		// returns), but no copy of it may be cached. Reading again
		// instead would starve a reader of a key written continuously.
		return nil
	}
	l.mu.Lock()
	it, ok = n.rep.get(key)
	visible := l.visibleNowLocked(key, it.Version.Seq)
	if faultsOn && n.cfg.Faults.SkipReadGate && l.commit >= it.Version.Seq {
		visible = true // the deliberate bug: committed is enough (awaitVisible)
	}
	if visible && !(faultsOn && n.cfg.Faults.StalePrior) {
		err := serve()
		l.mu.Unlock()
		if err != nil {
			return readResult{}, nil, err
		}
		return res, nil, nil
	}
	if stale := faultsOn && n.cfg.Faults.StalePrior; stale || !visible {
		// The key's latest write is not visible yet: answer with the
		// latest value that is, without a lease (prior.go), if the
		// leader knows it.
		if p, use := l.priorLocked(key, it.Version.Seq); use {
			// As below: the store must still be this leadership's, and
			// the leader live.
			_, err := n.rep.current(key, l.tenureLocked())
			if err != nil {
				err = fmt.Errorf("node %s: %w", n.cfg.ID, err)
			} else {
				err = l.checkLive()
			}
			l.mu.Unlock()
			if err != nil {
				return readResult{}, nil, err
			}
			n.reader.priorReads.Add(1)
			return readResult{value: p.item.Value, found: p.found, version: p.item.Version}, nil, nil
		}
	}
	l.mu.Unlock()
	// The value comes from a write that is not visible yet (not on a
	// majority, or older copies still readable): serve it only once it
	// is.
	return readResult{}, func(ctx context.Context) (readResult, error) {
		if err := l.leases.awaitVisible(ctx, key, it.Version.Seq, false, serve); err != nil {
			return readResult{}, err
		}
		return res, nil
	}, nil
}

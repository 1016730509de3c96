package node

import (
	"context"
	"fmt"
	"time"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/durable"
	"github.com/kvstore/kvstore/store"
)

// writeResult is what the leader answers a write: the version it was
// applied at and the lease the writer may cache the value for (0: none).
type writeResult struct {
	version store.Version
	lease   time.Duration
}

// tenureLocked is what this leader expects of the node's replica
// (replica.heldLocked): a node that took a later leader's Append (or
// Prepare) ends this leadership (nodeEvents.promised), but a write or read
// already past its checks must not use a store another epoch may have
// replaced. Callers hold l.mu.
func (l *leader) tenureLocked() tenure {
	return tenure{epoch: l.epoch, ld: l.ld, started: l.started, last: store.Version{Epoch: l.epoch, Seq: l.lastSeq}}
}

// write appends a set or delete, waits until it is visible (a majority of
// voters hold it and no holder can still read an older copy of the key), and
// grants the writer a lease on the new value unless a newer write of the key
// came meanwhile.
//
// Writes of one key are pipelined: each is appended at once, and waits
// only for its own visibility. Since the log commits in order, a write of a
// key is visible no later than the next write of it.
func (l *leader) write(ctx context.Context, op store.Op, key, value, reqID, from string) (writeResult, error) {
	if err := l.waitServing(ctx); err != nil {
		return writeResult{}, err
	}
	if err := l.checkLive(); err != nil {
		return writeResult{}, err
	}
	a, err := l.appendWrite(op, key, value, reqID)
	if err != nil {
		return writeResult{}, err
	}
	return l.awaitWrite(ctx, a, from)
}

// appended is a write the leader appended (or found applied already: a
// retry), on its way to visibility.
type appended struct {
	e   store.Entry
	ver store.Version
	dup bool
	p   *durable.Pending // the entry's submission (nil: none, or no disk)
}

// appendWrite is write's first step, once the leader serves: it appends
// the write with the next seq and wakes the replicators, unless its
// request id was applied already (dup). It waits for no disk and no other
// node, only for the leader's and the replica's locks, so a forwarded
// write can take it as soon as it arrives (forward.go).
func (l *leader) appendWrite(op store.Op, key, value, reqID string) (appended, error) {
	n := l.n
	l.mu.Lock()
	defer l.mu.Unlock()
	e := store.Entry{Version: store.Version{Epoch: l.epoch, Seq: l.lastSeq + 1}, Op: op, Key: key, Value: value, ReqID: reqID}
	res, err := n.rep.lead(l.tenureLocked(), e)
	if err != nil {
		return appended{}, fmt.Errorf("node %s: %w", n.cfg.ID, err)
	}
	if !res.dup {
		l.appendingLocked(key, res.prev, res.had, res.ver.Seq)
		l.add(e)
		n.met.invalidationsSent.Add(float64(l.leases.liveLocked(key, res.ver.Seq, n.now())))
	}
	l.repl.advanceCommitLocked()
	if !res.dup {
		// A retry appends nothing: waking the replicators would only
		// cancel their waits for the followers' disks (replicate).
		for _, p := range l.repl.peers {
			select {
			case p.wake <- struct{}{}:
			default:
			}
		}
	}
	return appended{e: e, ver: res.ver, dup: res.dup, p: res.p}, nil
}

// awaitWrite is write's second step: it waits until the appended write a
// is on this node's disk and visible, and grants from a lease on its
// value.
func (l *leader) awaitWrite(ctx context.Context, a appended, from string) (writeResult, error) {
	n := l.n
	key, ver := a.e.Key, a.ver
	if a.p != nil {
		// Bounded by the disk, not by the client: wait even if the client
		// gives up, so that the entry counts toward the majority.
		if err := n.waitEntriesDurable(l.ctx, a.p); err != nil {
			l.cancel(fmt.Errorf("leader cannot persist: %w", err))
			return writeResult{version: ver}, fmt.Errorf("%w: node %s: %w", kvstore.ErrOutcomeUnknown, n.cfg.ID, err)
		}
		l.repl.markDurable(ver.Seq)
	}
	var lease time.Duration
	err := l.leases.awaitVisible(ctx, key, ver.Seq, true, func() error {
		if a.dup {
			// A retry of a write that was already applied: the value may
			// have been overwritten since, so the writer may not cache it.
			l.visibleLocked(key, ver, nil)
			return nil
		}
		l.visibleLocked(key, ver, &a.e)
		lease = l.leases.grantLocked(key, from, ver.Seq)
		return nil
	})
	return writeResult{version: ver, lease: lease}, err
}

package node

// Lease renewal (docs/design.md, Cached reads and leases): a copy that is
// read in the last half of its lease is renewed at the leader, many keys in
// one Renew, without its value, so that a key read steadily stays cached
// instead of costing a Fetch every lease.

import (
	"context"
	"errors"
	"time"

	"github.com/kvstore/kvstore/clock"
	"github.com/kvstore/kvstore/rpc"
	"github.com/kvstore/kvstore/rpc/kvpb"
	"github.com/kvstore/kvstore/store"
)

// wantRenew queues key's copy at version v for renewal. A key already
// queued costs one lock-free lookup: hot keys are read many times while
// their renewal is in flight.
func (rd *reader) wantRenew(key string, v store.Version) {
	if _, ok := rd.renewing.Load(key); ok {
		return
	}
	if _, loaded := rd.renewing.LoadOrStore(key, v); !loaded {
		select {
		case rd.renewKick <- struct{}{}:
		default:
		}
	}
}

// renewLoop renews the queued copies until ctx ends: one Renew at a time,
// each carrying every key queued meanwhile (up to maxRenewKeys).
func (rd *reader) renewLoop(ctx context.Context) {
	for {
		select {
		case <-rd.renewKick:
		case <-ctx.Done():
			return
		}
		for ctx.Err() == nil {
			more, failed := rd.renewBatch(ctx)
			if failed {
				// A leader out of reach, or copies it would not renew
				// (a newer write in flight, a takeover running): the
				// reads of those copies queue them again at once, so
				// wait before the next call rather than spin.
				t := time.NewTimer(rd.renewWithin / 10)
				select {
				case <-t.C:
				case <-ctx.Done():
				}
				t.Stop()
			}
			if !more {
				break
			}
		}
	}
}

// renewBatch renews up to maxRenewKeys queued copies and unqueues them; it
// reports whether more were queued than it took, and whether the call
// failed or a copy was not renewed.
func (rd *reader) renewBatch(ctx context.Context) (more, failed bool) {
	n := rd.n
	var keys []*kvpb.RenewKey
	rd.renewing.Range(func(k, v any) bool {
		if len(keys) == maxRenewKeys {
			more = true
			return false
		}
		keys = append(keys, &kvpb.RenewKey{Key: k.(string), Version: toPos(v.(store.Version))})
		return true
	})
	if len(keys) == 0 {
		return false, false
	}
	defer func() {
		for _, k := range keys {
			rd.renewing.CompareAndDelete(k.Key, fromPos(k.Version))
		}
	}()
	st, sent := n.serving.Load(), n.now()
	rd.renewCalls.Add(1)
	epoch, leases, err := rd.renewAtLeader(ctx, keys)
	if err != nil {
		// The copies end with their leases; a read then fetches anew.
		n.log.Debug("lease renewal failed", "keys", len(keys), "err", err)
		return more, true
	}
	renewed := 0
	for i, k := range keys {
		if i >= len(leases) || leases[i] <= 0 {
			failed = true
			continue
		}
		if rd.extend(st, k.Key, fromPos(k.Version), epoch, time.Duration(leases[i])*time.Millisecond, sent) {
			renewed++
		}
	}
	rd.renewals.Add(uint64(renewed))
	return more, failed
}

// errNoRenewer: this node knows no leader to renew copies at.
var errNoRenewer = errors.New("no leader in view")

// renewAtLeader asks the leader in this node's view to renew keys: over
// Renew, or directly when this node leads. It returns the leader's epoch and
// a lease per key (0: not renewed).
func (rd *reader) renewAtLeader(ctx context.Context, keys []*kvpb.RenewKey) (int64, []int64, error) {
	n := rd.n
	v := n.view.Load()
	if v.leader.ID == n.cfg.ID {
		l := n.lead.Load()
		if l == nil || l.epoch != v.leader.Epoch {
			return 0, nil, errNoRenewer
		}
		leases, err := l.leases.renew(n.cfg.ID, keys)
		return l.epoch, leases, err
	}
	addr := v.members[v.leader.ID]
	if v.leader.ID == "" || addr == "" {
		return 0, nil, errNoRenewer
	}
	c, err := n.pool.Peer(addr)
	if err != nil {
		return 0, nil, err
	}
	tctx, cancel := context.WithTimeout(ctx, n.cfg.RPCTimeout)
	defer cancel()
	cctx, done := n.toLeader(tctx, v.leader)
	defer done()
	resp, err := c.Renew(cctx, &kvpb.RenewRequest{Cluster: n.cfg.Cluster, FromId: n.cfg.ID, Keys: keys})
	if err != nil {
		return 0, nil, callErr(cctx, rpc.FromStatus(err))
	}
	return resp.Epoch, resp.LeaseMs, nil
}

// extend renews key's cached copy at version v to sent+lease, under the
// rules of install: the leader of epoch granted it, the node is still in
// the serving state st the request was sent under, and the store holds no
// newer write of key. It reports whether the copy was there to renew.
func (rd *reader) extend(st *servingState, key string, v store.Version, epoch int64, lease time.Duration, sent clock.Instant) bool {
	n := rd.n
	ok := false
	n.rep.whenCurrent(epoch, key, v, func(store.Item, bool) {
		if n.serving.Load() != st {
			return
		}
		ok = rd.cache.extend(key, v, sent.Add(lease))
	})
	return ok
}

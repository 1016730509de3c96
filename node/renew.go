package node

// Lease renewal (docs/design.md, Cached reads and leases): every eighth
// of a lease the node looks through its cache for copies with less than
// half their lease left and renews them at the leader, many keys in one
// Renew, without their values, so that a key read now and then stays
// cached instead of costing a Fetch every lease. A copy nobody read since
// its last renewal is renewed at most renewIdle times in a row, then let
// go with its lease; the copy of a write this node made is renewed only
// once something read it (reader.install).

import (
	"context"
	"errors"
	"time"

	"github.com/kvstore/kvstore/clock"
	"github.com/kvstore/kvstore/rpc"
	"github.com/kvstore/kvstore/rpc/kvpb"
	"github.com/kvstore/kvstore/store"
)

const (
	// renewTicks is how many times per lease the node looks for copies
	// to renew. A copy is renewed once less than half its lease is left,
	// so its renewal has at least 3/8 of a lease to come back.
	renewTicks = 8
	// renewIdle is how many renewals in a row a copy nobody reads gets
	// (about renewIdle/2 leases) before it is let go.
	renewIdle = 16
	// renewBudget bounds the copies renewed per look (16 Renews): a node
	// with more due copies lets the rest end with their leases.
	renewBudget = 16 * maxRenewKeys
)

// renewLoop renews due copies until ctx ends.
func (rd *reader) renewLoop(ctx context.Context) {
	n := rd.n
	t := time.NewTicker(max(n.cfg.LeaseDuration/renewTicks, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
		rd.renewDue(ctx)
	}
}

// renewDue renews the copies due for renewal (cache.due), in batches of
// maxRenewKeys, and stops at the first batch that fails: the next look
// tries again.
func (rd *reader) renewDue(ctx context.Context) {
	n := rd.n
	if n.serving.Load().state != StateOK {
		return // the copies are not readable, and go when it serves again
	}
	// Faults.IgnoreLease serves copies past their lease: keep them.
	forget := !(faultsOn && n.cfg.Faults.IgnoreLease)
	due := rd.cache.due(n.now(), rd.renewWithin, renewIdle, renewBudget, forget)
	for len(due) > 0 && ctx.Err() == nil {
		batch := due[:min(len(due), maxRenewKeys)]
		due = due[len(batch):]
		if !rd.renewBatch(ctx, batch) {
			return
		}
	}
}

// renewBatch renews keys (at most maxRenewKeys) at the leader; it reports
// whether the call succeeded.
func (rd *reader) renewBatch(ctx context.Context, keys []*kvpb.RenewKey) bool {
	n := rd.n
	st, sent := n.serving.Load(), n.now()
	rd.renewCalls.Add(1)
	epoch, leases, err := rd.renewAtLeader(ctx, keys)
	if err != nil {
		// The copies end with their leases; a read then fetches anew.
		n.log.Debug("lease renewal failed", "keys", len(keys), "err", err)
		return false
	}
	renewed := 0
	for i, k := range keys {
		if i >= len(leases) || leases[i] <= 0 {
			continue
		}
		if rd.extend(st, k.Key, fromPos(k.Version), epoch, time.Duration(leases[i])*time.Millisecond, sent) {
			renewed++
		}
	}
	rd.renewals.Add(uint64(renewed))
	return true
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
	resp, err := c.Renew(cctx, &kvpb.RenewRequest{Cluster: n.cfg.Cluster, Incarnation: n.incarnationSent(), FromId: n.cfg.ID, Keys: keys})
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

package node

// The read path (docs/design.md, Cached reads and leases): Get answers
// from the cache while the key's lease and the node's session are live,
// and otherwise fetches the key from the leader (or reads it as the
// leader: leader.read) and caches the answer under the lease the leader
// granted.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/clock"
	"github.com/kvstore/kvstore/coord"
	"github.com/kvstore/kvstore/rpc"
	"github.com/kvstore/kvstore/rpc/kvpb"
	"github.com/kvstore/kvstore/store"
)

// Get returns key's value through this node. A key cached here under a
// valid lease is answered from memory; otherwise the leader is asked.
func (n *Node) Get(ctx context.Context, key string) (value string, found bool, err error) {
	return n.reader.read(ctx, key)
}

// read is Get.
func (rd *reader) read(ctx context.Context, key string) (value string, found bool, err error) {
	n := rd.n
	if v, f, ok := rd.readCached(key); ok {
		return v, f, nil
	}
	start := n.now()
	value, found, err = rd.doGet(ctx, key)
	n.met.observe(opGet, start, err)
	return value, found, err
}

// readCached is read's first step alone: key's value if this node answers
// it from its cache now (ok), counted as read counts it; it never blocks.
func (rd *reader) readCached(key string) (value string, found, ok bool) {
	n := rd.n
	start := n.now()
	v, f, ok, hit := rd.cachedGet(key, start)
	if ok {
		n.met.cachedRead(start, hit)
	}
	return v, f, ok
}

// doGet is Get without the metrics.
func (rd *reader) doGet(ctx context.Context, key string) (value string, found bool, err error) {
	n := rd.n
	if err := checkKey("key", key, n.limits.clientKeys()); err != nil {
		return "", false, err
	}
	if v, f, ok, _ := rd.cachedGet(key, n.now()); ok {
		return v, f, nil
	}
	octx, done, err := n.opContext(ctx)
	if err != nil {
		return "", false, err
	}
	defer done()
	return rd.get(octx, key)
}

// reader is the node's read path below Get: the read cache, the fetches
// of keys in flight to the leader, shared by concurrent misses
// (fetchMerged), and the read counters.
type reader struct {
	n     *Node
	cache *cache // its shards have their own locks (cache.go)

	// flightMu guards flights: the fetch of each key in flight to the
	// leader.
	flightMu sync.Mutex
	flights  map[string]*flight

	misses      atomic.Uint64 // reads fetched from the leader
	leaderReads atomic.Uint64 // reads this node answered as the leader
	// priorReads counts the reads this node answered as the leader with a
	// key's latest visible value while a newer write was in flight.
	priorReads atomic.Uint64

	// renewWithin: copies with less of their lease left are renewed
	// (renew.go).
	renewWithin time.Duration
	renewals    atomic.Uint64 // copies whose lease was renewed
	renewCalls  atomic.Uint64 // renewals asked of the leader (calls of Renew)
}

func newReader(n *Node) *reader {
	return &reader{n: n, cache: newCache(), flights: make(map[string]*flight),
		renewWithin: n.cfg.LeaseDuration / 2}
}

// cachedGet is the local read path: no allocation, one read lock of one
// cache shard (and, once per renewal of a copy, a write lock to mark it
// read). ok is false when the key must be fetched from the leader;
// hit numbers the reads answered by that shard (for sampling).
func (rd *reader) cachedGet(key string, now clock.Instant) (value string, found, ok bool, hit uint64) {
	n := rd.n
	if key == "" {
		return "", false, false, 0
	}
	st := n.serving.Load()
	if !(faultsOn && n.cfg.Faults.IgnoreLease) {
		if st.state != StateOK || st.sess == nil || !now.Before(st.sess.Deadline()) {
			return "", false, false, 0
		}
		if n.view.Load().leader.Epoch != n.rep.epoch() {
			return "", false, false, 0
		}
	}
	s := rd.cache.shard(key)
	s.mu.RLock()
	e, in := s.m[key]
	s.mu.RUnlock()
	if !in || (!(faultsOn && n.cfg.Faults.IgnoreLease) && !now.Before(e.expiry)) {
		return "", false, false, 0
	}
	if !e.used {
		// The first read since the copy's last renewal: it stays worth
		// renewing (renew.go).
		rd.cache.markUsed(key, e.version)
	}
	return e.value, e.found, true, s.hits.Add(1)
}

// dropCache forgets every cached copy.
func (rd *reader) dropCache() {
	n := rd.n
	if faultsOn && n.cfg.Faults.IgnoreLease {
		return
	}
	rd.cache.clear()
}

// invalidate drops key's cached copy if it is older than v.
func (rd *reader) invalidate(key string, v store.Version) {
	n := rd.n
	if rd.cache.dropOlder(key, v) {
		n.met.invalidationsApplied.Inc()
	}
}

// install caches a value the leader of epoch handed out as committed, unless
// it is older than what this node has applied or cached since (a reply that
// overtook an invalidation), or the node left the serving state st the
// request was sent under (leaving it dropped the cache between two changes
// of the replicated state, as here: a reply installed after that drop
// would outlive it). sent is when the request left this node: the lease
// runs from then. written marks the copy of a write this node made: it is
// renewed only once it is read (renew.go).
func (rd *reader) install(st *servingState, key, value string, found bool, v store.Version, epoch int64, lease time.Duration, sent clock.Instant, written bool) {
	n := rd.n
	if lease <= 0 {
		return
	}
	n.rep.whenCurrent(epoch, key, v, func(held store.Item, ok bool) {
		if n.serving.Load() != st {
			return
		}
		if ok && held.Version == v && !held.Deleted && held.Value == value {
			// The store holds this very version: share its copy of the
			// value instead of keeping a second one (a fetched value
			// arrives in a buffer of its own).
			value = held.Value
		}
		e := cacheEntry{value: value, found: found, version: v, expiry: sent.Add(lease)}
		if written {
			e.idle = renewIdle // not renewed until read
		}
		rd.cache.put(key, e)
	})
}

// nodeEvents keeps the node's read cache and leadership in step with its
// replicated state (replica.events).
type nodeEvents struct{ n *Node }

// promised: the cache was granted under an older leader, and this node's
// own leadership of an older epoch ends (a newer leader may now change its
// store).
func (ev nodeEvents) promised(epoch int64) {
	n := ev.n
	n.leaderMoved()
	n.reader.dropCache()
	if l := n.lead.Load(); l != nil && l.epoch < epoch {
		l.cancel(fmt.Errorf("node %s promised epoch %d: %w", n.cfg.ID, epoch, kvstore.ErrStaleEpoch))
	}
}

// applied: a cached copy older than the write goes.
func (ev nodeEvents) applied(e store.Entry) {
	if e.Op != store.OpNoop {
		ev.n.reader.invalidate(e.Key, e.Version)
	}
}

// restored: every cached copy may be stale.
func (ev nodeEvents) restored() { ev.n.reader.dropCache() }

// get reads key from the leader (or as the leader) and caches the reply.
func (rd *reader) get(ctx context.Context, key string) (string, bool, error) {
	n := rd.n
	if err := checkKey("key", key, storedKeys); err != nil {
		// A key the leader would refuse, or that cannot be sent.
		return "", false, fmt.Errorf("node %s: %w", n.cfg.ID, err)
	}
	var lastErr error
	joined := false // this read has waited for another read's fetch of key
	for {
		l, addr, target, err := n.leaderTarget(ctx)
		if err != nil {
			return "", false, joinLast(err, lastErr)
		}
		if l != nil {
			st, sent := n.serving.Load(), n.now()
			r, err := l.read(ctx, key, n.cfg.ID)
			if err == nil {
				rd.leaderReads.Add(1)
				rd.install(st, key, r.value, r.found, r.version, l.epoch, r.lease, sent, false)
				return r.value, r.found, nil
			}
			if !retryable(err) {
				return "", false, err
			}
			lastErr = err
		} else {
			resp, err := rd.fetchMerged(ctx, addr, target, key, &joined)
			if err == nil && resp != nil {
				rd.misses.Add(1)
				return resp.Value, resp.Found, nil
			}
			if err == nil { // waited for another read's fetch
				if v, f, ok, _ := rd.cachedGet(key, n.now()); ok {
					return v, f, nil
				}
				continue
			}
			if !retryable(err) {
				return "", false, err
			}
			lastErr = n.leaderErr(target, addr, err)
		}
		if err := n.retryPause(ctx); err != nil {
			return "", false, joinLast(err, lastErr)
		}
	}
}

// fetchMerged fetches key from the leader at addr, merging concurrent
// misses of one key into one fetch: the first read sends it and installs the
// answer in the cache; reads that arrive meanwhile wait for it (resp and err
// nil) and then look in the cache. They may not take its answer itself: it
// may have been read at the leader before they began, and a write
// acknowledged in between would make it stale. A fetch found in flight after
// such a wait was sent after the read began, so its answer is returned to it
// as its own. joined carries that state across calls.
func (rd *reader) fetchMerged(ctx context.Context, addr string, target coord.Leader, key string, joined *bool) (*kvpb.FetchResponse, error) {
	n := rd.n
	rd.flightMu.Lock()
	f := rd.flights[key]
	if f == nil {
		f = &flight{done: make(chan struct{})}
		rd.flights[key] = f
		rd.flightMu.Unlock()
		st, sent := n.serving.Load(), n.now()
		f.resp, f.err = rd.fetch(ctx, addr, target, key)
		if f.err == nil {
			rd.install(st, key, f.resp.Value, f.resp.Found, fromPos(f.resp.Version), f.resp.Epoch, time.Duration(f.resp.LeaseMs)*time.Millisecond, sent, false)
		}
		rd.flightMu.Lock()
		delete(rd.flights, key)
		rd.flightMu.Unlock()
		close(f.done)
		return f.resp, f.err
	}
	rd.flightMu.Unlock()
	select {
	case <-f.done:
	case <-ctx.Done():
		return nil, ctxErr(ctx)
	}
	if *joined && f.err == nil {
		return f.resp, nil
	}
	// Look in the cache, or (if that fetch failed for its own reasons, its
	// deadline say) try again, as the sender of the next fetch if need be.
	*joined = true
	return nil, nil
}

// flight is one fetch from the leader that concurrent misses of a key share.
type flight struct {
	done chan struct{} // closed when resp and err are set
	resp *kvpb.FetchResponse
	err  error
}

// fetch reads key at the leader target (at addr), on the node's Forward
// stream to addr (forward.go) or, to a leader without Forward, in a Fetch
// call of its own. The call ends as soon as this node sees another leader
// (toLeader): get then reads at the new one.
func (rd *reader) fetch(ctx context.Context, addr string, target coord.Leader, key string) (*kvpb.FetchResponse, error) {
	n := rd.n
	c, err := n.pool.Peer(addr)
	if err != nil {
		return nil, err
	}
	cctx, done := n.toLeader(ctx, target)
	defer done()
	if cctx.Err() != nil {
		return nil, callErr(cctx, ctxErr(cctx))
	}
	req := &kvpb.FetchRequest{Cluster: n.cfg.Cluster, Incarnation: n.incarnationSent(), Key: key, FromId: n.cfg.ID}
	resp, err := n.forwarder.fetch(cctx, c, addr, req)
	if errors.Is(err, errUseCall) {
		resp, err = c.Fetch(cctx, req)
	}
	if err != nil {
		return nil, callErr(cctx, rpc.FromStatus(err))
	}
	return resp, nil
}

package node

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kvstore/kvstore/clock"
	"github.com/kvstore/kvstore/rpc/kvpb"
	"github.com/kvstore/kvstore/store"
)

// cacheShards is how many independently locked parts the read cache has. A
// cached read locks one shard for reading; with one lock for the whole
// cache, every read on every core would update the same lock word, and the
// cores would pass its cache line back and forth.
const cacheShards = 64

// cache is a node's read cache: key -> copy, in shards by key hash.
type cache struct {
	seed   maphash.Seed
	shards [cacheShards]cacheShard
}

// cacheShard is one part of the cache, padded to its own cache lines.
type cacheShard struct {
	mu   sync.RWMutex // guards m
	m    map[string]cacheEntry
	hits atomic.Uint64 // reads answered from this shard
	_    [88]byte
}

type cacheEntry struct {
	value   string
	found   bool
	version store.Version
	expiry  clock.Instant // on the node's clock
	// used: read since it was installed or last picked for renewal;
	// idle: picked for renewal that many times in a row unread.
	used bool
	idle uint8
}

func newCache() *cache {
	c := &cache{seed: maphash.MakeSeed()}
	for i := range c.shards {
		c.shards[i].m = make(map[string]cacheEntry)
	}
	return c
}

func (c *cache) shard(key string) *cacheShard {
	return &c.shards[maphash.String(c.seed, key)%cacheShards]
}

// hits counts the reads answered from the cache.
func (c *cache) hits() uint64 {
	var n uint64
	for i := range c.shards {
		n += c.shards[i].hits.Load()
	}
	return n
}

// clear forgets every copy.
func (c *cache) clear() {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		clear(s.m)
		s.mu.Unlock()
	}
}

// dropOlder forgets key's copy if it is older than v, and reports whether
// it did.
func (c *cache) dropOlder(key string, v store.Version) bool {
	s := c.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.m[key]; ok && e.version.Less(v) {
		delete(s.m, key)
		return true
	}
	return false
}

// holds reports whether the cache has a copy of key, live or not.
func (c *cache) holds(key string) bool {
	s := c.shard(key)
	s.mu.RLock()
	_, ok := s.m[key]
	s.mu.RUnlock()
	return ok
}

// put stores e unless the cache holds a newer copy of key.
func (c *cache) put(key string, e cacheEntry) {
	s := c.shard(key)
	s.mu.Lock()
	if old, ok := s.m[key]; !ok || !e.version.Less(old.version) {
		s.m[key] = e
	}
	s.mu.Unlock()
}

// extend moves the expiry of key's copy at version v to expiry, if the
// cache still holds that copy and its lease ends sooner. It reports whether
// the copy is there.
func (c *cache) extend(key string, v store.Version, expiry clock.Instant) bool {
	s := c.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[key]
	if !ok || e.version != v {
		return false
	}
	if e.expiry.Before(expiry) {
		e.expiry = expiry
		s.m[key] = e
	}
	return true
}

// markUsed records that key's copy at version v was read.
func (c *cache) markUsed(key string, v store.Version) {
	s := c.shard(key)
	s.mu.Lock()
	if e, ok := s.m[key]; ok && e.version == v && !e.used {
		e.used, e.idle = true, 0
		s.m[key] = e
	}
	s.mu.Unlock()
}

// due picks the copies to renew at now: live, with less than within of
// their lease left, and read since their last renewal or picked fewer
// than maxIdle times in a row unread; at most budget of them. If forget
// is set it forgets the copies whose lease has ended.
func (c *cache) due(now clock.Instant, within time.Duration, maxIdle uint8, budget int, forget bool) []*kvpb.RenewKey {
	var keys []*kvpb.RenewKey
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		for k, e := range s.m {
			if !now.Before(e.expiry) {
				if forget {
					delete(s.m, k)
				}
				continue
			}
			if len(keys) == budget || e.expiry.Sub(now) >= within {
				continue
			}
			if e.used {
				e.used, e.idle = false, 0
			} else if e.idle >= maxIdle {
				continue
			} else {
				e.idle++
			}
			s.m[k] = e
			keys = append(keys, &kvpb.RenewKey{Key: k, Version: toPos(e.version)})
		}
		s.mu.Unlock()
	}
	return keys
}

package node

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/kvstore/kvstore/store"
)

func newUnstartedNode(t *testing.T) *Node {
	t.Helper()
	cfg := DefaultConfig()
	cfg.ID, cfg.Coordinator = "n1", noCoord{}
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Kill)
	return n
}

// TestNoLeaseAfterLivenessLost: a grant checks, under the leader's lock,
// that the leader still leads with a live session; a read whose visibility
// wait outlasted the epoch gets no lease.
func TestNoLeaseAfterLivenessLost(t *testing.T) {
	n := newUnstartedNode(t)
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(errors.New("leadership ended while the read waited"))
	l := newLeader(n, 1, nil, ctx, cancel)
	l.mu.Lock()
	lease := l.leases.grantLocked("k", n.cfg.ID, 0)
	l.mu.Unlock()
	if lease != 0 {
		t.Fatalf("lease %v granted by a leader whose epoch ended", lease)
	}
}

// TestNoInstallAfterSuspension: a fetch reply that arrives after the node
// left the serving state the fetch was sent under is not installed (the
// suspension dropped the cache; installing after the drop would let the
// copy outlive it).
func TestNoInstallAfterSuspension(t *testing.T) {
	n := newUnstartedNode(t)
	st := n.serving.Load() // the state the fetch is sent under
	sent := n.now()
	n.sessions.setServing(nil, StateSuspended, errors.New("session in doubt"))
	n.reader.install(st, "k", "v", true, store.Version{Epoch: 0, Seq: 1}, 0, time.Minute, sent, false)
	if cached(n, "k") {
		t.Fatal("a reply to a fetch sent before the suspension was installed after it")
	}
	// Under the current state it is installed (the test would pass for a
	// node that never installs).
	n.reader.install(n.serving.Load(), "k", "v", true, store.Version{Epoch: 0, Seq: 1}, 0, time.Minute, sent, false)
	if !cached(n, "k") {
		t.Fatal("a reply under the current serving state was not installed")
	}
}

func cached(n *Node, key string) bool {
	s := n.reader.cache.shard(key)
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, ok := s.m[key]
	return ok
}

// TestCachedCopySharesTheStoresValue: a fetched value of the version the
// node's own store holds is cached as the store's copy, not as a second
// one (memory per key on a follower); a version the store does not hold
// yet is cached as it came.
func TestCachedCopySharesTheStoresValue(t *testing.T) {
	n := newUnstartedNode(t)
	value := strings.Repeat("v", 256)
	v1 := store.Version{Epoch: 0, Seq: 1}
	if _, err := n.rep.store.Apply(store.Entry{Version: v1, Op: store.OpSet, Key: "k", Value: value}); err != nil {
		t.Fatal(err)
	}
	held, _ := n.rep.store.Get("k")
	fetched := strings.Clone(value) // as decoded from a Fetch reply
	n.reader.install(n.serving.Load(), "k", fetched, true, v1, 0, time.Minute, n.now(), false)
	e := cacheEntryOf(t, n, "k")
	if e.value != value || unsafe.StringData(e.value) != unsafe.StringData(held.Value) {
		t.Fatal("the cached copy of the version the store holds is a second copy of the value")
	}
	v2 := store.Version{Epoch: 0, Seq: 2}
	newer := strings.Repeat("w", 256)
	n.reader.install(n.serving.Load(), "k", newer, true, v2, 0, time.Minute, n.now(), false)
	if e := cacheEntryOf(t, n, "k"); e.value != newer || e.version != v2 {
		t.Fatalf("a version newer than the store's was cached as %q at %v", e.value, e.version)
	}
}

func cacheEntryOf(t *testing.T, n *Node, key string) cacheEntry {
	t.Helper()
	s := n.reader.cache.shard(key)
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, ok := s.m[key]
	if !ok {
		t.Fatalf("%s not cached", key)
	}
	return e
}

package cluster

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/kvstore/kvstore/internal/soon"
	"github.com/kvstore/kvstore/node"
	"github.com/kvstore/kvstore/rpc/kvpb"
	"github.com/kvstore/kvstore/store"
)

// cachedOnFollower starts a 3-node cluster with leases of lease, writes
// k=v and reads it once through a follower (a fetch). It returns the
// cluster, the leader's and the follower's numbers and the follower.
func cachedOnFollower(t *testing.T, lease time.Duration) (c *Cluster, ld, f int, fnd *node.Node) {
	t.Helper()
	c = newCluster(t, Etcd, 3, func(o *Options) {
		o.Node = func(cfg *node.Config) { cfg.LeaseDuration = lease }
	})
	ld = leaderOf(t, c)
	f = followers(t, c)[0]
	mustPut(t, c, ld, "k", "v")
	expectGet(t, c, f, "k", "v")
	fnd, err := c.Node(f)
	if err != nil {
		t.Fatal(err)
	}
	return c, ld, f, fnd
}

// TestSteadyReadsRenewTheLease: a follower that keeps reading a key keeps
// its copy cached across many leases: the copy is renewed at the leader
// (Renew) before its lease ends instead of expiring and being fetched
// again. Without renewal every lease would end in a miss: over 8 leases
// at least 8 fetches.
func TestSteadyReadsRenewTheLease(t *testing.T) {
	const lease = 500 * time.Millisecond
	c, _, f, fnd := cachedOnFollower(t, lease)
	s0 := fnd.Stats()
	start := time.Now()
	reads := 0
	// 8 leases, and up to 20 while fewer than 4 renewals came (a loaded
	// machine).
	for time.Since(start) < 8*lease || (time.Since(start) < 20*lease && fnd.Stats().Renewals-s0.Renewals < 4) {
		expectGet(t, c, f, "k", "v")
		reads++
		time.Sleep(lease / 25) // a steady reader, not a busy loop
	}
	s1 := fnd.Stats()
	// One lapse is allowed (a renewal answered late on a loaded machine);
	// without renewal there would be one miss per lease.
	if misses := s1.CacheMisses - s0.CacheMisses; misses > 2 {
		t.Fatalf("%d reads over %v cost %d fetches, %d renewals: the copy was not kept (stats %+v)", reads, time.Since(start), misses, s1.Renewals-s0.Renewals, s1)
	}
	t.Logf("%d reads over %v: %d fetches, %d renewals", reads, time.Since(start).Round(time.Millisecond), s1.CacheMisses-s0.CacheMisses, s1.Renewals-s0.Renewals)
}

// TestRenewOnlyTheLatestVisibleVersion: the leader renews a copy only while
// its version is the key's latest write, and only for a follower it
// replicates to. A copy a newer write replaced, however recently it was
// granted, must end with its lease.
func TestRenewOnlyTheLatestVisibleVersion(t *testing.T) {
	c := newCluster(t, Etcd, 3)
	ld := leaderOf(t, c)
	f := followers(t, c)[0]
	lnd, err := c.Node(ld)
	if err != nil {
		t.Fatal(err)
	}
	fnd, err := c.Node(f)
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, c, ld, "k", "v1")
	_, _, v1 := lnd.LocalItem("k")
	mustPut(t, c, ld, "k", "v2")
	_, _, v2 := lnd.LocalItem("k")
	renew := func(from string, v store.Version) int64 {
		t.Helper()
		resp, err := lnd.PeerService().Renew(ctxT(t, 10*time.Second), &kvpb.RenewRequest{
			Cluster: node.DefaultConfig().Cluster, FromId: from,
			Keys: []*kvpb.RenewKey{{Key: "k", Version: &kvpb.Position{Epoch: v.Epoch, Seq: v.Seq}}},
		})
		if err != nil {
			t.Fatalf("renew: %v", err)
		}
		return resp.LeaseMs[0]
	}
	if got := renew(fnd.ID(), v1); got != 0 {
		t.Errorf("renewal of the replaced version %v: lease %d ms, want 0", v1, got)
	}
	if got := renew(fnd.ID(), v2); got <= 0 {
		t.Errorf("renewal of the latest version %v: lease %d ms, want one", v2, got)
	}
	if got := renew("stranger", v2); got != 0 {
		t.Errorf("renewal for a node the leader does not replicate to: lease %d ms, want 0", got)
	}
}

// TestRenewalsBackOffFromAnUnreachableLeader: while the leader cannot be
// reached, a follower reading a copy asks for its renewal at most once per
// look (eight per lease), not once per read.
func TestRenewalsBackOffFromAnUnreachableLeader(t *testing.T) {
	const lease = time.Second
	c, ld, f, fnd := cachedOnFollower(t, lease)
	if err := c.RmiDown(ld); err != nil {
		t.Fatal(err)
	}
	s0 := fnd.Stats()
	start := time.Now()
	reads := 0
	for time.Since(start) < lease {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		_, _, _ = c.Get(ctx, f, "k") // from the cache, until the lease ends
		cancel()
		reads++
	}
	s1 := fnd.Stats()
	// Eight looks per lease, half of them with the copy due; room for
	// a slow machine's late ticks.
	if calls := s1.RenewCalls - s0.RenewCalls; calls > 40 {
		t.Fatalf("%d reads over one lease with the leader out of reach sent %d renewals: want at most 40 (stats %+v)", reads, calls, s1)
	}
	t.Logf("%d reads, %d renewals asked, %d hits", reads, s1.RenewCalls-s0.RenewCalls, s1.CacheHits-s0.CacheHits)
}

// TestUnreadCopiesStayCachedThenGo: a copy read once is renewed while
// nobody reads it, so the next read, several leases later, is still
// answered from the cache; after renewIdle renewals in a row unread it is
// let go with its lease, and a read fetches it again. Without renewal of
// unread copies the second read would be a fetch; without the idle bound
// the renewals would never stop.
func TestUnreadCopiesStayCachedThenGo(t *testing.T) {
	const lease = 400 * time.Millisecond
	c, _, f, fnd := cachedOnFollower(t, lease)
	s0 := fnd.Stats()
	soon.Succeeds(t, 30*time.Second, func() error {
		if r := fnd.Stats().Renewals - s0.Renewals; r < 4 {
			return fmt.Errorf("%d renewals of the unread copy", r)
		}
		return nil
	})
	expectGet(t, c, f, "k", "v")
	s1 := fnd.Stats()
	if s1.CacheMisses != s0.CacheMisses {
		t.Fatalf("a read after %d renewals, over 2 leases unread, was a fetch: the copy was not kept (stats %+v)", s1.Renewals-s0.Renewals, s1)
	}
	// Unread from now on: the renewals stop, and the copy goes.
	last, since := fnd.Stats().Renewals, time.Now()
	soon.Succeeds(t, 60*time.Second, func() error {
		r := fnd.Stats().Renewals
		if r != last {
			last, since = r, time.Now()
		}
		if time.Since(since) < 3*lease {
			return fmt.Errorf("renewals still running: %d", r-s1.Renewals)
		}
		return nil
	})
	if r := last - s1.Renewals; r < 8 {
		t.Fatalf("the unread copy got %d renewals before it went, want about 16", r)
	}
	expectGet(t, c, f, "k", "v")
	if s2 := fnd.Stats(); s2.CacheMisses != s1.CacheMisses+1 {
		t.Fatalf("a read after the copy was let go: %d fetches, want 1 (stats %+v)", s2.CacheMisses-s1.CacheMisses, s2)
	}
	t.Logf("unread copy: %d renewals, then let go", last-s1.Renewals)
}

// TestWrittenCopiesAreRenewedOnlyOnceRead: the copy a node keeps of its
// own write (of a key it held) is renewed only once something reads it
// there. A write-heavy node would otherwise renew every key it wrote for
// many leases, and every write of such a key would wait for the holder to
// apply it. The follower reads two keys (it holds them), writes both and
// reads one of them; once that one was renewed four times (two leases),
// the unread one is gone (a read fetches it) and the read one is still
// cached.
func TestWrittenCopiesAreRenewedOnlyOnceRead(t *testing.T) {
	const lease = 400 * time.Millisecond
	c := newCluster(t, Etcd, 3, func(o *Options) {
		o.Node = func(cfg *node.Config) { cfg.LeaseDuration = lease }
	})
	f := followers(t, c)[0]
	fnd, err := c.Node(f)
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, c, leaderOf(t, c), "read", "v0")
	mustPut(t, c, leaderOf(t, c), "unread", "v0")
	expectGet(t, c, f, "read", "v0")
	expectGet(t, c, f, "unread", "v0")
	s0 := fnd.Stats()
	mustPut(t, c, f, "read", "v1")
	mustPut(t, c, f, "unread", "v2")
	expectGet(t, c, f, "read", "v1")
	if s := fnd.Stats(); s.CacheMisses != s0.CacheMisses {
		// On a machine so slow that a lease passed between the write and
		// the read, the test shows nothing: say so rather than pass.
		t.Fatalf("the read right after the write was a fetch (a lease passed?): %+v", s)
	}
	soon.Succeeds(t, 30*time.Second, func() error {
		if r := fnd.Stats().Renewals - s0.Renewals; r < 4 {
			return fmt.Errorf("%d renewals", r)
		}
		return nil
	})
	s1 := fnd.Stats()
	expectGet(t, c, f, "read", "v1")
	if s2 := fnd.Stats(); s2.CacheMisses != s1.CacheMisses {
		t.Fatalf("the written copy that was read was not kept by renewals (stats %+v)", s2)
	}
	expectGet(t, c, f, "unread", "v2")
	if s3 := fnd.Stats(); s3.CacheMisses != s1.CacheMisses+1 {
		t.Fatalf("after %d renewals the unread written copy was still cached: it was renewed (stats %+v)", s1.Renewals-s0.Renewals, s3)
	}
}

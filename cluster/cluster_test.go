package cluster

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/faultproxy"
	"github.com/kvstore/kvstore/internal/soon"
	"github.com/kvstore/kvstore/node"
	"github.com/kvstore/kvstore/zkserver"
)

// newCluster starts an n-node cluster on backend b for one test and closes
// it at the end. KVSTORE_TEST_LOG=debug shows the nodes' logs.
func newCluster(t *testing.T, b Backend, n int, opts ...func(*Options)) *Cluster {
	t.Helper()
	o := Options{Nodes: n, Backend: b}
	if b == ZooKeeper {
		// One ZooKeeper server for the package; each cluster in its own
		// namespace.
		o.ZooKeeper = testZK.Servers(t)
		o.Prefix = fmt.Sprintf("/kvstore-test/%s/%d", strings.ReplaceAll(t.Name(), "/", "_"), time.Now().UnixNano())
	}
	for _, f := range opts {
		f(&o)
	}
	return StartTest(t, o)
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func mustPut(t *testing.T, c *Cluster, n int, k, v string) {
	t.Helper()
	if err := c.Put(ctxT(t, 20*time.Second), n, k, v); err != nil {
		t.Fatalf("put %d %s %s: %v", n, k, v, err)
	}
}

func expectGet(t *testing.T, c *Cluster, n int, k, want string) {
	t.Helper()
	if err := checkGet(ctxT(t, 20*time.Second), c, n, k, want); err != nil {
		t.Fatal(err)
	}
}

// checkGet reads k through node n and says how the answer differs from want
// ("" for no value); for use inside soon.Succeeds.
func checkGet(ctx context.Context, c *Cluster, n int, k, want string) error {
	got, found, err := c.Get(ctx, n, k)
	switch {
	case err != nil:
		return fmt.Errorf("get %d %s: %w", n, k, err)
	case want == "" && found:
		return fmt.Errorf("get %d %s = %q, want no value", n, k, got)
	case want != "" && (!found || got != want):
		return fmt.Errorf("get %d %s = %q (found %v), want %q", n, k, got, found, want)
	}
	return nil
}

func leaderOf(t *testing.T, c *Cluster) int {
	t.Helper()
	n, _, err := c.Leader(ctxT(t, 20*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// followers returns the node numbers that are not the leader.
func followers(t *testing.T, c *Cluster) []int {
	ld := leaderOf(t, c)
	var out []int
	for i := 0; i < c.Size(); i++ {
		if i != ld {
			out = append(out, i)
		}
	}
	return out
}

func TestWriteThroughAnyNodeReadEverywhere(t *testing.T) {
	eachBackend(t, func(t *testing.T, b Backend) {
		c := newCluster(t, b, 3)
		for i := 0; i < 3; i++ {
			mustPut(t, c, i, fmt.Sprint("k", i), fmt.Sprint("v", i))
		}
		for i := 0; i < 3; i++ {
			for j := 0; j < 3; j++ {
				expectGet(t, c, j, fmt.Sprint("k", i), fmt.Sprint("v", i))
			}
		}
		expectGet(t, c, 1, "missing", "")
		if err := c.Delete(ctxT(t, 10*time.Second), 2, "k0"); err != nil {
			t.Fatal(err)
		}
		for j := 0; j < 3; j++ {
			expectGet(t, c, j, "k0", "")
		}
	})
}

func TestSecondReadOnFollowerIsACacheHit(t *testing.T) {
	eachBackend(t, func(t *testing.T, b Backend) {
		c := newCluster(t, b, 3)
		f := followers(t, c)[0]
		mustPut(t, c, leaderOf(t, c), "k", "v")
		nd, _ := c.Node(f)
		before := nd.Stats()
		expectGet(t, c, f, "k", "v")
		mid := nd.Stats()
		expectGet(t, c, f, "k", "v")
		after := nd.Stats()
		if mid.CacheMisses != before.CacheMisses+1 || mid.CacheHits != before.CacheHits {
			t.Fatalf("first read: want one miss, stats %+v -> %+v", before, mid)
		}
		if after.CacheHits != mid.CacheHits+1 || after.CacheMisses != mid.CacheMisses {
			t.Fatalf("second read: want one hit, stats %+v -> %+v", mid, after)
		}
		// A node that held a copy of the key keeps it fresh through its
		// own write.
		mustPut(t, c, f, "k", "mine")
		s0 := nd.Stats()
		expectGet(t, c, f, "k", "mine")
		if s1 := nd.Stats(); s1.CacheHits != s0.CacheHits+1 {
			t.Fatalf("read after own write of a held key was not a cache hit: %+v -> %+v", s0, s1)
		}
		// One that did not hold it takes no copy of what it wrote.
		mustPut(t, c, f, "w", "mine")
		s0 = nd.Stats()
		expectGet(t, c, f, "w", "mine")
		if s1 := nd.Stats(); s1.CacheMisses != s0.CacheMisses+1 {
			t.Fatalf("read after own write of a key not held here was not a fetch: %+v -> %+v", s0, s1)
		}
	})
}

func TestLeaderServesRepeatedReadsFromItsCache(t *testing.T) {
	eachBackend(t, func(t *testing.T, b Backend) {
		c := newCluster(t, b, 3)
		ld := leaderOf(t, c)
		nd, _ := c.Node(ld)
		mustPut(t, c, (ld+1)%3, "k", "v1")
		s0 := nd.Stats()
		expectGet(t, c, ld, "k", "v1")
		expectGet(t, c, ld, "k", "v1")
		s1 := nd.Stats()
		if s1.LeaderReads != s0.LeaderReads+1 || s1.CacheHits != s0.CacheHits+1 {
			t.Fatalf("two reads on the leader: want one leader read then one cache hit, stats %+v -> %+v", s0, s1)
		}
		// A write through another node drops the leader's copy before it is
		// acknowledged.
		mustPut(t, c, (ld+2)%3, "k", "v2")
		expectGet(t, c, ld, "k", "v2")
		expectGet(t, c, ld, "k", "v2")
		if s2 := nd.Stats(); s2.LeaderReads != s1.LeaderReads+1 || s2.CacheHits != s1.CacheHits+1 {
			t.Fatalf("after a write: want one leader read then one cache hit, stats %+v -> %+v", s1, s2)
		}
	})
}

func TestConcurrentMissesShareOneFetch(t *testing.T) {
	eachBackend(t, func(t *testing.T, b Backend) {
		c := newCluster(t, b, 3)
		ld := leaderOf(t, c)
		f := followers(t, c)[0]
		mustPut(t, c, ld, "k", "v")
		lnd, _ := c.Node(ld)
		fnd, _ := c.Node(f)
		const readers = 32
		served := lnd.Stats().FetchesServed
		start := make(chan struct{})
		errs := make(chan error, readers)
		for i := 0; i < readers; i++ {
			go func() {
				<-start
				errs <- checkGet(ctxT(t, 10*time.Second), c, f, "k", "v")
			}()
		}
		close(start)
		for i := 0; i < readers; i++ {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		// The readers start together, well within one fetch's round trip:
		// unshared, each would send its own. Each read waits for at most the
		// fetch in flight when it began and the next one, so the burst costs
		// a few fetches, not one per read.
		if got := lnd.Stats().FetchesServed - served; got > 4 {
			t.Fatalf("%d concurrent misses on node %d cost %d fetches at the leader; want them shared", readers, f, got)
		}
		t.Logf("%d concurrent misses: %d fetches, follower stats %+v", readers, lnd.Stats().FetchesServed-served, fnd.Stats())
	})
}

func TestPutInvalidatesEveryCachedCopy(t *testing.T) {
	eachBackend(t, func(t *testing.T, b Backend) {
		c := newCluster(t, b, 3)
		for round := 0; round < 5; round++ {
			val := fmt.Sprint("v", round)
			mustPut(t, c, round%3, "k", val)
			// Read twice everywhere: the second read is from cache and must
			// already show the new value.
			for j := 0; j < 3; j++ {
				expectGet(t, c, j, "k", val)
				expectGet(t, c, j, "k", val)
			}
		}
		var hits uint64
		for j := 0; j < 3; j++ {
			nd, _ := c.Node(j)
			hits += nd.Stats().CacheHits
		}
		if hits == 0 {
			t.Fatal("no read was served from a cache: the test proves nothing")
		}
	})
}

func TestZkDownFollowerFailsFastAndRejoins(t *testing.T) {
	eachBackend(t, func(t *testing.T, b Backend) {
		c := newCluster(t, b, 3)
		ld := leaderOf(t, c)
		f := followers(t, c)[0]
		mustPut(t, c, ld, "k", "before")
		expectGet(t, c, f, "k", "before")

		// A pending operation: with the leader's inbound RPC down, a put on f
		// waits for the leader. Cutting f from the coordinator must fail it.
		if err := c.RmiDown(ld); err != nil {
			t.Fatal(err)
		}
		pending := make(chan error, 1)
		go func() { pending <- c.Put(context.Background(), f, "k", "pending") }()

		if err := c.ZkDown(f); err != nil {
			t.Fatal(err)
		}
		cut := time.Now()
		// It serves until its session deadline passes: at most the TTL
		// (2 s) after the last answered keep-alive, which is before the cut.
		soon.Succeeds(t, 3*time.Second, func() error {
			_, _, err := c.Get(ctxT(t, time.Second), f, "k")
			if !errors.Is(err, kvstore.ErrPartitioned) {
				return fmt.Errorf("get on zk-down node: %v, want ErrPartitioned", err)
			}
			return nil
		})
		t.Logf("node %d refused reads %v after the cut", f, time.Since(cut).Round(time.Millisecond))
		select {
		case err := <-pending:
			if !errors.Is(err, kvstore.ErrPartitioned) {
				t.Fatalf("pending put: %v, want ErrPartitioned", err)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("pending put on the zk-down node still hangs")
		}
		start := time.Now()
		err := c.Put(ctxT(t, 5*time.Second), f, "k", "x")
		if !errors.Is(err, kvstore.ErrPartitioned) {
			t.Fatalf("put on zk-down node: %v, want ErrPartitioned", err)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("put on zk-down node took %v to fail", d)
		}
		if err := c.RmiUp(ld); err != nil {
			t.Fatal(err)
		}
		mustPut(t, c, ld, "k", "during")

		if err := c.ZkUp(f); err != nil {
			t.Fatal(err)
		}
		soon.Succeeds(t, 15*time.Second, func() error {
			got, _, err := c.Get(ctxT(t, 2*time.Second), f, "k")
			if err != nil {
				return err
			}
			// "pending" failed as outcome unknown if an attempt was sent
			// (and a stale attempt may even land after "during"), so either
			// may be the value; the rejoined node must read what the leader
			// reads.
			want, _, err := c.Get(ctxT(t, 2*time.Second), ld, "k")
			if err != nil {
				return err
			}
			if got != want || (got != "during" && got != "pending") {
				return fmt.Errorf("get on node %d = %q, on the leader %q; want the same, \"during\" or \"pending\"", f, got, want)
			}
			return nil
		})
		// The rejoined node serves writes too. On a busy machine its session
		// may be in doubt again for a moment right after the reconnect (a
		// late keep-alive): it then suspends, as it must, and a write
		// through it fails with ErrPartitioned until it serves again.
		soon.Succeeds(t, 15*time.Second, func() error {
			err := c.Put(ctxT(t, 5*time.Second), f, "k", "after")
			if err != nil && !errors.Is(err, kvstore.ErrPartitioned) {
				t.Fatalf("put through the rejoined node %d: %v", f, err)
			}
			return err
		})
		expectGet(t, c, ld, "k", "after")
	})
}

// failLeader takes the leader out (zk-down or kill) and checks the other
// two elect a new one and lose nothing.
func failLeader(t *testing.T, b Backend, how string) {
	c := newCluster(t, b, 3)
	ld := leaderOf(t, c)
	for i := 0; i < 20; i++ {
		mustPut(t, c, i%3, fmt.Sprint("k", i), fmt.Sprint("v", i))
	}
	var err error
	if how == "kill" {
		err = c.Kill(ld)
	} else {
		err = c.ZkDown(ld)
	}
	if err != nil {
		t.Fatal(err)
	}
	other := (ld + 1) % 3
	start := time.Now()
	if err := c.Put(ctxT(t, 15*time.Second), other, "after", "failover"); err != nil {
		t.Fatalf("put on node %d after %s of leader %d: %v", other, how, ld, err)
	}
	t.Logf("first write acknowledged %v after the %s of the leader", time.Since(start).Round(time.Millisecond), how)
	// The write may have beaten the old leader to noticing the cut (its
	// session is still provably live for a moment, so that is safe); the
	// other two must elect a new leader all the same.
	soon.Succeeds(t, 15*time.Second, func() error {
		if nl := leaderOf(t, c); nl == ld {
			return fmt.Errorf("leader is still %d", ld)
		}
		return nil
	})
	t.Logf("a new leader serves %v after the %s of the leader", time.Since(start).Round(time.Millisecond), how)
	for _, j := range []int{other, (ld + 2) % 3} {
		for i := 0; i < 20; i++ {
			expectGet(t, c, j, fmt.Sprint("k", i), fmt.Sprint("v", i))
		}
		expectGet(t, c, j, "after", "failover")
	}
	if how == "kill" {
		if err := c.Restart(ctxT(t, 20*time.Second), ld); err != nil {
			t.Fatal(err)
		}
	} else if err := c.ZkUp(ld); err != nil {
		t.Fatal(err)
	}
	// The old leader comes back as a follower and catches up.
	soon.Succeeds(t, 15*time.Second, func() error {
		got, _, err := c.Get(ctxT(t, 2*time.Second), ld, "after")
		if err != nil || got != "failover" {
			return fmt.Errorf("get on returning node: %q %v", got, err)
		}
		return nil
	})
	for i := 0; i < 20; i++ {
		expectGet(t, c, ld, fmt.Sprint("k", i), fmt.Sprint("v", i))
	}
	nl := leaderOf(t, c)
	if nl == ld {
		t.Fatalf("node %d came back as the leader; want it a follower of the new leader", ld)
	}
	nlNode, _ := c.Node(nl)
	old, _ := c.Node(ld)
	soon.Succeeds(t, 10*time.Second, func() error {
		if a, b := old.Applied(), nlNode.Applied(); a != b {
			return fmt.Errorf("returning node applied %s, leader %s", a, b)
		}
		return nil
	})
}

func TestZkDownLeaderFailsOver(t *testing.T) {
	eachBackend(t, func(t *testing.T, b Backend) { failLeader(t, b, "zk-down") })
}

func TestKillLeaderFailsOverAndRestartCatchesUp(t *testing.T) {
	eachBackend(t, func(t *testing.T, b Backend) { failLeader(t, b, "kill") })
}

func TestOperationsWaitForALeaderThenTimeOut(t *testing.T) {
	eachBackend(t, func(t *testing.T, b Backend) {
		// The dead leader's session outlives the operation timeout, so no
		// new leader can be elected within it.
		const opTimeout = 1500 * time.Millisecond
		c := newCluster(t, b, 3, func(o *Options) {
			o.Node = func(cfg *node.Config) {
				cfg.SessionTTL = 6 * time.Second
				cfg.OpTimeout = opTimeout
			}
		})
		ld := leaderOf(t, c)
		f := followers(t, c)[0]
		mustPut(t, c, ld, "k", "v")
		if err := c.Kill(ld); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		err := c.Put(context.Background(), f, "k", "w") // no deadline: OpTimeout applies
		took := time.Since(start)
		if !errors.Is(err, kvstore.ErrTimeout) {
			t.Fatalf("put during the election: %v, want ErrTimeout", err)
		}
		if took < opTimeout || took > opTimeout+2*time.Second {
			t.Fatalf("put during the election failed after %v; want it to wait for a leader for the operation timeout (%v)", took, opTimeout)
		}
		t.Logf("put during the election failed after %v: %v", took.Round(time.Millisecond), err)
		// Once the dead leader's session expires, a new leader serves and an
		// operation issued meanwhile waits for it and succeeds.
		soon.Succeeds(t, 20*time.Second, func() error {
			return c.Put(context.Background(), f, "k", "x")
		})
		expectGet(t, c, (ld+1)%3, "k", "x")
		expectGet(t, c, (ld+2)%3, "k", "x")
	})
}

func TestJoinerThatWinsTheElectionBecomesAVoter(t *testing.T) {
	eachBackend(t, func(t *testing.T, b Backend) {
		// n0 is the only voter. n1 joins with its inbound RPC down, so n0
		// cannot make it a voter; then n0 hands leadership over and n1,
		// next in the election, takes over (n0 answers its Prepare: n1's
		// outbound calls work). The new leader must add itself to the
		// voters, or the cluster would run on one voter for good.
		c := newCluster(t, b, 1)
		mustPut(t, c, 0, "k", "v")
		c.mu.Lock()
		s := &slot{num: 1, id: "n1", rmiDown: true}
		c.slots = append(c.slots, s)
		c.mu.Unlock()
		for _, ep := range c.endpoint {
			p, err := faultproxy.New(ep)
			if err != nil {
				t.Fatal(err)
			}
			s.proxies = append(s.proxies, p)
		}
		if err := c.start(ctxT(t, 30*time.Second), s); err != nil {
			t.Fatal(err)
		}
		// n1 stands for election once its probes reach n0 (pre-vote).
		joiner, err := c.Node(1)
		if err != nil {
			t.Fatal(err)
		}
		soon.Succeeds(t, 10*time.Second, func() error {
			if metric(t, joiner, "kvstore_candidate") != 1 {
				return errors.New("the joiner does not stand for election")
			}
			return nil
		})
		if err := c.Resign(ctxT(t, 10*time.Second), 0); err != nil {
			t.Fatal(err)
		}
		soon.Succeeds(t, 20*time.Second, func() error {
			if ld := leaderOf(t, c); ld != 1 {
				return fmt.Errorf("leader is node %d, want the joiner", ld)
			}
			return nil
		})
		if err := c.waitVoter(ctxT(t, 10*time.Second), s); err != nil {
			t.Fatal(err)
		}
		if err := c.RmiUp(1); err != nil {
			t.Fatal(err)
		}
		expectGet(t, c, 1, "k", "v")
		mustPut(t, c, 0, "k", "w")
		expectGet(t, c, 1, "k", "w")
	})
}

func TestRmiDownHolderDelaysWriteByLeaseOnly(t *testing.T) {
	eachBackend(t, func(t *testing.T, b Backend) {
		c := newCluster(t, b, 3)
		ld := leaderOf(t, c)
		fs := followers(t, c)
		holder, writer := fs[0], fs[1]
		mustPut(t, c, ld, "k", "old")
		expectGet(t, c, holder, "k", "old")
		nd, _ := c.Node(holder)
		h0 := nd.Stats().CacheHits
		expectGet(t, c, holder, "k", "old")
		if nd.Stats().CacheHits != h0+1 {
			t.Fatal("holder did not cache the key: the test proves nothing")
		}
		if err := c.RmiDown(holder); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := c.Put(ctxT(t, 10*time.Second), writer, "k", "new"); err != nil {
			t.Fatalf("put while a holder is rmi-down: %v", err)
		}
		t.Logf("put with an unreachable holder took %v", time.Since(start).Round(time.Millisecond))
		for i := 0; i < 3; i++ {
			expectGet(t, c, holder, "k", "new")
		}
		if err := c.RmiUp(holder); err != nil {
			t.Fatal(err)
		}
		// Once the leader reaches it again, the holder caches again.
		soon.Succeeds(t, 10*time.Second, func() error {
			if err := checkGet(ctxT(t, 5*time.Second), c, holder, "k", "new"); err != nil {
				return err
			}
			before := nd.Stats().CacheHits
			if err := checkGet(ctxT(t, 5*time.Second), c, holder, "k", "new"); err != nil {
				return err
			}
			if nd.Stats().CacheHits == before {
				return errors.New("second read after rmi-up was not a cache hit")
			}
			return nil
		})
	})
}

func TestMinorityFailureLosesNothingMajorityFailureSaysNoQuorum(t *testing.T) {
	eachBackend(t, func(t *testing.T, b Backend) {
		c := newCluster(t, b, 3, func(o *Options) {})
		ld := leaderOf(t, c)
		fs := followers(t, c)
		for i := 0; i < 10; i++ {
			mustPut(t, c, i%3, fmt.Sprint("k", i), fmt.Sprint("v", i))
		}
		if err := c.Kill(fs[0]); err != nil {
			t.Fatal(err)
		}
		mustPut(t, c, fs[1], "k10", "v10")
		for i := 0; i <= 10; i++ {
			expectGet(t, c, ld, fmt.Sprint("k", i), fmt.Sprint("v", i))
			expectGet(t, c, fs[1], fmt.Sprint("k", i), fmt.Sprint("v", i))
		}
		if err := c.Kill(fs[1]); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		err := c.Put(ctxT(t, 30*time.Second), ld, "k11", "v11")
		took := time.Since(start)
		if !errors.Is(err, kvstore.ErrNoQuorum) {
			t.Fatalf("put with 1 of 3 voters: %v, want ErrNoQuorum", err)
		}
		if !errors.Is(err, kvstore.ErrOutcomeUnknown) {
			t.Fatalf("a write that reached the leader but no majority must be outcome-unknown: %v", err)
		}
		// The wait is bounded by the quorum timeout (5 s by default), not by
		// the caller's 30 s deadline.
		if bound := node.DefaultConfig().QuorumTimeout + 3*time.Second; took > bound {
			t.Fatalf("no-quorum error after %v; want it within the quorum timeout (%v with slack)", took, bound)
		}
		t.Logf("no-quorum error after %v: %v", took.Round(time.Millisecond), err)
	})
}

func TestBadInputIsRefused(t *testing.T) {
	eachBackend(t, func(t *testing.T, b Backend) {
		c := newCluster(t, b, 1)
		if err := c.Put(ctxT(t, 5*time.Second), 0, "", "v"); !errors.Is(err, kvstore.ErrBadRequest) {
			t.Fatalf("empty key: %v", err)
		}
		if _, _, err := c.Get(ctxT(t, 5*time.Second), 7, "k"); !errors.Is(err, ErrNoSuchNode) {
			t.Fatalf("no such node: %v", err)
		}
		mustPut(t, c, 0, "k", "v")
		expectGet(t, c, 0, "k", "v")
	})
}

func TestPartitionedLeaderStepsDownMajoritySideServes(t *testing.T) {
	eachBackend(t, func(t *testing.T, b Backend) {
		c := newCluster(t, b, 3, func(o *Options) {
			o.Node = func(cfg *node.Config) { cfg.QuorumTimeout = time.Second }
		})
		ld := leaderOf(t, c)
		fs := followers(t, c)
		mustPut(t, c, fs[0], "k", "before")
		// Node-to-node traffic between the leader and the others is dropped in
		// both directions; everyone still reaches the coordinator.
		if err := c.Partition(true, []int{ld}, fs); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := c.Put(ctxT(t, 30*time.Second), fs[1], "k", "during"); err != nil {
			t.Fatalf("put on the majority side: %v", err)
		}
		t.Logf("majority side acknowledged a write %v after the partition", time.Since(start).Round(time.Millisecond))
		if nl := leaderOf(t, c); nl == ld {
			t.Fatalf("the partitioned node %d still leads", ld)
		}
		expectGet(t, c, fs[0], "k", "during")
		c.HealPartition()
		soon.Succeeds(t, 15*time.Second, func() error {
			got, _, err := c.Get(ctxT(t, 2*time.Second), ld, "k")
			if err != nil || got != "during" {
				return fmt.Errorf("get on the healed node: %q %v", got, err)
			}
			return nil
		})
	})
}

func TestOneWayPartitionKeepsReadsFresh(t *testing.T) {
	eachBackend(t, func(t *testing.T, b Backend) {
		c := newCluster(t, b, 3)
		ld := leaderOf(t, c)
		f := followers(t, c)[0]
		mustPut(t, c, ld, "k", "v1")
		expectGet(t, c, f, "k", "v1")
		expectGet(t, c, f, "k", "v1") // cached now
		// The leader can no longer call f (no invalidation reaches it), but f
		// can still call the leader.
		if err := c.PartitionOneWay(false, []int{ld}, []int{f}); err != nil {
			t.Fatal(err)
		}
		mustPut(t, c, ld, "k", "v2")
		expectGet(t, c, f, "k", "v2")
		c.HealPartition()
	})
}

// startEnsemble starts a 3-server ZooKeeper ensemble for one test (or
// skips the test without ZooKeeper) and closes it at the end.
func startEnsemble(t *testing.T, ctx context.Context) *zkserver.Ensemble {
	t.Helper()
	zkserver.SkipIfUnavailable(t)
	ens, err := zkserver.StartEnsemble(ctx, zkserver.DefaultConfig(), 3)
	if err != nil {
		t.Fatalf("start ZooKeeper ensemble: %v", err)
	}
	t.Cleanup(func() {
		if err := ens.Close(); err != nil {
			t.Errorf("close ensemble: %v", err)
		}
	})
	return ens
}

// TestZooKeeperLeaderKillKeepsTheSessions kills the ZooKeeper ensemble's
// leader under writes through every node. The ensemble elects another and
// keeps every session through its election (0.4 to 0.7 s), during which
// every server refuses clients; each node's client must connect again
// before the node's own session deadline passes, or the node ends its
// session and the cluster elects a new leader. With the client pausing a
// second after one failed round of servers, that cost 1.7 s without a
// write in every run (FINDINGS); now the leader keeps its epoch and writes
// go on.
func TestZooKeeperLeaderKillKeepsTheSessions(t *testing.T) {
	ctx := ctxT(t, 2*time.Minute)
	ens := startEnsemble(t, ctx)
	c := newCluster(t, ZooKeeper, 3, func(o *Options) { o.ZooKeeper = ens.Servers() })
	mustPut(t, c, 0, "k", "v")
	n0, err := c.Node(0)
	if err != nil {
		t.Fatal(err)
	}
	before := n0.Leader()

	// Writers through every node, each write bounded by 300 ms; the
	// longest time without an acknowledged write is measured from the
	// kill.
	var mu sync.Mutex
	var kill, last time.Time
	var gap time.Duration
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
				err := c.Put(wctx, w, fmt.Sprint("w", w), fmt.Sprint(i))
				cancel()
				if err != nil {
					wait := time.NewTimer(5 * time.Millisecond) // pace retries
					select {
					case <-wait.C:
					case <-stop:
					}
					wait.Stop()
					continue
				}
				now := time.Now()
				mu.Lock()
				if !kill.IsZero() {
					gap, last = max(gap, now.Sub(last)), now
				}
				mu.Unlock()
			}
		})
	}
	zl, err := ens.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The least time any node's session has left just before the kill:
	// no keep-alive can move a deadline during the election (every
	// server refuses clients), so a node must connect again within it.
	// On an idle machine it is over a second; under load, with the
	// coordinator's answers late, it was seen at 0.77 s.
	left := time.Duration(math.MaxInt64)
	for i := range 3 {
		nd, err := c.Node(i)
		if err != nil {
			t.Fatal(err)
		}
		left = min(left, nd.SessionLeft())
	}
	mu.Lock()
	kill = time.Now()
	last = kill
	mu.Unlock()
	if err := ens.Stop(zl); err != nil {
		t.Fatal(err)
	}
	// How long the ensemble took to elect: the sessions can only ride
	// through an election that ends well before the nodes' deadlines.
	ttl := node.DefaultConfig().SessionTTL
	var elected time.Duration
	soon.Succeeds(t, 30*time.Second, func() error {
		if _, err := ens.Leader(ctx); err != nil {
			return err
		}
		elected = time.Since(kill)
		return nil
	})
	// Every node's session deadline as of the kill has passed a session
	// timeout after it, however late its last keep-alive: by then a node
	// that did not reconnect in time has ended its session.
	soon.Succeeds(t, ttl+30*time.Second, func() error {
		if d := time.Since(kill); d < ttl+500*time.Millisecond {
			return fmt.Errorf("%v since the kill", d)
		}
		if _, err := ens.Leader(ctx); err != nil {
			return err
		}
		return nil
	})
	end := time.Now()
	close(stop)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	gap = max(gap, end.Sub(last))
	after := n0.Leader()
	t.Logf("ZooKeeper's leader (server %d) killed with every node's session %v from its deadline or more: a new one after %v; longest time without an acknowledged write %v; KVStore's leader %+v, then %+v",
		zl, left.Round(time.Millisecond), elected.Round(time.Millisecond), gap.Round(time.Millisecond), before, after)
	// A node's client tries again every 100 ms: an election over, with
	// reconnectSlack to spare, before the least time a session had left
	// (0.4 to 0.7 s against over a second on an idle machine) leaves
	// every node time to connect again. A slower one (1.2 s on a loaded
	// machine) may end sessions; then the cluster must still come back
	// within the liveness bound (guarantee 4: TTL, lease, 1 s).
	const reconnectSlack = 300 * time.Millisecond
	if elected+reconnectSlack <= left {
		if after != before {
			t.Errorf("KVStore's leader changed from %+v to %+v: a node's session ended while ZooKeeper elected a leader in %v", before, after, elected)
		}
		if gap >= ttl/2 {
			t.Errorf("no write acknowledged for %v after ZooKeeper's leader was killed", gap)
		}
		return
	}
	t.Logf("ZooKeeper took %v to elect, too close to the %v the sessions had left: only the liveness bound is checked", elected, left)
	if bound := ttl + node.DefaultConfig().LeaseDuration + time.Second; gap >= bound {
		t.Errorf("no write acknowledged for %v after ZooKeeper's leader was killed (bound %v)", gap, bound)
	}
}

// TestZooKeeperEnsembleMemberLoss runs a cluster on a 3-server ZooKeeper
// ensemble and kills the ensemble's leader: the ensemble keeps a quorum, the
// nodes reconnect to the other servers and serve again, and no write is
// lost, before or after the ZooKeeper server comes back.
func TestZooKeeperEnsembleMemberLoss(t *testing.T) {
	ctx := ctxT(t, 2*time.Minute)
	ens := startEnsemble(t, ctx)
	c := newCluster(t, ZooKeeper, 3, func(o *Options) {
		o.ZooKeeper = ens.Servers()
	})
	for i := 0; i < 10; i++ {
		mustPut(t, c, i%3, fmt.Sprint("k", i), fmt.Sprint("v", i))
	}
	zl, err := ens.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := ens.Stop(zl); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	// A node whose server died is suspended (Disconnected) until its client
	// reconnects to another server and renews the session; it fails
	// operations fast meanwhile, as the design requires. Writes through
	// every node succeed again within seconds.
	var refused int
	for i := 10; i < 20; i++ {
		soon.Succeeds(t, 10*time.Second, func() error {
			err := c.Put(ctxT(t, 5*time.Second), i%3, fmt.Sprint("k", i), fmt.Sprint("v", i))
			if errors.Is(err, kvstore.ErrPartitioned) {
				refused++
			}
			return err
		})
	}
	t.Logf("10 writes acknowledged %v after ZooKeeper's leader (server %d) was killed; %d attempts refused while a node was suspended",
		time.Since(start).Round(time.Millisecond), zl, refused)
	if err := ens.Restart(ctx, zl); err != nil {
		t.Fatal(err)
	}
	if err := ens.WaitServing(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitHealthy(ctx); err != nil {
		t.Fatal(err)
	}
	// The sessions of nodes that were connected to the killed server may
	// still end after that (the session timeout runs from when the
	// server died; a node is suspended while it renews its session, and
	// a leader whose session ended is replaced): a node may refuse a read
	// for a moment, but must serve it within seconds, and never answer a
	// wrong value.
	for j := 0; j < 3; j++ {
		for i := 0; i < 20; i++ {
			k, want := fmt.Sprint("k", i), fmt.Sprint("v", i)
			soon.Succeeds(t, 20*time.Second, func() error {
				got, found, err := c.Get(ctxT(t, 5*time.Second), j, k)
				if err != nil {
					return err
				}
				if !found || got != want {
					t.Fatalf("get %d %s = %q (found %v), want %q: a write was lost", j, k, got, found, want)
				}
				return nil
			})
		}
	}
}

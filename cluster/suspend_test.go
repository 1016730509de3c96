package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/clock"
	"github.com/kvstore/kvstore/internal/soon"
	"github.com/kvstore/kvstore/node"
)

// fakeClocks gives every node of a cluster a fake clock of its own, which
// its coordinator connection measures session deadlines on too: a test
// suspends one machine by making its clock jump.
type fakeClocks struct {
	mu sync.Mutex
	m  map[string]*clock.Fake
}

func (fc *fakeClocks) of(id string) *clock.Fake {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if fc.m == nil {
		fc.m = make(map[string]*clock.Fake)
	}
	if fc.m[id] == nil {
		fc.m[id] = clock.NewFake()
	}
	return fc.m[id]
}

// option is the cluster option that installs the clocks.
func (fc *fakeClocks) option(o *Options) {
	o.Node = func(cfg *node.Config) { cfg.Clock = fc.of(cfg.ID) }
}

// suspendFor is how long the tests' machines are suspended: longer than
// the lease and the session TTL (the defaults, 2 s each) together.
const suspendFor = 10 * time.Second

// cacheNow reads k through node n until a read is answered from its cache,
// and returns its cache hits after that read.
func cacheNow(t *testing.T, c *Cluster, n int, k, want string) uint64 {
	t.Helper()
	nd, err := c.Node(n)
	if err != nil {
		t.Fatal(err)
	}
	var hits uint64
	soon.Succeeds(t, 20*time.Second, func() error {
		before := nd.Stats().CacheHits
		if err := checkGet(ctxT(t, 5*time.Second), c, n, k, want); err != nil {
			return err
		}
		if hits = nd.Stats().CacheHits; hits == before {
			return fmt.Errorf("node %d answered %s from the leader, not from its cache", n, k)
		}
		return nil
	})
	return hits
}

// clockJumps reads node nd's kvstore_clock_jumps_total.
func clockJumps(t *testing.T, nd *node.Node) float64 {
	t.Helper()
	return metric(t, nd, "kvstore_clock_jumps_total")
}

// metric reads node nd's metric name (a counter or a gauge without labels).
func metric(t *testing.T, nd *node.Node, name string) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	for _, col := range nd.Collectors() {
		if err := reg.Register(col); err != nil {
			t.Fatal(err)
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			if g := m.GetGauge(); g != nil {
				return g.GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("no %s", name)
	return 0
}

// TestSuspendedFollowerDropsCachedCopies: a follower's machine is
// suspended for longer than the lease and the session TTL (its clock jumps;
// the monotonic clock, its timers and the rest of the cluster see no time
// pass). At once on resume it answers no read from its cache: its copy's
// lease and its session deadline were measured before the suspend, and
// have passed. The read goes to the leader, or is refused as partitioned.
// The node notices the jump (log, kvstore_clock_jumps_total) and serves
// again once its session is renewed.
//
// With leases measured on the monotonic clock (clock.Monotonic), the
// copy is still answered from memory after the suspend.
func TestSuspendedFollowerDropsCachedCopies(t *testing.T) {
	eachBackend(t, func(t *testing.T, b Backend) {
		var clocks fakeClocks
		c := newCluster(t, b, 3, clocks.option)
		f := followers(t, c)[0]
		nd, err := c.Node(f)
		if err != nil {
			t.Fatal(err)
		}
		mustPut(t, c, leaderOf(t, c), "k", "v1")
		hits := cacheNow(t, c, f, "k", "v1")

		clocks.of(nd.ID()).Jump(suspendFor)
		v, found, err := nd.Get(ctxT(t, 10*time.Second), "k")
		if got := nd.Stats().CacheHits; got != hits {
			t.Fatalf("right after a suspend of %v the follower answered from its cache (%d hits, %d before)", suspendFor, got, hits)
		}
		switch {
		case errors.Is(err, kvstore.ErrPartitioned):
			t.Logf("the read right after the resume was refused: %v", err)
		case err != nil:
			t.Fatalf("read right after the resume: %v, want the leader's answer or ErrPartitioned", err)
		case !found || v != "v1":
			t.Fatalf("read right after the resume = %q (found %v), want v1 from the leader", v, found)
		default:
			t.Logf("the read right after the resume went to the leader")
		}

		soon.Succeeds(t, 10*time.Second, func() error {
			if n := clockJumps(t, nd); n != 1 {
				return fmt.Errorf("kvstore_clock_jumps_total = %v, want 1", n)
			}
			return nil
		})
		// Serving again, from its cache too, once its session is renewed.
		cacheNow(t, c, f, "k", "v1")
	})
}

// TestSuspendedLeaderStopsLeading: the leader's machine is suspended for
// longer than the session TTL, cut off from the coordinator (so that no
// keep-alive can renew its session behind the test's back, as none could
// while it slept). At once on resume it serves nothing as leader: no read
// from its cache, no read or write through its leadership; its session
// deadline, measured before the suspend, has passed. Then it notices the
// jump, and once reconnected the cluster serves again.
//
// With leases measured on the monotonic clock (clock.Monotonic), its
// cached copy is still answered after the suspend.
func TestSuspendedLeaderStopsLeading(t *testing.T) {
	eachBackend(t, func(t *testing.T, b Backend) {
		var clocks fakeClocks
		c := newCluster(t, b, 3, clocks.option)
		ld := leaderOf(t, c)
		nd, err := c.Node(ld)
		if err != nil {
			t.Fatal(err)
		}
		mustPut(t, c, ld, "k", "v1")
		hits := cacheNow(t, c, ld, "k", "v1")

		if err := c.ZkStall(ld); err != nil {
			t.Fatal(err)
		}
		clocks.of(nd.ID()).Jump(suspendFor)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if _, _, err := nd.Get(ctx, "k"); !errors.Is(err, kvstore.ErrPartitioned) {
			t.Fatalf("read through the former leader right after the resume: %v, want ErrPartitioned", err)
		}
		if got := nd.Stats().CacheHits; got != hits {
			t.Fatalf("right after a suspend of %v the former leader answered from its cache (%d hits, %d before)", suspendFor, got, hits)
		}
		if _, _, err := nd.Get(ctx, "other"); !errors.Is(err, kvstore.ErrPartitioned) {
			t.Fatalf("uncached read through the former leader right after the resume: %v, want ErrPartitioned", err)
		}
		if err := nd.Set(ctx, "k", "v2"); !errors.Is(err, kvstore.ErrPartitioned) || errors.Is(err, kvstore.ErrOutcomeUnknown) {
			t.Fatalf("write through the former leader right after the resume: %v, want ErrPartitioned (not applied)", err)
		}
		soon.Succeeds(t, 10*time.Second, func() error {
			if nd.IsLeader() {
				return errors.New("still leads")
			}
			if n := clockJumps(t, nd); n != 1 {
				return fmt.Errorf("kvstore_clock_jumps_total = %v, want 1", n)
			}
			return nil
		})

		if err := c.ZkUp(ld); err != nil {
			t.Fatal(err)
		}
		if err := c.WaitHealthy(ctxT(t, 60*time.Second)); err != nil {
			t.Fatal(err)
		}
		mustPut(t, c, leaderOf(t, c), "k", "v3")
		expectGet(t, c, ld, "k", "v3")
	})
}

// watchOnly is a clock whose readings miss the suspends (as System's
// would if a resume ever left the wall clock alone) while Suspended, which
// the node's jump watcher asks, sees them.
type watchOnly struct{ *clock.Fake }

func (w watchOnly) Now() clock.Instant { return w.Fake.Now().Add(-w.Jumped()) }

// TestJumpWatcherSuspendsAtOnce: even when the readings of a follower's
// clock miss a suspend, its jump watcher notices it within a check and
// suspends the node: the cached copy, under a lease of 30 s that its clock
// says is still running, is dropped, and reads go to the leader (or are
// refused) until the session is renewed. Without the watcher the copy
// would be answered for the rest of its lease.
func TestJumpWatcherSuspendsAtOnce(t *testing.T) {
	eachBackend(t, func(t *testing.T, b Backend) {
		var clocks fakeClocks
		c := newCluster(t, b, 3, func(o *Options) {
			o.Node = func(cfg *node.Config) {
				cfg.Clock = watchOnly{clocks.of(cfg.ID)}
				cfg.LeaseDuration = 30 * time.Second
			}
		})
		f := followers(t, c)[0]
		nd, err := c.Node(f)
		if err != nil {
			t.Fatal(err)
		}
		mustPut(t, c, leaderOf(t, c), "k", "v1")
		cacheNow(t, c, f, "k", "v1")

		clocks.of(nd.ID()).Jump(suspendFor)
		soon.Succeeds(t, 5*time.Second, func() error {
			before := nd.Stats().CacheHits
			_, _, err := nd.Get(ctxT(t, 5*time.Second), "k")
			if err != nil && !errors.Is(err, kvstore.ErrPartitioned) {
				t.Fatalf("read after the resume: %v, want the leader's answer or ErrPartitioned", err)
			}
			if nd.Stats().CacheHits != before {
				return errors.New("still answered from the cache")
			}
			return nil
		})
		if n := clockJumps(t, nd); n != 1 {
			t.Fatalf("kvstore_clock_jumps_total = %v, want 1", n)
		}
	})
}

// TestCoordinatorBlipKeepsLeadershipAndCache cuts the leader and a
// follower holding a cached copy from the coordinator, and restores them
// before their session deadlines pass. Their keep-alives fail and their
// connections drop (kvstore_session_healthy 0), but the session is provably
// live until its deadline, so neither suspends: the leader keeps its epoch
// and the follower still answers the key from its cache afterwards.
//
// With Faults.SuspendOnUnhealthy (suspend on every failed keep-alive) the
// leadership ends and the cache is dropped.
func TestCoordinatorBlipKeepsLeadershipAndCache(t *testing.T) {
	eachBackend(t, func(t *testing.T, b Backend) {
		// A long TTL so that the blip ends well before the deadline even
		// on a busy machine.
		c := newCluster(t, b, 3, func(o *Options) {
			o.Node = func(cfg *node.Config) { cfg.SessionTTL = 8 * time.Second }
		})
		ld := leaderOf(t, c)
		f := followers(t, c)[0]
		_, epoch, err := c.Leader(ctxT(t, 5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		mustPut(t, c, ld, "k", "v")
		hits := cacheNow(t, c, f, "k", "v")
		nodes := map[int]*node.Node{}
		suspensions := map[int]float64{}
		for _, i := range []int{ld, f} {
			nd, err := c.Node(i)
			if err != nil {
				t.Fatal(err)
			}
			nodes[i], suspensions[i] = nd, metric(t, nd, "kvstore_suspensions_total")
			if err := c.ZkDown(i); err != nil {
				t.Fatal(err)
			}
		}
		for i, nd := range nodes {
			waitSessionHealthy(t, i, nd, false)
		}
		for i := range nodes {
			if err := c.ZkUp(i); err != nil {
				t.Fatal(err)
			}
		}
		for i, nd := range nodes {
			waitSessionHealthy(t, i, nd, true)
			if got := metric(t, nd, "kvstore_suspensions_total"); got != suspensions[i] {
				t.Errorf("node %d suspended %v times during a blip its deadline covered", i, got-suspensions[i])
			}
		}
		if !nodes[ld].IsLeader() || nodes[ld].Leader().Epoch != epoch {
			t.Errorf("leader %d lost its leadership of epoch %d to the blip (leader now %+v)", ld, epoch, nodes[ld].Leader())
		}
		if err := checkGet(ctxT(t, 5*time.Second), c, f, "k", "v"); err != nil {
			t.Fatal(err)
		}
		if got := nodes[f].Stats().CacheHits; got != hits+1 {
			t.Errorf("follower %d: cache hits %d, want %d: the blip dropped its copy", f, got, hits+1)
		}
	})
}

// waitSessionHealthy waits until node i's kvstore_session_healthy says
// healthy (its last keep-alive answered, its connection up) or not.
func waitSessionHealthy(t *testing.T, i int, nd *node.Node, healthy bool) {
	t.Helper()
	want := 0.0
	if healthy {
		want = 1
	}
	soon.Succeeds(t, 5*time.Second, func() error {
		if got := metric(t, nd, "kvstore_session_healthy"); got != want {
			return fmt.Errorf("node %d: kvstore_session_healthy %v, want %v", i, got, want)
		}
		return nil
	})
}

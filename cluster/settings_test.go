package cluster

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kvstore/kvstore/coord"
	"github.com/kvstore/kvstore/internal/soon"
	"github.com/kvstore/kvstore/node"
	"github.com/kvstore/kvstore/zkserver"
)

// clusterCoord is node n's coordinator connection, for tests that read or
// change the cluster's records.
func clusterCoord(t *testing.T, c *Cluster, n int) coord.Coordinator {
	t.Helper()
	s, err := c.slot(n)
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.coord == nil {
		t.Fatalf("node %d has no coordinator connection", n)
	}
	return s.coord
}

// A node whose lease, clock drift margin or request-id window differs from
// the cluster's record refuses to start, naming the field's flag and both
// values; the cluster keeps serving, and a node with the recorded values
// joins.
func TestNodeWithOtherSafetySettingsIsRefused(t *testing.T) {
	eachBackend(t, func(t *testing.T, b Backend) {
		var mutate func(*node.Config) // set between node starts only
		c := newCluster(t, b, 2, func(o *Options) {
			o.Node = func(cfg *node.Config) {
				if mutate != nil {
					mutate(cfg)
				}
			}
		})
		mustPut(t, c, 0, "k", "v1")
		def := node.DefaultConfig()
		rec, err := clusterCoord(t, c, 0).Settings(ctxT(t, 10*time.Second))
		if err != nil || rec.Version == 0 || rec.LeaseDuration != def.LeaseDuration || rec.MaxRequests != def.MaxRequests || rec.ClockDrift != def.ClockDrift {
			t.Fatalf("recorded settings = %+v, %v; want the first node's", rec, err)
		}
		for _, tc := range []struct {
			name   string
			mutate func(*node.Config)
			want   []string // in the error
		}{
			{"lease", func(cfg *node.Config) { cfg.LeaseDuration = 6 * time.Second }, []string{"--lease", "6s", "2s"}},
			{"clock drift", func(cfg *node.Config) { cfg.ClockDrift = 0.2 }, []string{"--clock-drift", "0.2", "0.05"}},
			{"request window", func(cfg *node.Config) { cfg.MaxRequests = 10 }, []string{"--max-requests", "10", "65536"}},
		} {
			mutate = tc.mutate
			_, err := c.NewNode(ctxT(t, 30*time.Second))
			mutate = nil
			if !errors.Is(err, coord.ErrSettingsMismatch) {
				t.Fatalf("%s: a node with another value started (err %v), want ErrSettingsMismatch", tc.name, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%s: error %q does not say %q", tc.name, err, w)
				}
			}
			t.Logf("%s: refused: %v", tc.name, err)
		}
		if after, err := clusterCoord(t, c, 1).Settings(ctxT(t, 10*time.Second)); err != nil || after != rec {
			t.Errorf("settings went from %+v to %+v (%v)", rec, after, err)
		}
		mustPut(t, c, 1, "k", "v2")
		expectGet(t, c, 0, "k", "v2")
		n, err := c.NewNode(ctxT(t, 60*time.Second))
		if err != nil {
			t.Fatalf("a node with the recorded settings: %v", err)
		}
		expectGet(t, c, n, "k", "v2")
	})
}

// The scenario, during a change of the lease from 6 s to 300 ms
// (recorded: lease 300 ms, MaxLease 6 s): the old leader, still on 6 s,
// grants a follower a 6 s lease; the follower is then isolated (rmi-down,
// and its coordinator connection stalls, so it neither hears of the new
// epoch nor loses its session) and the leader hands over to a node on
// 300 ms. The successor must wait out the 6 s the record says any node may
// have granted, not its own 300 ms: otherwise a write it acknowledges is
// followed by the follower serving the old value from its cache.
func TestSuccessorWaitsOutTheLongestLeaseAnyNodeGranted(t *testing.T) {
	eachBackend(t, func(t *testing.T, b Backend) {
		const long, short = 6 * time.Second, 300 * time.Millisecond
		// The isolated follower must keep its session (and serve) well
		// past the successor's takeover: long sessions, which the
		// package's ZooKeeper (a 200 ms tick: 4 s at most) does not grant.
		const ttl = 20 * time.Second
		var zkServers []string
		if b == ZooKeeper {
			cfg := zkserver.DefaultConfig()
			cfg.TickTime = time.Second // sessions up to 20 s
			zk, err := zkserver.Start(ctxT(t, 60*time.Second), cfg)
			if err != nil {
				t.Fatalf("start ZooKeeper: %v", err)
			}
			t.Cleanup(func() { _ = zk.Close() })
			zkServers = zk.Servers()
		}
		lease := long
		c := newCluster(t, b, 1, func(o *Options) {
			if zkServers != nil {
				o.ZooKeeper = zkServers
			}
			o.Node = func(cfg *node.Config) {
				cfg.SessionTTL = ttl
				cfg.LeaseDuration = lease
			}
		})
		// The change procedure's first step: the record says 300 ms, and
		// that a node may still grant 6 s (node 0 runs on).
		co := clusterCoord(t, c, 0)
		ctx := ctxT(t, 120*time.Second)
		rec, err := co.Settings(ctx)
		if err != nil {
			t.Fatal(err)
		}
		next := rec
		next.LeaseDuration, next.MaxLease = short, long
		if err := co.SetSettings(ctx, rec, next); err != nil {
			t.Fatalf("SetSettings: %v", err)
		}
		lease = short
		// Node 1 campaigns before node 2, so it is next in line.
		succ, err := c.NewNode(ctx)
		if err != nil {
			t.Fatalf("start the successor on the new lease: %v", err)
		}
		holder, err := c.NewNode(ctx)
		if err != nil {
			t.Fatalf("start the holder on the new lease: %v", err)
		}
		if ld := leaderOf(t, c); ld != 0 {
			t.Fatalf("node %d leads, want node 0 (on the old lease)", ld)
		}
		mustPut(t, c, 0, "k", "old")
		expectGet(t, c, holder, "k", "old")
		hn, _ := c.Node(holder)
		h0 := hn.Stats().CacheHits
		expectGet(t, c, holder, "k", "old")
		if hn.Stats().CacheHits != h0+1 {
			t.Fatal("holder did not cache the key: the test proves nothing")
		}

		if err := c.RmiDown(holder); err != nil {
			t.Fatal(err)
		}
		if err := c.ZkStall(holder); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := c.Resign(ctx, 0); err != nil {
			t.Fatalf("resign: %v", err)
		}
		if ld := leaderOf(t, c); ld != succ {
			t.Fatalf("node %d took over, want node %d", ld, succ)
		}
		mustPut(t, c, succ, "k", "new")
		acked := time.Since(start)
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		got, _, err := c.Get(rctx, holder, "k")
		cancel()
		t.Logf("write acknowledged %v after the hand-over; the holder (state %s) then read %q, %v",
			acked.Round(time.Millisecond), hn.State(), got, err)
		if err == nil && got == "old" {
			t.Fatalf("stale read: the holder served %q after %q was acknowledged (the successor waited only its own lease)", got, "new")
		}
		if acked < long {
			t.Errorf("the write was acknowledged %v after the hand-over, before the %v lease node 0 granted ended", acked, long)
		}

		// Healed, the holder serves the new value; the procedure's last
		// step lowers MaxLease to the lease.
		if err := c.ZkUp(holder); err != nil {
			t.Fatal(err)
		}
		if err := c.RmiUp(holder); err != nil {
			t.Fatal(err)
		}
		soon.Succeeds(t, 60*time.Second, func() error {
			return checkGet(ctxT(t, 5*time.Second), c, holder, "k", "new")
		})
		cur, err := co.Settings(ctx)
		if err != nil {
			t.Fatal(err)
		}
		fin := cur
		fin.MaxLease = fin.LeaseDuration
		if err := co.SetSettings(ctx, cur, fin); err != nil {
			t.Fatalf("SetSettings (finish): %v", err)
		}
	})
}

// A node that was away (its session expired) while the cluster's settings
// changed does not come back with the old ones: its next session reads the
// record, and it stops instead of registering. The others, whose sessions
// lived on, keep serving (they are restarted with the new values by the
// procedure of docs/operations.md: Change a timing setting).
func TestNodeAwayDuringASettingsChangeStops(t *testing.T) {
	eachBackend(t, func(t *testing.T, b Backend) {
		c := newCluster(t, b, 3)
		mustPut(t, c, 0, "k", "v1")
		f := followers(t, c)[0]
		nd, err := c.Node(f)
		if err != nil {
			t.Fatal(err)
		}
		other := (f + 1) % 3
		if err := c.ZkDown(f); err != nil {
			t.Fatal(err)
		}
		// Its session gone at the coordinator: no longer a member.
		observer, err := c.Node(other)
		if err != nil {
			t.Fatal(err)
		}
		soon.Succeeds(t, 30*time.Second, func() error {
			if _, ok := observer.Members()[nd.ID()]; ok {
				return errors.New(nd.ID() + " is still a member")
			}
			return nil
		})
		co := clusterCoord(t, c, other)
		prev, err := co.Settings(ctxT(t, 10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		next := prev
		next.LeaseDuration = prev.LeaseDuration / 2 // MaxLease stays the old lease
		if err := co.SetSettings(ctxT(t, 10*time.Second), prev, next); err != nil {
			t.Fatalf("change the lease: %v", err)
		}
		if err := c.ZkUp(f); err != nil {
			t.Fatal(err)
		}
		select {
		case <-nd.Done():
		case <-time.After(30 * time.Second):
			t.Fatalf("node %d came back with the old lease and did not stop (state %s)", f, nd.State())
		}
		if cause := nd.StopCause(); !errors.Is(cause, coord.ErrSettingsMismatch) || !strings.Contains(cause.Error(), "--lease") {
			t.Fatalf("node %d stopped because %v, want ErrSettingsMismatch naming --lease", f, cause)
		}
		t.Logf("node %d stopped: %v", f, nd.StopCause())
		mustPut(t, c, other, "k", "v2")
		expectGet(t, c, other, "k", "v2")
	})
}

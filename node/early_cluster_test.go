package node_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/cluster"
	"github.com/kvstore/kvstore/internal/soon"
	"github.com/kvstore/kvstore/node"
)

// noEarlyAnswers switches early answers off (Faults.NoEarlyAnswers) in
// TestAWriteDoesNotWaitForAHoldersDisk: set it to see the test fail.
const noEarlyAnswers = false

// TestAWriteDoesNotWaitForAHoldersDisk: a follower that holds a cached copy
// of a key and whose disk stalls does not hold up a write of the key. It
// applies the write in memory, which drops its copy, and says so at once
// (an early answer); the write commits on the disks of the leader and the
// other follower. The stalled follower then reads the new value, and its
// disk still lacks the write: nothing waited for it. Writes of a key it
// does not hold, between writes of k, do not make the next write of k
// wait behind the disk either. Leases and node-to-node calls last a
// minute, longer than a write's deadline, so that a write that waited for
// the stalled disk would fail rather than outlast it.
func TestAWriteDoesNotWaitForAHoldersDisk(t *testing.T) {
	c := cluster.StartTest(t, cluster.Options{Nodes: 3, DataDir: t.TempDir(), Node: func(cfg *node.Config) {
		cfg.LeaseDuration = time.Minute
		cfg.RPCTimeout = time.Minute
		cfg.Faults.NoEarlyAnswers = noEarlyAnswers
	}})
	ld, fs := roles(t, c)
	slow := fs[0]
	sn := nodeOf(t, c, slow)
	if err := c.Put(ctxT(t, 10*time.Second), ld, "k", "v1"); err != nil {
		t.Fatal(err)
	}
	for range 2 { // the first read fetches and caches, the second hits
		if v, _, err := c.Get(ctxT(t, 10*time.Second), slow, "k"); err != nil || v != "v1" {
			t.Fatalf("read k at the follower: %q, %v; want v1", v, err)
		}
	}
	if st := sn.Stats(); st.CacheHits == 0 {
		t.Fatalf("the follower did not cache k: %+v", st)
	}

	waitOnDisk(t, c, ld, sn)
	sn.SetDiskDelay(time.Hour)
	t.Cleanup(func() { _ = c.Kill(slow) }) // ends the stalled commit before Close
	if err := c.Put(ctxT(t, 20*time.Second), ld, "k", "v2"); err != nil {
		t.Fatalf("write of a key held by a follower whose disk stalled: %v", err)
	}
	_, _, ver := nodeOf(t, c, ld).LocalItem("k")
	if v, _, err := c.Get(ctxT(t, 10*time.Second), slow, "k"); err != nil || v != "v2" {
		t.Fatalf("read k at the stalled follower after the write: %q, %v; want v2", v, err)
	}
	if on := sn.OnDisk(); !on.Less(ver) {
		t.Fatalf("the stalled follower has the write (%s) on disk (%s): the disk did not stall", ver, on)
	}
	for i := range 2 {
		if err := c.Put(ctxT(t, 20*time.Second), ld, "other", fmt.Sprint(i)); err != nil {
			t.Fatalf("write of a key the stalled follower does not hold: %v", err)
		}
		if err := c.Put(ctxT(t, 20*time.Second), ld, "k", fmt.Sprint("v", i+3)); err != nil {
			t.Fatalf("write of k after a write of another key: %v", err)
		}
	}
}

// TestEarlyAnswersDoNotCountTowardTheCommit: an early answer says what a
// follower applied, not what is on disk, so it does not count toward a
// majority. With both followers' disks stalled a write of a key they hold
// is not acknowledged, although both applied it and answered early; with the deliberate bug
// Faults.CountEarlyAnswers (the leader counts early answers as on disk) the
// same write is acknowledged with one disk of three holding it, which
// shows the check has teeth.
func TestEarlyAnswersDoNotCountTowardTheCommit(t *testing.T) {
	for _, bug := range []bool{false, true} {
		t.Run(fmt.Sprintf("CountEarlyAnswers=%v", bug), func(t *testing.T) {
			c := cluster.StartTest(t, cluster.Options{Nodes: 3, DataDir: t.TempDir(), Node: func(cfg *node.Config) {
				cfg.Faults.CountEarlyAnswers = bug
			}})
			ld, fs := roles(t, c)
			// Both followers hold a copy of k: the leader asks them for
			// early answers to its writes.
			if err := c.Put(ctxT(t, 10*time.Second), ld, "k", "v0"); err != nil {
				t.Fatal(err)
			}
			for _, f := range fs {
				if v, _, err := c.Get(ctxT(t, 10*time.Second), f, "k"); err != nil || v != "v0" {
					t.Fatalf("read k at follower %d: %q, %v; want v0", f, v, err)
				}
			}
			for _, f := range fs {
				waitOnDisk(t, c, ld, nodeOf(t, c, f))
			}
			for _, f := range fs {
				nodeOf(t, c, f).SetDiskDelay(time.Hour)
				t.Cleanup(func() { _ = c.Kill(f) }) // ends the stalled commit before Close
			}
			// With the bug the write is acknowledged at once; without it
			// it can only time out, so its deadline is short.
			deadline := 3 * time.Second
			if bug {
				deadline = 30 * time.Second
			}
			err := c.Put(ctxT(t, deadline), ld, "k", "v")
			_, _, ver := nodeOf(t, c, ld).LocalItem("k")
			for _, f := range fs {
				fn := nodeOf(t, c, f)
				if v, _, _ := fn.LocalItem("k"); v != "v" {
					t.Fatalf("follower %d did not apply the write (its store holds %q): no early answer to test", f, v)
				}
				if on := fn.OnDisk(); !on.Less(ver) {
					t.Fatalf("follower %d has the write (%s) on disk (%s): its disk did not stall", f, ver, on)
				}
			}
			switch {
			case !bug && err == nil:
				t.Fatal("a write was acknowledged while only the leader's disk held it: early answers counted toward the commit")
			case !bug && !errors.Is(err, kvstore.ErrOutcomeUnknown):
				t.Fatalf("write with no majority on disk: %v, want an outcome-unknown failure", err)
			case bug && err != nil:
				t.Fatalf("with Faults.CountEarlyAnswers the write should be acknowledged (the bug), got %v", err)
			}
		})
	}
}

// waitOnDisk waits until follower f has on disk everything the leader ld
// applied, so that a stall of its disk starts with nothing in flight.
func waitOnDisk(t *testing.T, c *cluster.Cluster, ld int, f *node.Node) {
	t.Helper()
	ldn := nodeOf(t, c, ld)
	soon.Succeeds(t, 30*time.Second, func() error {
		if want, on := ldn.Applied(), f.OnDisk(); on.Less(want) {
			return fmt.Errorf("the follower has %s on disk, the leader is at %s", on, want)
		}
		return nil
	})
}

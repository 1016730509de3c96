package node_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/kvstore/kvstore/cluster"
	"github.com/kvstore/kvstore/internal/soon"
	"github.com/kvstore/kvstore/node"
)

// TestAppendsArePipelined: the leader does not wait for a follower's
// answer before it sends the next entries. One follower's disk stalls, so
// its answer to the Append of the first write never comes (node-to-node
// calls last a minute); the writes after it commit on the other two disks,
// and with pipelining the stalled follower still receives and applies
// them, up to Config.AppendsInFlight Appends. It runs both ways: with
// AppendsInFlight 1 (one Append at a time, as before pipelining) the
// stalled follower applies the first write and nothing after it, which
// shows the check can fail.
func TestAppendsArePipelined(t *testing.T) {
	for _, inFlight := range []int{node.DefaultAppendsInFlight, 1} {
		t.Run(fmt.Sprintf("AppendsInFlight=%d", inFlight), func(t *testing.T) {
			c := cluster.StartTest(t, cluster.Options{Nodes: 3, DataDir: t.TempDir(), Node: func(cfg *node.Config) {
				cfg.RPCTimeout = time.Minute
				cfg.AppendsInFlight = inFlight
			}})
			ld, fs := roles(t, c)
			if err := c.Put(ctxT(t, 10*time.Second), ld, "a", "0"); err != nil {
				t.Fatal(err)
			}
			sn := nodeOf(t, c, fs[0])
			waitOnDisk(t, c, ld, sn)
			sn.SetDiskDelay(time.Hour)
			t.Cleanup(func() { _ = c.Kill(fs[0]) }) // ends the stalled commit before Close
			const writes = node.DefaultAppendsInFlight
			for i := range writes {
				if err := c.Put(ctxT(t, 10*time.Second), ld, fmt.Sprint("p", i), "v"); err != nil {
					t.Fatalf("write %d with one follower's disk stalled: %v", i, err)
				}
			}
			applied := func(key string) bool { _, ok, _ := sn.LocalItem(key); return ok }
			soon.Succeeds(t, 10*time.Second, func() error {
				if !applied("p0") {
					return fmt.Errorf("the stalled follower has not applied the first write")
				}
				return nil
			})
			if inFlight == 1 {
				// Its Append waits for the disk, and nothing goes beside it.
				if applied("p1") {
					t.Fatal("with one Append in flight, the follower whose disk stalled applied the second write")
				}
				return
			}
			soon.Succeeds(t, 10*time.Second, func() error {
				for i := range writes {
					if !applied(fmt.Sprint("p", i)) {
						return fmt.Errorf("the stalled follower has not applied write %d: the leader waited for its answer", i)
					}
				}
				return nil
			})
		})
	}
}

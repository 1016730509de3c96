package cluster

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kvstore/kvstore/internal/soon"
	"github.com/kvstore/kvstore/node"
)

// TestLostDiskRestartedTwiceStaysRecovering is issue 13's scenario: with 3
// voters a write is acknowledged on {A, C} while B lags; C loses its disk
// and restarts twice before any leader could reconcile it; A crashes. C must
// still be recovering, so B and C cannot elect a leader that lacks the
// write; once A is back the write is there and C is reconciled.
func TestLostDiskRestartedTwiceStaysRecovering(t *testing.T) {
	eachBackend(t, func(t *testing.T, b Backend) {
		dir := t.TempDir()
		c := newCluster(t, b, 3, func(o *Options) {
			o.DataDir = dir
			// A keeps leading while it reaches no other voter (B and C
			// are cut off below): no new leader may take C's restarts.
			o.Node = func(cfg *node.Config) { cfg.QuorumTimeout = 30 * time.Second }
		})
		a := leaderOf(t, c)
		bn, cn := (a+1)%3, (a+2)%3
		if err := c.RmiDown(bn); err != nil { // B lags
			t.Fatal(err)
		}
		mustPut(t, c, a, "k", "acknowledged") // on {A, C}
		// Cut C off from the leader too, so that nobody reconciles it.
		if err := c.RmiDown(cn); err != nil {
			t.Fatal(err)
		}
		if err := c.Kill(cn); err != nil {
			t.Fatal(err)
		}
		if err := os.RemoveAll(filepath.Join(dir, fmt.Sprintf("n%d", cn))); err != nil { // the disk is lost
			t.Fatal(err)
		}
		for i := 1; i <= 2; i++ {
			if i == 2 {
				if err := c.Kill(cn); err != nil {
					t.Fatal(err)
				}
			}
			if err := c.Restart(ctxT(t, 60*time.Second), cn); err != nil {
				t.Fatal(err)
			}
			nd, err := c.Node(cn)
			if err != nil {
				t.Fatal(err)
			}
			if !nd.Recovering() {
				t.Fatalf("restart %d after the disk loss: node %d is not recovering, yet no leader reconciled it", i, cn)
			}
		}
		if err := c.Kill(a); err != nil {
			t.Fatal(err)
		}
		for _, n := range []int{bn, cn} {
			if err := c.RmiUp(n); err != nil {
				t.Fatal(err)
			}
		}
		// B lacks the write and C lost it: no leader may serve without A.
		// (With the bug one serves within a session TTL and a lease; the
		// wait is generous for a busy machine.)
		if ld, _, err := c.Leader(ctxT(t, 10*time.Second)); err == nil {
			if err := checkGet(ctxT(t, 20*time.Second), c, ld, "k", "acknowledged"); err != nil {
				t.Fatalf("node %d leads without A and lost the acknowledged write: %v", ld, err)
			}
		}
		if err := c.Restart(ctxT(t, 60*time.Second), a); err != nil {
			t.Fatal(err)
		}
		for n := 0; n < 3; n++ {
			expectGet(t, c, n, "k", "acknowledged")
		}
		nd, err := c.Node(cn)
		if err != nil {
			t.Fatal(err)
		}
		soon.Succeeds(t, 20*time.Second, func() error {
			if nd.Recovering() {
				return fmt.Errorf("node %d is still recovering", cn)
			}
			if v, _, _ := nd.LocalItem("k"); v != "acknowledged" {
				return fmt.Errorf("node %d holds %q", cn, v)
			}
			return nil
		})
	})
}

// WipeData loses a killed node's disk: restarted, it holds nothing and is
// recovering (its RPC is off, so no leader reconciles it yet); once the
// leader reaches it, it is reconciled and holds the write again.
func TestWipedNodeRestartsEmptyAndRecovering(t *testing.T) {
	eachBackend(t, func(t *testing.T, b Backend) {
		c, _ := durableCluster(t, b, 3)
		ld := leaderOf(t, c)
		f := followers(t, c)[0]
		mustPut(t, c, ld, "k", "v")
		soon.Succeeds(t, 20*time.Second, func() error {
			nd, err := c.Node(f)
			if err != nil {
				return err
			}
			if v, _, _ := nd.LocalItem("k"); v != "v" {
				return fmt.Errorf("node %d holds %q", f, v)
			}
			return nil
		})
		if err := c.RmiDown(f); err != nil {
			t.Fatal(err)
		}
		if err := c.Kill(f); err != nil {
			t.Fatal(err)
		}
		if err := c.WipeData(f); err != nil {
			t.Fatal(err)
		}
		if err := c.Restart(ctxT(t, 60*time.Second), f); err != nil {
			t.Fatal(err)
		}
		nd, err := c.Node(f)
		if err != nil {
			t.Fatal(err)
		}
		if _, found, _ := nd.LocalItem("k"); found || !nd.Recovering() {
			t.Fatalf("node %d after losing its disk: holds k %v, recovering %v; want empty and recovering", f, found, nd.Recovering())
		}
		if err := c.WipeData(f); err == nil {
			t.Fatal("wiped the data directory of a running node")
		}
		if err := c.RmiUp(f); err != nil {
			t.Fatal(err)
		}
		if err := c.WaitHealthy(ctxT(t, 60*time.Second)); err != nil {
			t.Fatal(err)
		}
		if v, _, _ := nd.LocalItem("k"); v != "v" {
			t.Fatalf("node %d holds %q after it was reconciled, want v", f, v)
		}
	})
}

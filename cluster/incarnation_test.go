package cluster

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kvstore/kvstore/durable"
	"github.com/kvstore/kvstore/internal/soon"
	"github.com/kvstore/kvstore/node"
)

// localValue reads k from node i's data directory (the node is not
// running): what the node would start with.
func localValue(t *testing.T, dir string, i int, k string) string {
	t.Helper()
	db, st, err := durable.Open(filepath.Join(dir, fmt.Sprintf("n%d", i)), durable.Options{})
	if err != nil {
		t.Fatalf("open node %d's data directory: %v", i, err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	it, ok := st.Snapshot.Items[k]
	if !ok || it.Deleted {
		return ""
	}
	return it.Value
}

// Scenario A: the coordinator is rebuilt and the first node to start is
// one that lost its disk: it bootstraps a new incarnation and leads,
// empty. The nodes with data are then refused (ErrOtherIncarnation) and
// nothing they hold is overwritten; once the empty node is stopped,
// force-new-cluster on the most up-to-date one brings every acknowledged
// write back.
func TestRebuiltCoordinatorLostDiskFirstCannotOverwrite(t *testing.T) {
	eachBackend(t, func(t *testing.T, b Backend) {
		c, dir := durableCluster(t, b, 3)
		staleNodeAndLostCoordinator(t, c) // k: v1 on node 0, v2 (acknowledged) on 1 and 2
		if err := os.RemoveAll(filepath.Join(dir, "n0")); err != nil {
			t.Fatal(err)
		}
		if err := c.Restart(ctxT(t, 60*time.Second), 0); err != nil {
			t.Fatalf("restart of the lost-disk node on the rebuilt coordinator: %v", err)
		}
		for _, i := range []int{1, 2} {
			err := c.Restart(ctxT(t, 30*time.Second), i)
			if !errors.Is(err, node.ErrOtherIncarnation) {
				t.Fatalf("restart of node %d, which holds data, = %v, want ErrOtherIncarnation", i, err)
			}
			if v := localValue(t, dir, i, "k"); v != "v2" {
				t.Fatalf("node %d's data directory holds k = %q after the refusal, want v2", i, v)
			}
		}

		// The operator stops the empty node and recovers from node 1.
		if err := c.Stop(0); err != nil {
			t.Fatal(err)
		}
		force := func(cfg *node.Config) { cfg.ForceNewCluster = cfg.ID }
		if err := c.RestartWith(ctxT(t, 60*time.Second), 1, force); err != nil {
			t.Fatalf("force-new-cluster on node 1: %v", err)
		}
		// Node 2's directory still belongs to the old incarnation; node
		// 0's belongs to the new one and joins as it is.
		if err := c.Restart(ctxT(t, 30*time.Second), 2); !errors.Is(err, node.ErrOtherIncarnation) {
			t.Fatalf("restart of node 2 after the recovery = %v, want ErrOtherIncarnation", err)
		}
		moveDataAside(t, dir, 2)
		for _, i := range []int{0, 2} {
			if err := c.Restart(ctxT(t, 60*time.Second), i); err != nil {
				t.Fatalf("restart node %d after the recovery: %v", i, err)
			}
		}
		for i := 0; i < 3; i++ {
			expectGet(t, c, i, "k", "v2")
		}
		mustPut(t, c, 0, "k", "v3")
		for i := 0; i < 3; i++ {
			nd, _ := c.Node(i)
			soon.Succeeds(t, 20*time.Second, func() error {
				if v, _, _ := nd.LocalItem("k"); v != "v3" {
					return fmt.Errorf("node %d holds %q", i, v)
				}
				return nil
			})
		}
	})
}

// Scenario B: node 2 loses its disk and is started once with a mistyped
// cluster name on the same coordinator (another prefix, no voter record:
// it bootstraps there and leads, at an epoch above the real cluster's).
// Started again with the right name it is refused, not counted as holding
// restored data; with its data moved aside it joins as a new node.
func TestNodeStartedOnceOnAnotherClusterIsRefused(t *testing.T) {
	eachBackend(t, func(t *testing.T, b Backend) {
		dir := t.TempDir()
		name := fmt.Sprintf("prod%d", time.Now().UnixNano())
		c := newCluster(t, b, 3, func(o *Options) {
			o.DataDir = dir
			o.Prefix = "" // the prefix follows the cluster name
			o.Node = func(cfg *node.Config) { cfg.Cluster = name }
		})
		mustPut(t, c, 0, "k", "v1")
		if err := c.Kill(2); err != nil {
			t.Fatal(err)
		}
		if err := os.RemoveAll(filepath.Join(dir, "n2")); err != nil {
			t.Fatal(err)
		}
		typo := func(cfg *node.Config) { cfg.Cluster = name + "-2" }
		if err := c.RestartWith(ctxT(t, 60*time.Second), 2, typo); err != nil {
			t.Fatalf("start node 2 on the mistyped cluster: %v", err)
		}
		if err := c.Stop(2); err != nil {
			t.Fatal(err)
		}
		mustPut(t, c, 0, "k", "v2")

		err := c.Restart(ctxT(t, 30*time.Second), 2)
		if !errors.Is(err, node.ErrOtherIncarnation) {
			t.Fatalf("restart of node 2 with the right cluster name = %v, want ErrOtherIncarnation", err)
		}
		t.Logf("refused: %v", err)
		moveDataAside(t, dir, 2)
		if err := c.Restart(ctxT(t, 60*time.Second), 2); err != nil {
			t.Fatalf("restart node 2 with its data moved aside: %v", err)
		}
		// Node 2 is reconciled (it joined with an empty store: recovering
		// until the leader's snapshot lands), and then a takeover keeps
		// every write. Killing node 0 before that leaves one voter with
		// data of three: no takeover, rightly.
		soon.Succeeds(t, 30*time.Second, func() error {
			if rec, err := c.Recovering(2); err != nil || rec {
				return fmt.Errorf("node 2 still recovering (%v)", err)
			}
			return nil
		})
		if err := c.Kill(0); err != nil {
			t.Fatal(err)
		}
		for _, i := range []int{1, 2} {
			expectGet(t, c, i, "k", "v2")
		}
	})
}

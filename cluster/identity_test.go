package cluster

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kvstore/kvstore/coord"
	"github.com/kvstore/kvstore/coord/etcdcoord"
	"github.com/kvstore/kvstore/coord/zkcoord"
	"github.com/kvstore/kvstore/node"
)

// A node of cluster "b" pointed at cluster "a"'s coordinator prefix refuses
// to start, touching nothing there, and cluster "a" keeps serving.
func TestNodeOfAnotherClusterOnTheSamePrefixIsRefused(t *testing.T) {
	eachBackend(t, func(t *testing.T, b Backend) {
		c := newCluster(t, b, 2, func(o *Options) {
			o.Node = func(cfg *node.Config) { cfg.Cluster = "a" }
		})
		mustPut(t, c, 0, "k", "v1")
		ctx := ctxT(t, 30*time.Second)
		prefix := c.prefix(c.nodeConfig(&slot{id: "probe"}))

		var co coord.Coordinator
		var err error
		if b == ZooKeeper {
			co, err = zkcoord.New(ctx, zkcoord.Config{Servers: c.Endpoints(), Prefix: prefix})
		} else {
			co, err = etcdcoord.New(ctx, etcdcoord.Config{Endpoints: c.Endpoints(), Prefix: prefix})
		}
		if err != nil {
			t.Fatalf("coordinator at %s: %v", prefix, err)
		}
		defer co.Close()
		before, err := co.Voters(ctx)
		if err != nil {
			t.Fatalf("Voters: %v", err)
		}

		cfg := node.DefaultConfig()
		cfg.ID, cfg.Cluster, cfg.Coordinator = "intruder", "b", co
		n, err := node.New(cfg)
		if err != nil {
			t.Fatalf("node.New: %v", err)
		}
		err = n.Start(ctx)
		n.Kill()
		if !errors.Is(err, coord.ErrOtherCluster) {
			t.Fatalf("Start of a node of cluster b on cluster a's prefix = %v, want ErrOtherCluster", err)
		}
		if msg := err.Error(); !strings.Contains(msg, `"a"`) || !strings.Contains(msg, `"b"`) {
			t.Errorf("Start error %q does not name both clusters", msg)
		}
		t.Logf("refused: %v", err)

		// Nothing changed at the prefix: the voters are the same, and the
		// intruder never became a member.
		if after, err := co.Voters(ctx); err != nil || after.Version != before.Version {
			t.Errorf("voters went from %+v to %+v (%v)", before, after, err)
		}
		for _, info := range c.List() {
			if info.ID == "intruder" {
				t.Errorf("the intruder is listed: %+v", info)
			}
		}
		mustPut(t, c, 1, "k", "v2")
		expectGet(t, c, 0, "k", "v2")
		expectGet(t, c, 1, "k", "v2")
	})
}

// A node of the recorded cluster starts on the same prefix again: the claim
// is idempotent across restarts.
func TestRestartedNodeReclaimsItsCluster(t *testing.T) {
	c := newCluster(t, Etcd, 1, func(o *Options) {
		o.Node = func(cfg *node.Config) { cfg.Cluster = "a" }
		o.DataDir = t.TempDir()
	})
	mustPut(t, c, 0, "k", "v")
	if err := c.Kill(0); err != nil {
		t.Fatal(err)
	}
	if err := c.Restart(ctxT(t, 60*time.Second), 0); err != nil {
		t.Fatalf("restart: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Put(ctx, 0, "k", "w"); err != nil {
		t.Fatalf("put after restart: %v", err)
	}
}

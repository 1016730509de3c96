package ops_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kvstore/kvstore/cluster"
	"github.com/kvstore/kvstore/coord/etcdcoord"
	"github.com/kvstore/kvstore/internal/soon"
	"github.com/kvstore/kvstore/node"
	"github.com/kvstore/kvstore/ops"
)

// nodeServer starts an ops Server for nd with its own registry.
func nodeServer(t *testing.T, nd *node.Node) string {
	t.Helper()
	reg, err := ops.NewRegistry(nd.Collectors()...)
	if err != nil {
		t.Fatal(err)
	}
	return "http://" + startServer(t, ops.Config{Gatherer: reg, Ready: nd.Ready}).Addr()
}

// expectStatus waits until GET url answers code with a body containing sub.
func expectStatus(t *testing.T, url string, code int, sub string) {
	t.Helper()
	soon.Succeeds(t, 15*time.Second, func() error {
		got, body := get(t, url)
		if got != code || !strings.Contains(body, sub) {
			return fmt.Errorf("GET %s: %d %q, want %d and %q", url, got, body, code, sub)
		}
		return nil
	})
}

// TestNodeEndpoints serves a real node's metrics and readiness: 503 before
// it serves, 200 once it serves, 503 while it is cut off from the
// coordinator (zk-down) and 200 again after, 503 once stopped.
func TestNodeEndpoints(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c, err := cluster.New(ctx, cluster.Options{Nodes: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("close cluster: %v", err)
		}
	})

	t.Run("before-serving", func(t *testing.T) {
		// A node of another cluster on the same etcd, observed from before
		// its start.
		co, err := etcdcoord.New(ctx, etcdcoord.Config{Endpoints: c.Endpoints(), Prefix: "/kvstore/opstest/"})
		if err != nil {
			t.Fatal(err)
		}
		defer co.Close()
		cfg := node.DefaultConfig()
		cfg.ID, cfg.Cluster, cfg.Coordinator = "solo", "opstest", co
		nd, err := node.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		base := nodeServer(t, nd)
		if code, body := get(t, base+"/readyz"); code != 503 || !strings.Contains(body, "starting") {
			t.Errorf("/readyz before Start: %d %q, want 503 naming the state", code, body)
		}
		if code, body := get(t, base+"/healthz"); code != 200 {
			t.Errorf("/healthz before Start: %d %q", code, body)
		}
		if err := nd.Start(ctx); err != nil {
			nd.Kill()
			t.Fatal(err)
		}
		expectStatus(t, base+"/readyz", 200, "ready")
		expectStatus(t, base+"/metrics", 200, "\nkvstore_is_leader 1\n")
		if err := nd.Close(ctx); err != nil {
			t.Fatal(err)
		}
		if code, body := get(t, base+"/readyz"); code != 503 || !strings.Contains(body, "stopped") {
			t.Errorf("/readyz after Close: %d %q", code, body)
		}
	})

	t.Run("zk-down", func(t *testing.T) {
		nd, err := c.Node(0)
		if err != nil {
			t.Fatal(err)
		}
		base := nodeServer(t, nd)
		expectStatus(t, base+"/readyz", 200, "ready")
		if err := nd.Set(ctx, "k", "v"); err != nil {
			t.Fatal(err)
		}
		code, body := get(t, base+"/metrics")
		for _, want := range []string{
			`kvstore_operations_total{op="put",outcome="ok"} 1`,
			`kvstore_operation_duration_seconds_count{op="put"} 1`,
			"kvstore_serving 1", "kvstore_is_leader 1", "kvstore_leader_changes_total 1",
			"kvstore_cache_hits_total", "kvstore_lease_waits_total", "kvstore_invalidations_sent_total",
			"kvstore_epoch", "kvstore_applied_seq", "go_goroutines", "process_start_time_seconds",
		} {
			if code != 200 || !strings.Contains(body, want) {
				t.Errorf("/metrics (%d) lacks %q", code, want)
			}
		}
		if err := c.ZkDown(0); err != nil {
			t.Fatal(err)
		}
		expectStatus(t, base+"/readyz", 503, "partitioned")
		expectStatus(t, base+"/metrics", 200, "\nkvstore_serving 0\n")
		if err := c.ZkUp(0); err != nil {
			t.Fatal(err)
		}
		expectStatus(t, base+"/readyz", 200, "ready")
	})
}

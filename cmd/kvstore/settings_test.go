package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kvstore/kvstore/coord"
	"github.com/kvstore/kvstore/coord/etcdcoord"
	"github.com/kvstore/kvstore/node"
)

// runKVStore runs the kvstore command in this process and returns its
// output and exit code.
func runKVStore(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := newRootCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	if err != nil {
		out.WriteString("error: " + err.Error() + "\n")
	}
	return out.String(), exitCode(err)
}

// startSettingsNode starts an in-process node of cluster "s" with lease.
func startSettingsNode(ctx context.Context, t *testing.T, endpoint, id string, lease time.Duration) (*node.Node, error) {
	t.Helper()
	co, err := etcdcoord.New(ctx, etcdcoord.Config{Endpoints: []string{endpoint}, Prefix: "/kvstore/s/"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := node.DefaultConfig()
	cfg.ID, cfg.Cluster, cfg.Coordinator, cfg.LeaseDuration = id, "s", co, lease
	n, err := node.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(ctx); err != nil {
		n.Kill()
		_ = co.Close()
		return nil, err
	}
	t.Cleanup(func() {
		_ = n.Close(context.Background())
		_ = co.Close()
	})
	return n, nil
}

// The change procedure through the command: show, set --lease (max-lease
// stays at the old lease, and a node on the old lease is then refused),
// --finish, and --max-requests refused while a node runs.
func TestClusterSettingsCommand(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	etcd := startEtcd(t)
	at := []string{"--etcd", etcd.Endpoint(), "--cluster", "s"}
	settings := func(args ...string) (string, int) {
		return runKVStore(t, append(append([]string{"cluster", "settings"}, args...), at...)...)
	}

	if out, code := settings(); code != exitFailed || !strings.Contains(out, "no settings recorded") {
		t.Fatalf("settings before any node: exit %d, %q; want a failure saying none are recorded", code, out)
	}
	n0, err := startSettingsNode(ctx, t, etcd.Endpoint(), "a", 2*time.Second)
	if err != nil {
		t.Fatalf("first node: %v", err)
	}
	if err := n0.WaitServing(ctx); err != nil {
		t.Fatal(err)
	}
	if out, code := settings(); code != 0 || out != "lease=2s clock-drift=0.05 max-requests=65536 max-lease=2s\n" {
		t.Fatalf("settings: exit %d, %q; want the first node's", code, out)
	}
	for _, args := range [][]string{{"set"}, {"set", "--finish", "--lease", "1s"}, {"set", "--lease", "0s"}, {"set", "--clock-drift", "1.5"}} {
		if out, code := settings(args...); code != exitUsage {
			t.Errorf("settings %v: exit %d, %q; want a usage error", args, code, out)
		}
	}

	// Step 1: the new lease, and max-lease the old one.
	if out, code := settings("set", "--lease", "500ms", "--json"); code != 0 || !strings.Contains(out, `"lease":"500ms"`) || !strings.Contains(out, `"max_lease":"2s"`) {
		t.Fatalf("set --lease 500ms: exit %d, %q; want lease 500ms, max lease 2s", code, out)
	}
	// Step 2: a node on the old lease is refused, one on the new joins.
	if _, err := startSettingsNode(ctx, t, etcd.Endpoint(), "b", 2*time.Second); !errors.Is(err, coord.ErrSettingsMismatch) || !strings.Contains(err.Error(), "--lease") {
		t.Fatalf("node on the old lease after the change: %v; want ErrSettingsMismatch naming --lease", err)
	}
	if _, err := startSettingsNode(ctx, t, etcd.Endpoint(), "b", 500*time.Millisecond); err != nil {
		t.Fatalf("node on the new lease: %v", err)
	}
	// The request-id window does not change while nodes run.
	if out, code := settings("set", "--max-requests", "10"); code != exitFailed || !strings.Contains(out, "stop every node first") {
		t.Fatalf("set --max-requests with nodes running: exit %d, %q; want a refusal", code, out)
	}
	// Step 3: every node runs on the new lease.
	if out, code := settings("set", "--finish"); code != 0 || out != "lease=500ms clock-drift=0.05 max-requests=65536 max-lease=500ms\n" {
		t.Fatalf("set --finish: exit %d, %q; want max-lease 500ms", code, out)
	}
}

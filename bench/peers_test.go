package bench

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kvstore/kvstore/zkserver"
)

// testPeers starts the named peer with Members 3 and checks that a value Put
// through each target is read back by both, then closes them.
func testPeers(t *testing.T, name string, fsync bool, wantNames []string, wantDurability string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	targets, err := NewPeers(ctx, []string{name}, PeerOptions{Members: 3, Fsync: fsync})
	if err != nil {
		t.Fatalf("NewPeers(%q): %v", name, err)
	}
	t.Logf("%s started in %v", name, time.Since(start))
	closed := false
	defer func() {
		if !closed {
			for _, tg := range targets {
				_ = tg.Close()
			}
		}
	}()
	if len(targets) != len(wantNames) {
		t.Fatalf("NewPeers(%q) returned %d targets, want %d", name, len(targets), len(wantNames))
	}
	for i, tg := range targets {
		if tg.Name() != wantNames[i] {
			t.Errorf("target %d is %q, want %q", i, tg.Name(), wantNames[i])
		}
		if tg.Durability() != wantDurability {
			t.Errorf("%s: durability %q, want %q", tg.Name(), tg.Durability(), wantDurability)
		}
	}
	for i, tg := range targets {
		for client := range 4 {
			key := "key-" + tg.Name() + "-" + string(rune('a'+client))
			if err := tg.Get(ctx, client, key); err != nil {
				t.Errorf("%s: Get(missing %q): %v", tg.Name(), key, err)
			}
			if err := tg.Put(ctx, client, key, []byte("v1")); err != nil { // creates
				t.Fatalf("%s: Put(%q): %v", tg.Name(), key, err)
			}
			if err := tg.Put(ctx, client+1, key, []byte(strings.Repeat("v", 256))); err != nil { // overwrites
				t.Fatalf("%s: Put(%q) again: %v", tg.Name(), key, err)
			}
			for _, other := range targets {
				if err := other.Get(ctx, client+i, key); err != nil {
					t.Errorf("%s: Get(%q): %v", other.Name(), key, err)
				}
			}
		}
	}
	start = time.Now()
	closed = true
	for _, tg := range targets {
		if err := tg.Close(); err != nil {
			t.Errorf("%s: Close: %v", tg.Name(), err)
		}
		if err := tg.Close(); err != nil {
			t.Errorf("%s: second Close: %v", tg.Name(), err)
		}
	}
	t.Logf("%s closed in %v", name, time.Since(start))
}

func TestPeersEtcd(t *testing.T) {
	testPeers(t, "etcd", true, []string{"etcd (linearizable)", "etcd (serializable)"}, "fsync, 3 members")
}

func TestPeersZooKeeper(t *testing.T) {
	zkserver.SkipIfUnavailable(t)
	testPeers(t, "zookeeper", true, []string{"zookeeper", "zookeeper (sync+get)"}, "fsync, 3 servers")
}

func TestPeersUnknown(t *testing.T) {
	if _, err := NewPeers(context.Background(), []string{"etcd", "redis"}, PeerOptions{}); err == nil || !strings.Contains(err.Error(), "redis") {
		t.Errorf("NewPeers(redis) = %v, want an error naming redis", err)
	}
}

// Without java on PATH, zkserver.Available fails: NewPeers must fail at once,
// before it starts etcd, with ErrPeerUnavailable and the Debian package name.
func TestPeersZooKeeperUnavailable(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	start := time.Now()
	targets, err := NewPeers(context.Background(), []string{"etcd", "zookeeper"}, PeerOptions{})
	if err == nil {
		for _, tg := range targets {
			_ = tg.Close()
		}
		t.Fatal("NewPeers succeeded without java on PATH")
	}
	if !errors.Is(err, ErrPeerUnavailable) || !strings.Contains(err.Error(), "apt-get install "+zkserver.DebianPackage) {
		t.Errorf("NewPeers = %v, want ErrPeerUnavailable naming the Debian package", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("NewPeers took %v to fail: it started something first", d)
	}
}

func TestPeerZNodePaths(t *testing.T) {
	seen := map[string]string{}
	for _, key := range []string{"user1", "a/b", "a%2Fb", "", ".", "..", "%", "a b", "é"} {
		p := zkPath(key)
		if other, dup := seen[p]; dup {
			t.Errorf("keys %q and %q both map to %q", other, key, p)
		}
		seen[p] = key
		rest := strings.TrimPrefix(p, zkRoot+"/")
		if rest == p || rest == "" || rest == "." || rest == ".." || strings.Contains(rest, "/") {
			t.Errorf("zkPath(%q) = %q, not a child of %s", key, p, zkRoot)
		}
	}
	if p := zkPath("user1"); p != zkRoot+"/user1" {
		t.Errorf("zkPath(user1) = %q", p)
	}
}

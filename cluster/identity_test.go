package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvstore/kvstore/coord"
	"github.com/kvstore/kvstore/coord/etcdcoord"
	"github.com/kvstore/kvstore/coord/zkcoord"
	"github.com/kvstore/kvstore/internal/soon"
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

// A node of another cluster with the same name, at an address this
// cluster still lists for one of its voters (an address reused after the
// voter died, as the robustness suite once saw two test clusters do), is
// refused: its incarnation is not this cluster's. Without the fence
// (Faults.AcceptOtherIncarnation on the foreign node) the survivor of a
// leader crash counts it toward its takeover majority under the dead
// voter's id: the foreign node promises this cluster's epoch, which ends
// its own leadership, and its store, being at a later epoch, is adopted,
// so this cluster's acknowledged write is lost.
func TestNodeOfAnotherIncarnationIsRefused(t *testing.T) {
	ruleAndFault(t, "Faults.AcceptOtherIncarnation", otherIncarnationBreach)
}

// ruleAndFault plays scenario, which returns what broke ("" for nothing),
// with the rule on (nothing may break) and with fault switching it off
// (something must, or the test could not fail).
func ruleAndFault(t *testing.T, fault string, scenario func(t *testing.T, faultOn bool) string) {
	t.Run("rule on", func(t *testing.T) {
		if breach := scenario(t, false); breach != "" {
			t.Fatal(breach)
		}
	})
	t.Run("fault caught", func(t *testing.T) {
		breach := scenario(t, true)
		if breach == "" {
			t.Fatalf("with %s nothing broke: the test cannot fail", fault)
		}
		t.Logf("with %s: %s", fault, breach)
	})
}

// registerAs puts a member entry for id at addr into c's membership, as
// the voter id's own session would, for the rest of the test: a stale
// address that now belongs to another node.
func registerAs(ctx context.Context, t *testing.T, c *Cluster, id, addr string) {
	t.Helper()
	co, err := etcdcoord.New(ctx, etcdcoord.Config{Endpoints: c.Endpoints(), Prefix: c.prefix(c.nodeConfig(&slot{id: id}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = co.Close() })
	sess, err := co.NewSession(ctx, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sess.Close(context.Background()) })
	if err := sess.Register(ctx, coord.Member{ID: id, Addr: addr}); err != nil {
		t.Fatal(err)
	}
}

// otherIncarnationBreach plays the scenario and returns what broke (""
// for nothing): cluster a (three durable voters) loses voter n0, whose
// member entry then names the address of the one node of cluster b (same
// name "default", same etcd, another prefix, so another incarnation and
// later epochs); then a's leader crashes. With accept, b's node runs with
// the fence off.
func otherIncarnationBreach(t *testing.T, accept bool) string {
	ctx := ctxT(t, 90*time.Second)
	a := newCluster(t, Etcd, 3, func(o *Options) { o.DataDir = t.TempDir() })
	mustPut(t, a, 1, "k", "a1")
	if err := a.Kill(0); err != nil {
		t.Fatal(err)
	}
	ld, _, err := a.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, a, ld, "k", "a2") // a serves without n0, at an epoch before b's

	b := newCluster(t, Etcd, 1, func(o *Options) {
		o.Etcd, o.Prefix = a.Endpoints(), "/kvstore/other-b/"
		o.Node = func(cfg *node.Config) { cfg.Faults.AcceptOtherIncarnation = accept }
	})
	mustPut(t, b, 0, "k", "b1")
	bn, err := b.Node(0)
	if err != nil {
		t.Fatal(err)
	}
	bEpoch := bn.AcceptedEpoch()

	registerAs(ctx, t, a, "n0", bn.Addr()) // n0's entry names b's node
	if err := a.Kill(ld); err != nil {
		t.Fatal(err)
	}
	survivor := 3 - ld // the voter of a still running (n1 or n2)

	// Wait until b's node has heard from a's survivor: refused (fenced),
	// or promised a's epoch (the fence off).
	refused := func() float64 { return metric(t, bn, "kvstore_peer_other_incarnation_total") }
	soon.Succeeds(t, 30*time.Second, func() error {
		if refused() > 0 || bn.AcceptedEpoch() != bEpoch {
			return nil
		}
		return fmt.Errorf("b's node heard nothing from a's survivor n%d yet", survivor)
	})
	var breach []string
	if got := bn.AcceptedEpoch(); got != bEpoch {
		breach = append(breach, fmt.Sprintf("b's node promised epoch %d of cluster a (it had promised %d)", got, bEpoch))
	}
	// a comes back once its crashed leader does, with a's data.
	if err := a.Restart(ctx, ld); err != nil {
		t.Fatal(err)
	}
	if got := settledGet(t, a, survivor, "k"); got != "a2" {
		breach = append(breach, fmt.Sprintf("cluster a reads k = %q, not its acknowledged a2", got))
	}
	if got := settledGet(t, b, 0, "k"); got != "b1" {
		breach = append(breach, fmt.Sprintf("cluster b reads k = %q, not its acknowledged b1", got))
	}
	if !accept && refused() == 0 {
		t.Error("kvstore_peer_other_incarnation_total stayed 0")
	}
	return strings.Join(breach, "; ")
}

// A node that answers for another voter, because the leader still has
// that voter's address and the node now listens there, is refused: every
// Append names its addressee. Without the check (Faults.IgnoreAddressee
// on that node) its answers count twice, a write is acknowledged by two
// of five voters, and the three others, restarted with their data after
// the two crash, elect a leader without it.
func TestAnswerForAnotherVoterIsRefused(t *testing.T) {
	ruleAndFault(t, "Faults.IgnoreAddressee", doubleCountBreach)
}

// doubleCountBreach: five durable voters; three followers crash, and the
// member entry of one of them names the address of the last follower f.
// With ignore, f answers for it. A write is then tried; if it is
// acknowledged, the leader and f crash, the three restart, and the write
// must still be there. It returns what broke ("" for nothing).
func doubleCountBreach(t *testing.T, ignore bool) string {
	ctx := ctxT(t, 90*time.Second)
	c := newCluster(t, Etcd, 5, func(o *Options) {
		o.DataDir = t.TempDir()
		o.Node = func(cfg *node.Config) {
			cfg.Faults.IgnoreAddressee = ignore
			// A quorum window (one lease) well past the setup below, so
			// that a slow machine does not make the leader step down
			// before the write is tried.
			cfg.LeaseDuration = 8 * time.Second
		}
	})
	mustPut(t, c, 0, "k", "v1")
	ld, _, err := c.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var fs []int
	for i := range 5 {
		if i != ld {
			fs = append(fs, i)
		}
	}
	f, down := fs[0], fs[1:]
	fn, err := c.Node(f)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range down {
		if err := c.Kill(i); err != nil {
			t.Fatal(err)
		}
	}
	impersonated := fmt.Sprintf("n%d", down[0])
	registerAs(ctx, t, c, impersonated, fn.Addr())
	lnode, err := c.Node(ld)
	if err != nil {
		t.Fatal(err)
	}
	soon.Succeeds(t, 20*time.Second, func() error {
		if got := lnode.Members()[impersonated]; got != fn.Addr() {
			return fmt.Errorf("the leader sees %s at %q, not yet at n%d's %s", impersonated, got, f, fn.Addr())
		}
		return nil
	})

	// Two of five voters run: no write may be acknowledged.
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err = c.Put(wctx, ld, "k", "v2")
	cancel()
	if err != nil {
		t.Logf("write with 2 of 5 voters up: %v", err)
		return ""
	}
	// Acknowledged: it must survive the loss of the two that have it.
	for _, i := range []int{ld, f} {
		if err := c.Kill(i); err != nil {
			t.Fatal(err)
		}
	}
	// At once: each waits to serve, which needs a majority of them.
	errs := make([]error, len(down))
	var wg sync.WaitGroup
	for j, i := range down {
		wg.Go(func() { errs[j] = c.Restart(ctx, i) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if got := settledGet(t, c, down[0], "k"); got != "v2" {
		return fmt.Sprintf("a write acknowledged with voters n%d and n%d up (n%d answering for %s) is lost: k = %q", ld, f, f, impersonated, got)
	}
	return ""
}

// settledGet reads k through node n once the cluster answers, retrying
// within a deadline; a cluster that never answers fails the test (it says
// nothing about which value survived).
func settledGet(t *testing.T, c *Cluster, n int, k string) string {
	t.Helper()
	var v string
	err := soon.Within(30*time.Second, func() error {
		got, found, err := c.Get(ctxT(t, 5*time.Second), n, k)
		if err != nil {
			return err
		}
		if !found {
			return fmt.Errorf("%s not found", k)
		}
		v = got
		return nil
	})
	if err != nil {
		t.Fatalf("read %s through node %d: %v", k, n, err)
	}
	return v
}

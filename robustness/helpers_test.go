package robustness

import (
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/kvstore/kvstore/cluster"
	"github.com/kvstore/kvstore/robustness/nemesis"
	"github.com/kvstore/kvstore/store"
)

// runPattern reports whether go test's -run pattern selects the test or
// subtest name: like the go command, it splits both on '/' and matches
// each element of the pattern against the name's element at that level.
func runPattern(t *testing.T, pattern, name string) bool {
	t.Helper()
	pats, parts := strings.Split(pattern, "/"), strings.Split(name, "/")
	for i, p := range pats {
		if i >= len(parts) {
			return true // a parent of what the pattern selects runs too
		}
		ok, err := regexp.MatchString(p, parts[i])
		if err != nil {
			t.Fatalf("pattern %q: %v", pattern, err)
		}
		if !ok {
			return false
		}
	}
	return true
}

// replayPattern extracts the -run pattern of a printed replay command.
func replayPattern(t *testing.T, cmd string) string {
	t.Helper()
	m := regexp.MustCompile(`-run '([^']*)'`).FindStringSubmatch(cmd)
	if m == nil {
		t.Fatalf("no -run pattern in %q", cmd)
	}
	return m[1]
}

// TestReplaySelectsOneRun: the printed replay commands run the failing
// test on the failing backend only (and, for a protocol bug, its case
// only), and the seed alone decides the node count.
func TestReplaySelectsOneRun(t *testing.T) {
	names := []string{
		"TestLinearizableUnderFaults/etcd",
		"TestLinearizableUnderFaults/zookeeper",
		"TestCheckerCatchesBrokenProtocol/etcd/skip-invalidation",
		"TestCheckerCatchesBrokenProtocol/etcd/ignore-lease",
		"TestCheckerCatchesBrokenProtocol/zookeeper/skip-invalidation",
		"TestReplaySelectsOneRun",
	}
	for _, tc := range []struct{ cmd, want string }{
		{replaySchedule(9, cluster.Etcd), names[0]},
		{replaySchedule(9, cluster.ZooKeeper), names[1]},
		{replayBug(9, cluster.Etcd, "skip-invalidation"), names[2]},
	} {
		if !strings.HasPrefix(tc.cmd, "KVSTORE_SEED=9 ") {
			t.Errorf("%q does not set the seed", tc.cmd)
		}
		p := replayPattern(t, tc.cmd)
		for _, n := range names {
			if got := runPattern(t, p, n); got != (n == tc.want) {
				t.Errorf("-run %q selects %s: %v, want %v", p, n, got, !got)
			}
		}
	}
	if !strings.Contains(replaySchedule(9, cluster.Etcd), "KVSTORE_SCHEDULES=1 ") {
		t.Error("the schedule replay runs more than one schedule")
	}

	fives := 0
	for seed := uint64(1000); seed < 1010; seed++ {
		if a, b := nodesFor(seed), nodesFor(seed); a != b {
			t.Fatal("node count not a function of the seed")
		}
		if nodesFor(seed) == 5 {
			fives++
		}
	}
	if fives != 2 {
		t.Errorf("%d of 10 consecutive seeds run 5 nodes, want 2", fives)
	}
}

// TestCaughtByCountsOnlySafety: only a linearizability or durability
// violation counts as catching a protocol bug; a cluster that did not heal
// or a failed final read does not.
func TestCaughtByCountsOnlySafety(t *testing.T) {
	for _, tc := range []struct {
		r    run
		want string
	}{
		{run{}, ""},
		{run{other: []string{"cluster did not heal: timeout"}}, ""},
		{run{other: []string{"final read of k0 through node 1: timeout"}, diverged: []string{"key k0"}}, ""},
		{run{illegal: "history not linearizable, keys [k0]"}, "linearizability"},
		{run{durability: []string{"own store of node 2: lost acknowledged write\nmore"}, other: []string{"x"}}, "durability"},
	} {
		got := tc.r.caughtBy()
		if !strings.HasPrefix(got, tc.want) || (tc.want == "") != (got == "") {
			t.Errorf("%+v: caught by %q, want %q", tc.r, got, tc.want)
		}
		if strings.Contains(got, "\n") {
			t.Errorf("caught by %q: want one line", got)
		}
	}
}

func TestCompareReplicas(t *testing.T) {
	v := func(e int64, s uint64) store.Version { return store.Version{Epoch: e, Seq: s} }
	a := replica{applied: v(2, 9), items: map[string]item{"k0": {"x", true, v(2, 5)}, "k1": {"", false, v(1, 3)}}}
	b := replica{applied: v(2, 9), items: map[string]item{"k0": {"x", true, v(2, 5)}, "k1": {"", false, v(1, 3)}}}
	if d := compareReplicas([]replica{a, b, a}); len(d) != 0 {
		t.Fatalf("identical replicas differ: %v", d)
	}
	// Numbered as the cluster numbers them: node 1 was retired, node 3
	// replaced it.
	c := replica{node: 3, applied: v(2, 9), items: map[string]item{"k0": {"y", true, v(2, 5)}, "k1": {"", false, v(1, 3)}}}
	b.node = 2
	d := compareReplicas([]replica{a, c, b})
	if len(d) != 1 || !strings.Contains(d[0], `"k0"`) || !strings.Contains(d[0], `node 3 has "y"`) || !strings.Contains(d[0], `node 2 has "x"`) {
		t.Fatalf("diff %v, want key k0 with node 3 holding y and node 2 x", d)
	}
	if f := c.final(); f["k0"].Value != "y" || !f["k0"].Found || f["k1"].Found {
		t.Fatalf("final %v", f)
	}
}

// TestFaultsNamed: KVSTORE_KINDS names faults as printed schedules do,
// comma-separated with spaces allowed; a fault that needs durable nodes,
// or no fault at all, is refused with the list of those it may name.
func TestFaultsNamed(t *testing.T) {
	got, err := faultsNamed("kill-leader, bridge,hand-over,rmi-down-follower")
	if want := []nemesis.Fault{nemesis.KillLeader, nemesis.Bridge, nemesis.HandOver, nemesis.RmiDownFollower}; err != nil || !slices.Equal(got, want) {
		t.Fatalf("faults %v, %v; want %v", got, err, want)
	}
	if got, err := faultsNamed(""); got != nil || err != nil {
		t.Fatalf("no faults named: %v, %v; want the default mix (nil)", got, err)
	}
	for _, s := range []string{"crash-all", "kill,no-such-fault"} {
		_, err := faultsNamed(s)
		if err == nil || !strings.Contains(err.Error(), "(known: [kill kill-leader rmi-down ") {
			t.Errorf("%q: %v, want an unknown fault and the known ones", s, err)
		}
	}
}

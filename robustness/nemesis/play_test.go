package nemesis

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

func quick(size int) Options {
	return Options{Size: size, Steps: 40, MinHold: 0, MaxHold: time.Millisecond, MaxGap: time.Millisecond}
}

// TestPlayEndsHealed plays long schedules of every fault against a fake
// cluster: each step injects its fault (seen when it is healed), the
// cluster is healed and found healthy after every step, and nothing is left
// broken at the end.
func TestPlayEndsHealed(t *testing.T) {
	for _, size := range []int{3, 5} {
		for seed := uint64(0); seed < 20; seed++ {
			f := newFake(size)
			o := quick(size)
			o.Faults = append(slices.Clone(AllFaults), HandOver, RmiDownFollower, CrashAll, RollingCrash, LoseDisk, LoseLastCopy, ReplaceNode, RemoveVoter)
			if seed == 1 {
				f.refusals = 2 // the first removals are refused, and retried
			}
			s := Generate(seed, o)
			var log []string
			n, err := Play(context.Background(), f, s, 5*time.Second, func(format string, args ...any) {
				log = append(log, fmt.Sprintf(format, args...))
			})
			if err != nil {
				t.Fatalf("size %d seed %d: %v", size, seed, err)
			}
			if n != len(s.Steps) {
				t.Fatalf("size %d seed %d: %d faults injected of %d:\n%s", size, seed, n, len(s.Steps), strings.Join(log, "\n"))
			}
			if f.heals != len(s.Steps) || f.healthy != len(s.Steps) {
				t.Fatalf("size %d seed %d: %d heals and %d health checks for %d steps", size, seed, f.heals, f.healthy, len(s.Steps))
			}
			if d := f.describe(); d != "" {
				t.Fatalf("size %d seed %d: left broken: %s", size, seed, d)
			}
			if len(f.actives) != len(s.Steps) {
				t.Fatalf("size %d seed %d: Active called %d times for %d steps", size, seed, len(f.actives), len(s.Steps))
			}
			for i, st := range s.Steps {
				if got := len(f.actives[i]); got != size {
					t.Fatalf("size %d seed %d step %d (%s): %d active nodes %v, want %d", size, seed, i, st, got, f.actives[i], size)
				}
				if err := injected(st, f.faults[i], f.leaders[i], f.actives[i]); err != nil {
					t.Fatalf("size %d seed %d step %d (%s): %v", size, seed, i, st, err)
				}
			}
		}
	}
}

// injected says whether the fault state seen at the heal of st is st's;
// the step's nodes are positions in active.
func injected(st Step, seen string, leader int, active []int) error {
	want := ""
	nodes := make([]int, len(st.Nodes))
	for i, p := range st.Nodes {
		nodes[i] = active[p]
	}
	st.Nodes = nodes
	switch st.Fault {
	case Kill, KillLeader:
		want = "killed"
	case CrashAll:
		if got := listOf(seen, "killed"); !slices.Equal(got, active) {
			return fmt.Errorf("fault state %q: killed %v, want every active node %v", seen, got, active)
		}
	case RollingCrash:
		if strings.Contains(seen, "killed") {
			return fmt.Errorf("fault state %q: a rolling crash restarts every node it kills", seen)
		}
	case RmiDown:
		want = "rmi-down"
	case RmiDownFollower:
		want = "rmi-down"
		if strings.Contains(seen, fmt.Sprintf("rmi-down [%d]", leader)) {
			return fmt.Errorf("fault state %q: the leader %d is down, want a follower", seen, leader)
		}
	case ZkDown, ZkDownLeader, ZkDownMajority:
		want = "zk-down"
	case ZkStall:
		want = "zk-stall"
	case Partition, PartitionLeader, OneWay:
		want = "cut"
	case Isolate:
		want = "zk-down"
		if !strings.Contains(seen, "cut") {
			return fmt.Errorf("isolated node not cut from its peers: %q", seen)
		}
	case HandOver:
		want = "zk-stall"
	case PauseLeader:
		want = fmt.Sprintf("paused [%d]", leader)
	case Bridge:
		return bridged(st, seen, leader, active)
	case LoseDisk:
		want = "wiped"
		if !strings.Contains(seen, fmt.Sprintf("rmi-down %v", st.Nodes)) || !strings.Contains(seen, fmt.Sprintf("recovering %v", st.Nodes)) {
			return fmt.Errorf("fault state %q: want node %v rmi-down and recovering", seen, st.Nodes)
		}
	case LoseLastCopy:
		want = "killed"
		if strings.Contains(seen, "rmi-down") || !strings.Contains(seen, "wiped [") || !strings.Contains(seen, "recovering [") {
			return fmt.Errorf("fault state %q: want a wiped, recovering node and every RPC back", seen)
		}
		killed, wiped := listOf(seen, "killed"), listOf(seen, "wiped")
		if !slices.Contains(killed, leader) || len(killed) != (len(active)-1)/2 {
			return fmt.Errorf("fault state %q: want the leader %d and %d others killed", seen, leader, (len(active)-1)/2-1)
		}
		if len(wiped) != 1 || slices.Contains(killed, wiped[0]) {
			return fmt.Errorf("fault state %q: want one wiped node, not killed", seen)
		}
	case ReplaceNode, RemoveVoter:
		want = "retired"
		if strings.Contains(seen, "killed") {
			return fmt.Errorf("fault state %q: a replaced node is retired, nothing killed", seen)
		}
		retired := listOf(seen, "retired")
		if st.Fault == ReplaceNode && !slices.Contains(retired, st.Nodes[0]) {
			return fmt.Errorf("fault state %q: node %d not retired", seen, st.Nodes[0])
		}
		if st.Fault == RemoveVoter && slices.Contains(retired, leader) {
			return fmt.Errorf("fault state %q: the leader %d was removed, want a follower", seen, leader)
		}
	case Delay:
		want = "delay all"
		if len(st.Nodes) > 0 {
			var ds []string
			for _, n := range st.Nodes {
				ds = append(ds, fmt.Sprintf("%d:%v", n, st.Delay))
			}
			sort.Strings(ds)
			want = "delay " + strings.Join(ds, ",")
		}
	}
	if !strings.Contains(seen, want) {
		return fmt.Errorf("fault state %q, want %q", seen, want)
	}
	if len(st.Nodes) > 0 && st.Fault != Delay && st.Fault != Partition && st.Fault != OneWay && st.Fault != ReplaceNode {
		ns := slices.Sorted(slices.Values(st.Nodes))
		if !strings.Contains(seen, fmt.Sprint(ns)) {
			return fmt.Errorf("fault state %q does not name nodes %v", seen, st.Nodes)
		}
	}
	return nil
}

// bridged says whether the fault state seen is a bridge partition of st:
// the bridge (the leader for Pick 0, else a follower) cut from no node,
// every other node cut both ways from the nodes of the other side only,
// the sides as even as can be.
func bridged(st Step, seen string, leader int, active []int) error {
	i := strings.Index(seen, "cut ")
	if i < 0 {
		return fmt.Errorf("fault state %q: nothing cut", seen)
	}
	cut := map[[2]int]bool{}
	for _, p := range strings.Split(strings.SplitN(seen[i+4:], ";", 2)[0], ",") {
		var a, b int
		if _, err := fmt.Sscanf(p, "%d->%d", &a, &b); err != nil {
			return fmt.Errorf("fault state %q: %v", seen, err)
		}
		cut[[2]int{a, b}] = true
	}
	var br []int
	for _, n := range active {
		touched := false
		for k := range cut {
			touched = touched || k[0] == n || k[1] == n
		}
		if !touched {
			br = append(br, n)
		}
	}
	if len(br) != 1 || (st.Pick == 0) != (br[0] == leader) {
		return fmt.Errorf("fault state %q: uncut nodes %v, want one bridge (the leader %d: %v)", seen, br, leader, st.Pick == 0)
	}
	// Side of each other node: those cut from the first one form the
	// other side.
	var first int
	for _, n := range active {
		if n != br[0] {
			first = n
			break
		}
	}
	var a, b []int
	for _, n := range active {
		switch {
		case n == br[0]:
		case cut[[2]int{first, n}]:
			b = append(b, n)
		default:
			a = append(a, n)
		}
	}
	for k := range cut {
		if !cut[[2]int{k[1], k[0]}] || slices.Contains(a, k[0]) == slices.Contains(a, k[1]) {
			return fmt.Errorf("fault state %q: %d->%d is not a cut between sides %v and %v, both ways", seen, k[0], k[1], a, b)
		}
	}
	if len(cut) != 2*len(a)*len(b) || len(a)-len(b) > 1 || len(b)-len(a) > 1 {
		return fmt.Errorf("fault state %q: sides %v and %v not fully cut or uneven", seen, a, b)
	}
	return nil
}

// listOf parses the node list "name [a b c]" of a fault state.
func listOf(seen, name string) []int {
	i := strings.Index(seen, name+" [")
	if i < 0 {
		return nil
	}
	rest := seen[i+len(name)+2:]
	rest = rest[:strings.IndexByte(rest, ']')]
	var out []int
	for _, f := range strings.Fields(rest) {
		var n int
		fmt.Sscan(f, &n)
		out = append(out, n)
	}
	return out
}

// TestPlayReportsNoRecovery: a cluster that is not healthy after a heal
// stops the schedule with an error naming the step.
func TestPlayReportsNoRecovery(t *testing.T) {
	f := newFake(3)
	f.unhealthy = true
	s := Generate(1, quick(3))
	n, err := Play(context.Background(), f, s, 50*time.Millisecond, func(string, ...any) {})
	if err == nil || n != 1 {
		t.Fatalf("Play = %d, %v; want 1 fault and an error", n, err)
	}
	if !strings.Contains(err.Error(), s.Steps[0].Fault.Name()) {
		t.Fatalf("error %q does not name the step %s", err, s.Steps[0])
	}
}

// TestPlayStopsOnCancel: a cancelled context ends the schedule at once and
// still heals the fault in place.
func TestPlayStopsOnCancel(t *testing.T) {
	f := newFake(3)
	o := quick(3)
	o.MinHold, o.MaxHold = time.Hour, time.Hour
	o.MaxGap = 0
	s := Generate(1, o)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	done := make(chan error, 1)
	go func() {
		_, err := Play(ctx, f, s, time.Second, func(string, ...any) {})
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Play did not stop on a cancelled context")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if d := f.describe(); d != "" {
		t.Fatalf("left broken: %s", d)
	}
}

// lostDisks is a schedule of n LoseDisk steps on node 1.
func lostDisks(n int, twice bool) Schedule {
	s := Schedule{Seed: 1}
	for i := 0; i < n; i++ {
		s.Steps = append(s.Steps, Step{Fault: LoseDisk, Nodes: []int{1}, Twice: twice})
	}
	return s
}

// TestPlayReportsNodeNotRecovering: a node that counts as restored when it
// restarts a second time after losing its disk (forget) is reported as
// ErrNotRecovering, the schedule still runs to its end and heals, and the
// error does not say the cluster failed to heal. Restarted once, with
// the mark kept, or reconciled by its own takeover between the restarts
// (it can lead: only its inbound RPC is off), nothing is reported.
func TestPlayReportsNodeNotRecovering(t *testing.T) {
	for _, tc := range []struct {
		forget, twice, self, broken bool
	}{
		{forget: true, twice: true, broken: true},
		{forget: true, twice: false},
		{forget: false, twice: true},
		// Reconciled by its own takeover between the restarts: the
		// second restart rightly comes back with its data.
		{self: true, twice: true},
		{forget: true, self: true, twice: true},
	} {
		f := newFake(3)
		f.forget, f.selfReconcile = tc.forget, tc.self
		var log []string
		n, err := Play(context.Background(), f, lostDisks(2, tc.twice), 5*time.Second, func(format string, args ...any) {
			log = append(log, fmt.Sprintf(format, args...))
		})
		if n != 2 || f.heals != 2 || f.healthy != 2 {
			t.Fatalf("%+v: %d faults, %d heals, %d health checks; want 2 of each", tc, n, f.heals, f.healthy)
		}
		if errors.Is(err, ErrNotHealed) {
			t.Fatalf("%+v: %v: the cluster healed", tc, err)
		}
		if got := errors.Is(err, ErrNotRecovering); got != tc.broken {
			t.Fatalf("%+v: Play = %v; want ErrNotRecovering %v\n%s", tc, err, tc.broken, strings.Join(log, "\n"))
		}
		if tc.broken && !strings.Contains(err.Error(), "restart 2") {
			t.Fatalf("%+v: %v does not name the second restart", tc, err)
		}
	}
}

// TestPlayReportsDataLostToPowerLoss: after a power loss of every node
// (CrashAll), a node that comes back recovering, although it was not
// before, is reported as ErrLostData; with every node back as it was,
// nothing is reported.
func TestPlayReportsDataLostToPowerLoss(t *testing.T) {
	for _, setAside := range []int{0, 2} {
		f := newFake(3)
		f.setAside = setAside
		s := Schedule{Steps: []Step{{Fault: CrashAll, Hold: time.Millisecond}}}
		_, err := Play(context.Background(), f, s, 5*time.Second, func(string, ...any) {})
		if got := errors.Is(err, ErrLostData); got != (setAside != 0) {
			t.Fatalf("node %d set aside: Play = %v; want ErrLostData %v", setAside-1, err, setAside != 0)
		}
		if setAside != 0 && !strings.Contains(err.Error(), "node 1") {
			t.Fatalf("%v does not name node 1", err)
		}
		if len(f.powerLost) != 3 {
			t.Fatalf("nodes %v lost power, want all 3", f.powerLost)
		}
	}
}

// TestReplaceGivesUpWhenRemovalRefused: a removal the leader keeps
// refusing gives the step up after the removal budget: the crashed node
// stays in the cluster, is restarted by the heal, and no node is added.
func TestReplaceGivesUpWhenRemovalRefused(t *testing.T) {
	defer func(d time.Duration) { removeBudget = d }(removeBudget)
	removeBudget = 300 * time.Millisecond
	f := newFake(3)
	f.refusals = 1 << 30
	var log []string
	s := Schedule{Seed: 1, Steps: []Step{{Fault: ReplaceNode, Nodes: []int{2}}}}
	n, err := Play(context.Background(), f, s, 5*time.Second, func(format string, args ...any) {
		log = append(log, fmt.Sprintf(format, args...))
	})
	if err != nil || n != 0 {
		t.Fatalf("Play = %d, %v; want no fault injected and no error", n, err)
	}
	if f.size != 3 || len(f.retired) != 0 || f.faults[0] != "killed [2]" {
		t.Fatalf("%d nodes, retired %v, state at the heal %q; want 3, none retired, node 2 killed", f.size, f.retired, f.faults[0])
	}
	if !strings.Contains(strings.Join(log, "\n"), "inject failed: remove node 2") {
		t.Fatalf("the refused removal is not logged:\n%s", strings.Join(log, "\n"))
	}
}

// TestPlayObservedSpans: every step's span is observed once, in order,
// with the nodes it hit and its times in order (inject, heal, healthy);
// a step after which the cluster does not heal has no healthy time.
func TestPlayObservedSpans(t *testing.T) {
	f := newFake(3)
	o := quick(3)
	o.Steps, o.Faults = 6, []Fault{PauseLeader, Bridge, Kill}
	s := Generate(3, o)
	var spans []Span
	if _, err := PlayObserved(context.Background(), f, s, 5*time.Second, func(string, ...any) {}, func(sp Span) { spans = append(spans, sp) }); err != nil {
		t.Fatal(err)
	}
	if len(spans) != len(s.Steps) {
		t.Fatalf("%d spans for %d steps", len(spans), len(s.Steps))
	}
	var prev time.Time
	for i, sp := range spans {
		if !reflect.DeepEqual(sp.Step, s.Steps[i]) || sp.Size != 3 || len(sp.Nodes) == 0 {
			t.Fatalf("span %d: %+v, want step %s on 3 nodes, with its nodes", i, sp, s.Steps[i])
		}
		if sp.Injected.Before(prev) || sp.Healing.Before(sp.Injected) || sp.Healthy.Before(sp.Healing) {
			t.Fatalf("span %d (%s): times out of order: injected %v, healing %v, healthy %v after the previous %v", i, sp.Step, sp.Injected, sp.Healing, sp.Healthy, prev)
		}
		prev = sp.Healthy
	}
	f = newFake(3)
	f.unhealthy = true
	spans = nil
	if _, err := PlayObserved(context.Background(), f, s, 50*time.Millisecond, func(string, ...any) {}, func(sp Span) { spans = append(spans, sp) }); !errors.Is(err, ErrNotHealed) {
		t.Fatalf("unhealthy cluster: %v, want ErrNotHealed", err)
	}
	if len(spans) != 1 || !spans[0].Healthy.IsZero() {
		t.Fatalf("unhealthy cluster: spans %+v, want one without a healthy time", spans)
	}
}

// TestLivenessExempt pins down which faults are exempt from the liveness
// target: those that leave no healthy majority (a majority hit, a
// hand-over with under 5 nodes) and the rolling crash; never the faults of
// a single node, the leader's or a minority's.
func TestLivenessExempt(t *testing.T) {
	for _, k := range append(slices.Clone(AllFaults), DurableFaults...) {
		want := k == ZkDownMajority || k == CrashAll || k == LoseLastCopy || k == RollingCrash
		if got := LivenessExempt(Step{Fault: k}, 3); got != want {
			t.Errorf("%s with 3 nodes: %v, want %v", k, got, want)
		}
	}
	if !LivenessExempt(Step{Fault: HandOver}, 3) || LivenessExempt(Step{Fault: HandOver}, 5) {
		t.Errorf("hand-over: want no healthy majority with 3 nodes, one with 5")
	}
}

package nemesis

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

func opts(size int) Options {
	return Options{Size: size, Steps: 6, MinHold: 500 * time.Millisecond, MaxHold: 3 * time.Second, MaxGap: 500 * time.Millisecond}
}

func TestSameSeedSameSchedule(t *testing.T) {
	for _, size := range []int{3, 5} {
		for seed := uint64(0); seed < 50; seed++ {
			a, b := Generate(seed, opts(size)), Generate(seed, opts(size))
			if !reflect.DeepEqual(a, b) {
				t.Fatalf("size %d seed %d: two schedules:\n%s\n%s", size, seed, a, b)
			}
			if a.String() != b.String() {
				t.Fatalf("size %d seed %d: two descriptions:\n%s\n%s", size, seed, a, b)
			}
			if a.Seed != seed || len(a.Steps) != 6 {
				t.Fatalf("size %d seed %d: schedule %s", size, seed, a)
			}
		}
	}
}

func TestDifferentSeedsDiffer(t *testing.T) {
	for _, size := range []int{3, 5} {
		seen := map[string]uint64{}
		for seed := uint64(0); seed < 200; seed++ {
			s := Generate(seed, opts(size))
			steps := fmt.Sprint(s.Steps)
			if prev, ok := seen[steps]; ok {
				t.Fatalf("size %d: seeds %d and %d give the same steps: %s", size, prev, seed, s)
			}
			seen[steps] = seed
		}
	}
}

// TestGenerateShapes checks every generated step against the options: holds
// and gaps in bounds, nodes in range and distinct, a minority where the kind
// says so, and both forms of delay (every link, some nodes) in use.
func TestGenerateShapes(t *testing.T) {
	for _, size := range []int{3, 5} {
		o := opts(size)
		minority := (size - 1) / 2
		kinds := map[Kind]int{}
		var allLinks, perNode int
		for seed := uint64(0); seed < 300; seed++ {
			for _, st := range Generate(seed, o).Steps {
				kinds[st.Kind]++
				if st.Hold < o.MinHold || st.Hold >= o.MaxHold || st.Gap < 0 || st.Gap >= o.MaxGap {
					t.Fatalf("size %d seed %d: %s: hold or gap out of bounds", size, seed, st)
				}
				all := append(slices.Clone(st.Nodes), st.Other...)
				for i, n := range all {
					if n < 0 || n >= size || slices.Contains(all[i+1:], n) {
						t.Fatalf("size %d seed %d: %s: bad or repeated node %d", size, seed, st, n)
					}
				}
				switch st.Kind {
				case Kill, RmiDown, ZkDown, ZkStall, Isolate:
					if len(st.Nodes) != 1 {
						t.Fatalf("size %d seed %d: %s: want one node", size, seed, st)
					}
				case ZkDownMajority:
					if len(st.Nodes) != minority+1 {
						t.Fatalf("size %d seed %d: %s: want a majority", size, seed, st)
					}
				case Partition:
					if len(st.Nodes) < 1 || len(st.Nodes) > max(minority, 1) {
						t.Fatalf("size %d seed %d: %s: want a minority", size, seed, st)
					}
				case OneWay:
					if len(st.Nodes) != 1 || len(st.Other) < 1 {
						t.Fatalf("size %d seed %d: %s: want one node and others", size, seed, st)
					}
				case Delay:
					if st.Delay <= 0 || st.Delay > 200*time.Millisecond {
						t.Fatalf("size %d seed %d: %s: delay out of bounds", size, seed, st)
					}
					if len(st.Nodes) == 0 {
						allLinks++
					} else if len(st.Nodes) <= max(minority, 1) {
						perNode++
					} else {
						t.Fatalf("size %d seed %d: %s: want a minority delayed", size, seed, st)
					}
				}
			}
		}
		for _, k := range AllKinds {
			if kinds[k] == 0 {
				t.Errorf("size %d: %s never generated in 300 schedules", size, k)
			}
		}
		if allLinks == 0 || perNode == 0 {
			t.Errorf("size %d: delays of every link %d, of some nodes %d: want both", size, allLinks, perNode)
		}
	}
}

// fake is a Target that keeps the fault state of each node, so a test can
// see what was injected and whether everything was healed.
type fake struct {
	mu        sync.Mutex
	size      int
	leader    int
	killed    map[int]bool
	rmiDown   map[int]bool
	zkDown    map[int]bool
	zkStall   map[int]bool
	blocked   map[[2]int]bool
	linkDelay time.Duration
	nodeDelay map[int]time.Duration
	resigned  int

	faults      []string // the fault state seen at each Heal
	leaders     []int    // the leader at each Heal
	heals       int
	healthy     int
	unhealthy   bool // WaitHealthy fails (a cluster that does not recover)
	leaderCalls int
}

func newFake(size int) *fake {
	f := &fake{size: size}
	f.reset()
	return f
}

func (f *fake) reset() {
	f.killed, f.rmiDown, f.zkDown, f.zkStall = map[int]bool{}, map[int]bool{}, map[int]bool{}, map[int]bool{}
	f.blocked, f.linkDelay, f.nodeDelay = map[[2]int]bool{}, 0, map[int]time.Duration{}
}

func (f *fake) check(n int) error {
	if n < 0 || n >= f.size {
		return fmt.Errorf("no node %d", n)
	}
	return nil
}

func (f *fake) set(m map[int]bool, n int, v bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check(n); err != nil {
		return err
	}
	if v {
		m[n] = true
	} else {
		delete(m, n)
	}
	return nil
}

func (f *fake) Size() int                              { return f.size }
func (f *fake) Kill(n int) error                       { return f.set(f.killed, n, true) }
func (f *fake) Stop(n int) error                       { return f.set(f.killed, n, true) }
func (f *fake) Restart(_ context.Context, n int) error { return f.set(f.killed, n, false) }
func (f *fake) RmiDown(n int) error                    { return f.set(f.rmiDown, n, true) }
func (f *fake) RmiUp(n int) error                      { return f.set(f.rmiDown, n, false) }
func (f *fake) ZkDown(n int) error                     { return f.set(f.zkDown, n, true) }
func (f *fake) ZkStall(n int) error                    { return f.set(f.zkStall, n, true) }
func (f *fake) ZkUp(n int) error {
	if err := f.set(f.zkDown, n, false); err != nil {
		return err
	}
	return f.set(f.zkStall, n, false)
}

func (f *fake) Resign(_ context.Context, n int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n != f.leader {
		return fmt.Errorf("node %d is not the leader", n)
	}
	f.resigned++
	f.leader = (f.leader + 1) % f.size
	return nil
}

func (f *fake) Partition(_ bool, groups ...[]int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	group := map[int]int{}
	for gi, g := range groups {
		for _, n := range g {
			if err := f.check(n); err != nil {
				return err
			}
			group[n] = gi + 1
		}
	}
	f.blocked = map[[2]int]bool{}
	for a := 0; a < f.size; a++ {
		for b := 0; b < f.size; b++ {
			if a != b && group[a] != group[b] {
				f.blocked[[2]int{a, b}] = true
			}
		}
	}
	return nil
}

func (f *fake) PartitionOneWay(_ bool, from, to []int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.blocked = map[[2]int]bool{}
	for _, a := range from {
		for _, b := range to {
			if err := errors.Join(f.check(a), f.check(b)); err != nil {
				return err
			}
			f.blocked[[2]int{a, b}] = a != b
		}
	}
	return nil
}

func (f *fake) HealPartition() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.blocked = map[[2]int]bool{}
}

func (f *fake) SetLinkDelay(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.linkDelay = d
}

func (f *fake) SetNodeDelay(n int, d time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check(n); err != nil {
		return err
	}
	f.nodeDelay[n] = d
	return nil
}

func (f *fake) Leader(context.Context) (int, int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.leaderCalls++
	return f.leader, 1, nil
}

// describe is the fault state, "" when there is none. Callers hold mu.
func (f *fake) describe() string {
	var parts []string
	add := func(name string, m map[int]bool) {
		var ns []int
		for n, on := range m {
			if on {
				ns = append(ns, n)
			}
		}
		if len(ns) > 0 {
			sort.Ints(ns)
			parts = append(parts, fmt.Sprintf("%s %v", name, ns))
		}
	}
	add("killed", f.killed)
	add("rmi-down", f.rmiDown)
	add("zk-down", f.zkDown)
	add("zk-stall", f.zkStall)
	var cuts []string
	for k, on := range f.blocked {
		if on {
			cuts = append(cuts, fmt.Sprintf("%d->%d", k[0], k[1]))
		}
	}
	if len(cuts) > 0 {
		sort.Strings(cuts)
		parts = append(parts, "cut "+strings.Join(cuts, ","))
	}
	if f.linkDelay > 0 {
		parts = append(parts, fmt.Sprintf("delay all %v", f.linkDelay))
	}
	var delayed []string
	for n, d := range f.nodeDelay {
		if d > 0 {
			delayed = append(delayed, fmt.Sprintf("%d:%v", n, d))
		}
	}
	if len(delayed) > 0 {
		sort.Strings(delayed)
		parts = append(parts, "delay "+strings.Join(delayed, ","))
	}
	return strings.Join(parts, "; ")
}

// Heal records the fault state it found, then removes every fault (as
// cluster.Heal does).
func (f *fake) Heal(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults = append(f.faults, f.describe())
	f.leaders = append(f.leaders, f.leader)
	f.heals++
	f.reset()
	return nil
}

func (f *fake) WaitHealthy(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if d := f.describe(); d != "" {
		return fmt.Errorf("not healthy: %s", d)
	}
	if f.unhealthy {
		return errors.New("not healthy: no leader")
	}
	f.healthy++
	return nil
}

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
			o.Kinds = append(slices.Clone(AllKinds), HandOver, RmiDownFollower, CrashAll, RollingCrash)
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
			for i, st := range s.Steps {
				if err := injected(st, f.faults[i], f.leaders[i]); err != nil {
					t.Fatalf("size %d seed %d step %d (%s): %v", size, seed, i, st, err)
				}
			}
		}
	}
}

// injected says whether the fault state seen at the heal of st is st's.
func injected(st Step, seen string, leader int) error {
	want := ""
	switch st.Kind {
	case Kill, KillLeader:
		want = "killed"
	case CrashAll:
		want = "killed [0 1 2" // every node, of 3 or 5
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
	if len(st.Nodes) > 0 && st.Kind != Delay && st.Kind != Partition && st.Kind != OneWay {
		ns := slices.Sorted(slices.Values(st.Nodes))
		if !strings.Contains(seen, fmt.Sprint(ns)) {
			return fmt.Errorf("fault state %q does not name nodes %v", seen, st.Nodes)
		}
	}
	return nil
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
	if !strings.Contains(err.Error(), string(s.Steps[0].Kind)) {
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

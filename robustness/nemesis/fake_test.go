package nemesis

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/kvstore/kvstore"
)

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
	paused    map[int]bool
	blocked   map[[2]int]bool
	linkDelay time.Duration
	nodeDelay map[int]time.Duration
	resigned  int
	// Disks and membership: wiped nodes (until the heal), recovering
	// nodes (restarted after a wipe, until the heal), retired nodes (for
	// good), removals the leader still refuses.
	wiped      map[int]bool
	recovering map[int]bool
	retired    map[int]bool
	restarts   map[int]int // restarts since the wipe
	forget     bool        // a wiped node restarted twice is not recovering (the bug)
	// selfReconcile: a wiped node's own takeover reconciles it after its
	// first restart (its inbound RPC is off, its outbound calls are not),
	// so its second restart rightly finds reconciled data.
	selfReconcile bool
	killedRec     map[int]bool // recovering when last killed
	setAside      int          // this node + 1 comes back recovering after a power loss (the bug of issue 17)
	powerLost     map[int]bool
	refusals      int
	actives       [][]int // what each Active call returned

	faults      []string // the fault state seen at each Heal
	leaders     []int    // the leader at each Heal
	heals       int
	healthy     int
	unhealthy   bool // WaitHealthy fails (a cluster that does not recover)
	leaderCalls int
}

func newFake(size int) *fake {
	f := &fake{size: size, retired: map[int]bool{}}
	f.reset()
	return f
}

func (f *fake) reset() {
	f.killed, f.rmiDown, f.zkDown, f.zkStall, f.paused = map[int]bool{}, map[int]bool{}, map[int]bool{}, map[int]bool{}, map[int]bool{}
	f.blocked, f.linkDelay, f.nodeDelay = map[[2]int]bool{}, 0, map[int]time.Duration{}
	f.wiped, f.recovering, f.restarts = map[int]bool{}, map[int]bool{}, map[int]int{}
}

func (f *fake) check(n int) error {
	if n < 0 || n >= f.size {
		return fmt.Errorf("no node %d", n)
	}
	if f.retired[n] {
		return fmt.Errorf("node %d is retired", n)
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

func (f *fake) Kill(n int) error {
	f.mu.Lock()
	if f.killedRec == nil {
		f.killedRec = map[int]bool{}
	}
	f.killedRec[n] = f.recovering[n] && !(f.selfReconcile && f.restarts[n] == 1)
	f.mu.Unlock()
	return f.set(f.killed, n, true)
}

func (f *fake) UnreconciledWhenKilled(n int) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.killed[n] {
		return false, fmt.Errorf("node %d runs", n)
	}
	return f.killedRec[n], nil
}
func (f *fake) Stop(n int) error { return f.set(f.killed, n, true) }
func (f *fake) PowerLoss(n int) (int, error) {
	f.mu.Lock()
	if f.powerLost == nil {
		f.powerLost = map[int]bool{}
	}
	f.powerLost[n] = true
	f.mu.Unlock()
	return 1, f.set(f.killed, n, true)
}

func (f *fake) Restart(_ context.Context, n int) error {
	if err := f.set(f.killed, n, false); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.wiped[n] {
		f.restarts[n]++
		reconciled := f.selfReconcile && f.restarts[n] == 2
		f.recovering[n] = (!f.forget || f.restarts[n] == 1) && !reconciled
	}
	return nil
}

func (f *fake) StartedRecovering(n int) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return (f.powerLost[n] && f.setAside == n+1) || f.recovering[n], nil
}

func (f *fake) Active() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []int
	for n := 0; n < f.size; n++ {
		if !f.retired[n] {
			out = append(out, n)
		}
	}
	f.actives = append(f.actives, out)
	return out
}

func (f *fake) WipeData(n int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check(n); err != nil {
		return err
	}
	if !f.killed[n] {
		return fmt.Errorf("node %d runs", n)
	}
	f.wiped[n], f.restarts[n] = true, 0
	return nil
}

func (f *fake) Recovering(n int) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check(n); err != nil {
		return false, err
	}
	if f.killed[n] {
		return false, fmt.Errorf("node %d is killed", n)
	}
	return f.recovering[n], nil
}

func (f *fake) Remove(_ context.Context, n int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check(n); err != nil {
		return err
	}
	if f.refusals > 0 {
		f.refusals--
		return kvstore.ErrUnsafeRemoval
	}
	return nil
}

func (f *fake) Retire(n int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check(n); err != nil {
		return err
	}
	f.retired[n] = true
	delete(f.killed, n)
	delete(f.rmiDown, n)
	for f.retired[f.leader] {
		f.leader = (f.leader + 1) % f.size
	}
	return nil
}

func (f *fake) NewNode(context.Context) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.size++
	return f.size - 1, nil
}

func (f *fake) RmiDown(n int) error { return f.set(f.rmiDown, n, true) }
func (f *fake) RmiUp(n int) error   { return f.set(f.rmiDown, n, false) }
func (f *fake) ZkDown(n int) error  { return f.set(f.zkDown, n, true) }
func (f *fake) ZkStall(n int) error { return f.set(f.zkStall, n, true) }
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
	for f.retired[f.leader] {
		f.leader = (f.leader + 1) % f.size
	}
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

func (f *fake) Bridge(_ bool, a, b []int, bridge int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check(bridge); err != nil {
		return err
	}
	f.blocked = map[[2]int]bool{}
	for _, x := range a {
		for _, y := range b {
			if err := errors.Join(f.check(x), f.check(y)); err != nil {
				return err
			}
			if x == bridge || y == bridge || x == y {
				return fmt.Errorf("bad bridge %v | %d | %v", a, bridge, b)
			}
			f.blocked[[2]int{x, y}], f.blocked[[2]int{y, x}] = true, true
		}
	}
	return nil
}

func (f *fake) Pause(n int) error { return f.set(f.paused, n, true) }

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
	add("paused", f.paused)
	add("wiped", f.wiped)
	add("recovering", f.recovering)
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
	seen := f.describe()
	var retired []int
	for n := range f.retired {
		retired = append(retired, n)
	}
	if len(retired) > 0 {
		sort.Ints(retired)
		seen = strings.TrimPrefix(fmt.Sprintf("%s; retired %v", seen, retired), "; ")
	}
	f.faults = append(f.faults, seen)
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

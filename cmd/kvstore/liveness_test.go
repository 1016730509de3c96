package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kvstore/kvstore/internal/soon"
)

// The writer's pace and bounds, the wait for a first write after a fault,
// and the deadline of each write.
const (
	liveWriteEvery   = 20 * time.Millisecond
	liveMaxInFlight  = 128
	liveMaxWrites    = 20000 // per run: the loop is bounded in count as well as in time
	liveAttempt      = time.Second
	liveOpDeadline   = 8 * time.Second
	liveWaitFirstAck = 30 * time.Second
	liveNodePort     = 7000
)

// TestLivenessAfterLeaderFaults measures how long the cluster stays without
// an acknowledged write after a fault of its leader, with five node
// processes at their default settings, each in its own network namespace
// (netLab), on an etcd on the host. For each fault, KVSTORE_LIVENESS_RUNS
// times (default 1): wait until the cluster is healthy, start a writer
// (every endpoint, short attempts, a new write every 20 ms whatever the
// ones in flight do), inject the fault into the current leader, and take
// the time from the fault to the first acknowledged write begun after it.
// The fault holds for the target plus a session TTL (or until that write,
// if later), for the longest time with no write acknowledged at all: a
// leader that keeps serving for a while after its fault (cut from the
// coordinator) answers the first write at once, and the outage comes
// later. Then the writer stops, the writes in flight end (under the fault
// still), an iptables fault is checked to cut what it should and nothing
// else, and the fault is healed.
//
// Faults: kill-leader (SIGKILL, restarted after), pause-leader (SIGSTOP,
// SIGCONT after), leader-cut-from-peers (iptables in its namespace drops
// traffic to and from every other node, the coordinator untouched),
// leader-cut-from-coordinator (drops only traffic to and from etcd's
// port), bridge ({a,b} | {d,e} cannot see each other, c sees both; the
// leader on a side in even runs, the bridge in odd runs, at least one of
// each).
//
// It fails a run whose first write or longest gap is not under the session
// TTL plus one lease plus 1 s (the defaults' values, as the nodes run with
// them), or under the TTL plus 1 s where the leader is seen dead (killed,
// paused, cut from the coordinator: its session, and its membership,
// expire, so no lease is waited out), and any write in flight longer than
// its deadline plus 1 s. It
// prints a table: runs, min / median / max of both per fault.
//
//	KVSTORE_LIVENESS_RUNS=10 go test -run TestLivenessAfterLeaderFaults ./cmd/kvstore/ -v
func TestLivenessAfterLeaderFaults(t *testing.T) {
	runs := livenessRuns(t)
	lab := newNetLab(t, 5) // skips without root or ip netns
	bin := buildBinary(t)
	etcd := lab.startEtcd()
	c := &liveCluster{t: t, lab: lab, bin: bin, env: []string{"KVSTORE_ETCD=" + etcd.Endpoint(), "KVSTORE_CLUSTER=liveness"}}
	c.nodes = startNodesWith(t, bin, lab.n, c.start)
	waitMembers(t, bin, c.nodes, time.Minute)
	ttl, lease := nodeFlagDefault(t, "session-ttl"), nodeFlagDefault(t, "lease")
	target := ttl + lease + time.Second
	t.Logf("5 nodes in network namespaces %s*, etcd at %s; session TTL %v, lease %v: target %v; %d run(s) a fault",
		lab.prefix, etcd.Endpoint(), ttl, lease, target, runs)

	// The fault holds this long after its injection (or until the first
	// write after it, if that comes later), for the longest gap.
	observe := target + ttl
	header := fmt.Sprintf("%-28s %4s  %-26s  %s", "fault", "runs", "first write (min/med/max)", "longest gap (min/med/max)")
	var table []string
	for _, f := range c.faults() {
		n := runs
		if f.name == "bridge" {
			n = max(runs, 2) // the leader on a side and the bridge
		}
		// Where the leader is seen dead (its session expires: killed,
		// paused, cut from the coordinator) no node waits out a lease:
		// the bound is the TTL plus 1 s (issue 14: under 3 s).
		target, why := target, fmt.Sprintf("session TTL %v + lease %v + 1 s", ttl, lease)
		if f.seenDead {
			target, why = ttl+time.Second, fmt.Sprintf("session TTL %v + 1 s: the leader is seen dead", ttl)
		}
		t.Run(f.name, func(t *testing.T) {
			var took, gaps []time.Duration
			for run := range n {
				r := c.measure(t, f, run, target, observe)
				if r.missed {
					t.Errorf("%s run %d (%s): no write acknowledged within %v of the fault", f.name, run+1, r.note, liveWaitFirstAck)
					r.took = liveWaitFirstAck
				} else if r.took >= target {
					t.Errorf("%s run %d (%s): first write acknowledged %v after the fault, not under the target %v (%s)",
						f.name, run+1, r.note, r.took.Round(time.Millisecond), target, why)
				}
				if r.gap >= target {
					t.Errorf("%s run %d (%s): %v with no write acknowledged, not under the target %v (%s)", f.name, run+1, r.note, r.gap.Round(time.Millisecond), target, why)
				}
				took, gaps = append(took, r.took), append(gaps, r.gap)
			}
			line := fmt.Sprintf("%-28s %4d  %-26s  %s", f.name, len(took), minMedMax(took), minMedMax(gaps))
			table = append(table, line)
			t.Logf("%s\n%s", header, line)
		})
	}
	t.Logf("5 node processes, default settings, target %v:\n%s\n%s", target, header, strings.Join(table, "\n"))
}

// livenessRuns is KVSTORE_LIVENESS_RUNS, or 1.
func livenessRuns(t *testing.T) int {
	t.Helper()
	v, ok := os.LookupEnv("KVSTORE_LIVENESS_RUNS")
	if !ok {
		return 1
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("KVSTORE_LIVENESS_RUNS=%q: want a positive whole number", v)
	}
	return n
}

// nodeFlagDefault is the default of a duration flag of `kvstore node`.
func nodeFlagDefault(t *testing.T, name string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(newNodeCmd().Flags().Lookup(name).DefValue)
	if err != nil {
		t.Fatalf("--%s: %v", name, err)
	}
	return d
}

// minMedMax shows min / median / max of ds.
func minMedMax(ds []time.Duration) string {
	s := slices.Clone(ds)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	r := func(d time.Duration) time.Duration { return d.Round(10 * time.Millisecond) }
	return fmt.Sprintf("%v / %v / %v", r(s[0]), r(med), r(s[len(s)-1]))
}

// liveCluster is the test's cluster: node i runs in the lab's namespace i.
type liveCluster struct {
	t     *testing.T // the whole test's: the nodes live as long as it
	lab   *netLab
	bin   string
	env   []string
	nodes []*nodeProc
}

// start starts node i (a, b, c...) in its namespace.
func (c *liveCluster) start(i int) *nodeProc {
	addr := fmt.Sprint(c.lab.ip(i), ":", liveNodePort)
	return launchNode(c.t, string(rune('a'+i)), addr, c.lab.command(i, c.bin, "node", "--listen", addr), c.env...)
}

// liveFault is a fault of the leader (node index leader). inject returns
// what the fault was (for the output) and how to undo it.
type liveFault struct {
	name   string
	inject func(ctx context.Context, leader, run int) (note string, heal func(context.Context) error, err error)
	// seenDead: the leader's session expires, and with it its
	// membership, so its successor waits out no lease.
	seenDead bool
}

func (c *liveCluster) faults() []liveFault {
	lab := c.lab
	signal := func(leader int, sig syscall.Signal) error {
		if err := c.nodes[leader].cmd.Process.Signal(sig); err != nil {
			return fmt.Errorf("%v to %s: %w", sig, c.nodes[leader].id, err)
		}
		return nil
	}
	heal := func(ctx context.Context) error { return lab.heal(ctx) }
	return []liveFault{
		{"kill-leader", func(ctx context.Context, leader, _ int) (string, func(context.Context) error, error) {
			p := c.nodes[leader]
			return "leader " + p.id, func(ctx context.Context) error {
				select {
				case <-p.exited:
				case <-ctx.Done():
					return fmt.Errorf("%s did not exit after SIGKILL: %w", p.id, ctx.Err())
				}
				c.nodes[leader] = c.start(leader) // without data: it rejoins and is reconciled
				return nil
			}, signal(leader, syscall.SIGKILL)
		}, true},
		{"pause-leader", func(ctx context.Context, leader, _ int) (string, func(context.Context) error, error) {
			return "leader " + c.nodes[leader].id, func(context.Context) error { return signal(leader, syscall.SIGCONT) }, signal(leader, syscall.SIGSTOP)
		}, true},
		{"leader-cut-from-peers", func(ctx context.Context, leader, _ int) (string, func(context.Context) error, error) {
			var peers []string
			for j := range lab.n {
				if j != leader {
					peers = append(peers, lab.ip(j))
				}
			}
			return "leader " + c.nodes[leader].id, heal, lab.drop(ctx, leader, 0, peers...)
		}, false},
		{"leader-cut-from-coordinator", func(ctx context.Context, leader, _ int) (string, func(context.Context) error, error) {
			return "leader " + c.nodes[leader].id, heal, lab.drop(ctx, leader, labEtcdPort, lab.hostIP)
		}, true},
		{"bridge", func(ctx context.Context, leader, run int) (string, func(context.Context) error, error) {
			var others []int
			for j := range lab.n {
				if j != leader {
					others = append(others, j)
				}
			}
			// Even runs: the leader on a side; odd runs: the leader bridges.
			left, right, bridge := []int{leader, others[0]}, []int{others[1], others[2]}, others[3]
			role := "leader on a side"
			if run%2 == 1 {
				left, right, bridge = others[:2], others[2:], leader
				role = "leader bridges"
			}
			// One side drops the other: both ways.
			var errs []error
			for _, a := range left {
				errs = append(errs, lab.drop(ctx, a, 0, lab.ip(right[0]), lab.ip(right[1])))
			}
			ids := func(is []int) string {
				var s []string
				for _, i := range is {
					s = append(s, c.nodes[i].id)
				}
				return strings.Join(s, ",")
			}
			note := fmt.Sprintf("%s: {%s} | {%s}, %s bridges, leader %s", role, ids(left), ids(right), c.nodes[bridge].id, c.nodes[leader].id)
			return note, heal, errors.Join(errs...)
		}, false},
	}
}

// liveResult is one run of a fault.
type liveResult struct {
	note   string
	took   time.Duration // from the fault to the first write acknowledged after it
	missed bool          // no write acknowledged within liveWaitFirstAck
	// gap is the longest time with no write acknowledged, from the fault
	// to the end of the observation: a leader that still serves for a
	// while after the fault (cut from the coordinator, say) acknowledges
	// writes begun after it at once, and the cluster's outage comes later.
	gap time.Duration
}

// measure runs fault f once on a healthy cluster.
func (c *liveCluster) measure(t *testing.T, f liveFault, run int, target, observe time.Duration) liveResult {
	t.Helper()
	waitMembers(t, c.bin, c.nodes, time.Minute)
	leader := slices.Index(c.nodes, leaderOf(t, c.bin, c.nodes))
	w := startWriter(t, strings.Split(addrs(c.nodes), ","))
	soon.Succeeds(t, 30*time.Second, func() error {
		if _, ok := w.firstAck(time.Time{}); !ok {
			return errors.New("no write acknowledged yet on the healthy cluster")
		}
		return nil
	})

	ctx := ctxT(t, time.Minute)
	faulted := time.Now()
	note, heal, err := f.inject(ctx, leader, run)
	injected := time.Now()
	defer func() {
		if err := heal(ctxT(t, time.Minute)); err != nil {
			t.Errorf("healing %s: %v", f.name, err)
		}
	}()
	if err != nil {
		w.stop(t)
		t.Fatalf("injecting %s (%s): %v", f.name, note, err)
	}
	r := liveResult{note: note}
	observeUntil := injected.Add(observe)
	var acked time.Time
	if err := soon.Within(liveWaitFirstAck, func() error {
		var ok bool
		if acked, ok = w.firstAck(injected); !ok {
			return errors.New("no write begun after the fault acknowledged yet")
		}
		return nil
	}); err != nil {
		r.missed = true
	} else {
		r.took = acked.Sub(faulted)
	}
	if wait := time.Until(observeUntil); wait > 0 {
		time.Sleep(wait) // the fault holds for the whole observation, writes go on
	}
	observed := time.Now()
	if len(c.lab.drops) > 0 {
		// The fault is what it says: the partition in place, every node up.
		if err := c.lab.checkDrops(ctx, liveNodePort, labEtcdPort); err != nil {
			t.Errorf("%s (%s): the partition is not as meant: %v", f.name, note, err)
		}
	}
	w.stop(t) // before healing: the writes in flight see the fault to their end
	gap, gapBegan := w.longestGap(faulted, observed)
	r.gap = gap
	writes, longest, errs := w.report(t)
	took := "none within " + liveWaitFirstAck.String()
	if !r.missed {
		took = r.took.Round(time.Millisecond).String()
	}
	t.Logf("%s run %d (%s; injected in %v): first write acknowledged after %s, longest gap %v from +%v, in %v observed (target %v); %d writes, %d failed %v; longest in flight %v (deadline %v)",
		f.name, run+1, note, injected.Sub(faulted).Round(time.Millisecond), took,
		r.gap.Round(time.Millisecond), gapBegan.Sub(faulted).Round(time.Millisecond), observed.Sub(faulted).Round(time.Millisecond), target,
		writes, errs.total, errs.byKind, longest.Round(time.Millisecond), liveOpDeadline)
	return r
}

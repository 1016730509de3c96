package robustness

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvstore/kvstore/cluster"
	"github.com/kvstore/kvstore/internal/soon"
	"github.com/kvstore/kvstore/linearizability"
	"github.com/kvstore/kvstore/nemesis"
	"github.com/kvstore/kvstore/node"
)

// Environment knobs:
//
//	KVSTORE_SEED=N        replay from base seed N (printed by every run)
//	KVSTORE_SCHEDULES=N   schedules in the normal run (default 10)
//	KVSTORE_SOAK=10m      keep running schedules for this long instead
//	KVSTORE_SUMMARY=FILE  also append the summary line to FILE (CI shows it)
//	KVSTORE_TEST_LOG=info show the nodes' logs
const defaultSchedules = 10

// run is one schedule's setup and outcome.
type run struct {
	backend  cluster.Backend
	seed     uint64
	nodes    int
	faults   node.Faults
	kinds    []nemesis.Kind
	steps    int
	minHold  time.Duration
	maxHold  time.Duration
	workload time.Duration // quiet time after the schedule, still under load

	// results
	schedule  nemesis.Schedule
	ops       int
	injected  int
	violation string // empty when the history passed
}

func nodeConfig(f node.Faults) func(*node.Config) {
	return func(c *node.Config) {
		c.SessionTTL = time.Second
		c.LeaseDuration = time.Second
		c.QuorumTimeout = 2 * time.Second
		c.OpTimeout = 4 * time.Second
		c.RPCTimeout = 500 * time.Millisecond
		c.Heartbeat = 100 * time.Millisecond
		c.Faults = f
	}
}

func logger() *slog.Logger {
	lvl := os.Getenv("KVSTORE_TEST_LOG")
	if lvl == "" {
		return nil
	}
	var l slog.Level
	_ = l.UnmarshalText([]byte(lvl))
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}

// play runs one schedule with clients and checks the history. It fails the
// test only for infrastructure errors; a violation is reported in r.
func play(t *testing.T, r *run) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	opts := cluster.Options{Nodes: r.nodes, Backend: r.backend, Node: nodeConfig(r.faults), Logger: logger()}
	if r.backend == cluster.ZooKeeper {
		// The package's ZooKeeper server; each run in its own namespace.
		opts.ZooKeeper = testZK.Servers(t)
		opts.Prefix = fmt.Sprintf("/kvstore-robustness/%d-%d", r.seed, time.Now().UnixNano())
	}
	c, err := cluster.New(ctx, opts)
	if err != nil {
		t.Fatalf("seed %d: start cluster: %v", r.seed, err)
	}
	defer c.Close()
	if err := c.WaitHealthy(ctx); err != nil {
		t.Fatalf("seed %d: %v", r.seed, err)
	}
	r.schedule = nemesis.Generate(r.seed, nemesis.Options{
		Size: r.nodes, Steps: r.steps, Kinds: r.kinds,
		MinHold: r.minHold, MaxHold: r.maxHold, MaxGap: 500 * time.Millisecond,
	})
	var logMu sync.Mutex
	var events []string
	start := time.Now()
	logf := func(format string, args ...any) {
		logMu.Lock()
		defer logMu.Unlock()
		events = append(events, fmt.Sprintf("%8v ", time.Since(start).Round(time.Millisecond))+fmt.Sprintf(format, args...))
	}

	const keys = 4
	rec := linearizability.NewRecorder(nil)
	wctx, stopLoad := context.WithCancel(ctx)
	// 8 clients read, write and delete; one read-only client per node
	// keeps reading even while a write of its node is stuck.
	w := Workload{Clients: 8 + r.nodes, Readers: r.nodes, Keys: keys, OpTimeout: 3 * time.Second, ReadTimeout: 300 * time.Millisecond, Pause: 10 * time.Millisecond, Seed: r.seed}
	loadDone := make(chan Stats, 1)
	go func() { loadDone <- w.Run(wctx, c, rec) }()

	injected, perr := nemesis.Play(ctx, c, r.schedule, 45*time.Second, logf)
	r.injected = injected
	if perr == nil {
		select { // a healthy stretch under load, so healed nodes serve again
		case <-time.After(r.workload):
		case <-ctx.Done():
		}
	}
	stopLoad()
	st := <-loadDone
	logf("workload: %d ops, %d failed, %d unknown", st.Ops, st.Failed, st.Unknown)
	if perr != nil {
		// The cluster did not heal: a liveness failure (or a lost quorum
		// caused by a broken protocol). Still check what clients saw.
		logf("%v", perr)
	}

	h := rec.History()
	r.ops = len(h)
	dir, _ := os.MkdirTemp("", fmt.Sprintf("kvstore-lin-%d-", r.seed))
	var problems []string
	res := linearizability.Check(ctx, h, time.Minute, linearizability.VisualizationDir(dir))
	switch {
	case res.Ok:
	case res.Illegal:
		problems = append(problems, fmt.Sprintf("not linearizable (keys %v); visualisation: %s", res.IllegalKeys, res.Visualization))
	default:
		problems = append(problems, fmt.Sprintf("check did not finish (not a pass): %v", res))
	}
	if perr == nil {
		// Durability: after healing, every node's view of every key must
		// be explained by the history.
		for n := 0; n < c.Size(); n++ {
			final := make(map[string]linearizability.FinalValue)
			for k := 0; k < keys; k++ {
				key := fmt.Sprint("k", k)
				var fv linearizability.FinalValue
				err := soon.Within(20*time.Second, func() error {
					gctx, gcancel := context.WithTimeout(ctx, 3*time.Second)
					defer gcancel()
					v, found, err := c.Get(gctx, n, key)
					fv = linearizability.FinalValue{Value: v, Found: found}
					return err
				})
				if err != nil {
					problems = append(problems, fmt.Sprintf("final read of %s on node %d: %v", key, n, err))
					continue
				}
				final[key] = fv
			}
			if err := linearizability.Durability(h, final); err != nil {
				problems = append(problems, fmt.Sprintf("durability on node %d: %v", n, err))
			}
		}
	} else {
		problems = append(problems, "cluster did not heal: "+perr.Error())
	}
	if len(problems) == 0 {
		_ = os.RemoveAll(dir)
		return
	}
	hpath := filepath.Join(dir, "history.json")
	_ = linearizability.SaveHistory(hpath, h)
	r.violation = fmt.Sprintf("backend %s, seed %d (replay: KVSTORE_SEED=%d KVSTORE_SCHEDULES=1 go test -run '/%s$' ./robustness)\nschedule: %s\nhistory: %s\n%s\nevents:\n  %s",
		r.backend, r.seed, r.seed, r.backend, r.schedule, hpath, strings.Join(problems, "\n"), strings.Join(events, "\n  "))
}

func baseSeed(t *testing.T) uint64 {
	if s := os.Getenv("KVSTORE_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("KVSTORE_SEED: %v", err)
		}
		return v
	}
	return uint64(time.Now().UnixNano() % 1_000_000_007)
}

func summary(t *testing.T, line string) {
	t.Log(line)
	fmt.Println(line)
	if path := os.Getenv("KVSTORE_SUMMARY"); path != "" {
		if f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
			fmt.Fprintln(f, line)
			_ = f.Close()
		}
	}
}

// TestLinearizableUnderFaults is the randomized suite: every schedule's
// history must be linearizable and durable, on every backend.
func TestLinearizableUnderFaults(t *testing.T) {
	eachBackend(t, testLinearizableUnderFaults)
}

func testLinearizableUnderFaults(t *testing.T, b cluster.Backend) {
	base := baseSeed(t)
	t.Logf("base seed %d", base)
	schedules := defaultSchedules
	if s := os.Getenv("KVSTORE_SCHEDULES"); s != "" {
		schedules, _ = strconv.Atoi(s)
	}
	var soakUntil time.Time
	if s := os.Getenv("KVSTORE_SOAK"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("KVSTORE_SOAK: %v", err)
		}
		soakUntil = time.Now().Add(d)
	}
	var histories, ops, faults, violations int
	for i := 0; i < schedules || time.Now().Before(soakUntil); i++ {
		r := &run{backend: b, seed: base + uint64(i), nodes: 3, steps: 2, minHold: 500 * time.Millisecond, maxHold: 3 * time.Second, workload: time.Second}
		if i%5 == 4 {
			r.nodes = 5
		}
		play(t, r)
		histories++
		ops += r.ops
		faults += r.injected
		if r.violation != "" {
			violations++
			t.Errorf("violation:\n%s", r.violation)
		}
	}
	summary(t, fmt.Sprintf("linearizability: %d histories, %d ops, %d faults, %d violations (%s)", histories, ops, faults, violations, b))
	if histories >= 10 && ops < 5000 {
		t.Errorf("only %d operations in %d histories: the workload is too thin to prove much", ops, histories)
	}
}

// TestCheckerCatchesBrokenProtocol switches deliberate protocol bugs on, one
// at a time, and requires the suite to report a violation for each: a green
// run of TestLinearizableUnderFaults means something only if this passes.
func TestCheckerCatchesBrokenProtocol(t *testing.T) {
	eachBackend(t, testCheckerCatchesBrokenProtocol)
}

func testCheckerCatchesBrokenProtocol(t *testing.T, b cluster.Backend) {
	base := baseSeed(t)
	// Each case catches its bug in most schedules (measured: 70% to 100%);
	// a miss in 5 in a row means the suite lost its teeth.
	const attempts = 5
	cases := []struct {
		name   string
		faults node.Faults
		kinds  []nemesis.Kind
		hold   time.Duration
		steps  int
	}{
		// Writes acknowledged without waiting for holders of cached
		// copies: a holder that cannot be reached serves the old value
		// until its lease ends. (Without faults the replication stream
		// still invalidates within milliseconds, too fast to observe.)
		{"skip-invalidation", node.Faults{SkipInvalidation: true}, []nemesis.Kind{nemesis.RmiDown}, 1500 * time.Millisecond, 3},
		// Cached copies served past their lease: a holder that cannot be
		// reached keeps serving the old value after the write.
		{"ignore-lease", node.Faults{IgnoreLease: true}, []nemesis.Kind{nemesis.RmiDown}, 3 * time.Second, 1},
		// A majority of reachable nodes instead of voters: a cut-off leader
		// commits alone, and its writes vanish when the others elect.
		{"live-majority", node.Faults{LiveMajority: true}, []nemesis.Kind{nemesis.PartitionLeader}, 7 * time.Second, 1},
		// A new leader serving before the leases of the old epoch end: the
		// old leader hands over at once while an isolated follower still
		// serves its cached copies (it cannot learn of the new epoch).
		{"skip-takeover-wait", node.Faults{SkipTakeoverWait: true}, []nemesis.Kind{nemesis.HandOver}, 2 * time.Second, 3},
	}
	for ci, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for attempt := 0; attempt < attempts; attempt++ {
				nodes := 3
				if tc.kinds[0] == nemesis.HandOver {
					nodes = 5
				}
				r := &run{backend: b, seed: base + uint64(100*ci+attempt), nodes: nodes, faults: tc.faults, kinds: tc.kinds,
					steps: tc.steps, minHold: tc.hold, maxHold: tc.hold + time.Millisecond, workload: time.Second}
				play(t, r)
				if r.violation != "" {
					summary(t, fmt.Sprintf("linearizability: fault %s caught with seed %d after %d ops (%s)", tc.name, r.seed, r.ops, b))
					t.Logf("%s", r.violation)
					return
				}
				t.Logf("seed %d: %d ops, no violation found yet", r.seed, r.ops)
			}
			t.Fatalf("the checker did not catch %s in %d schedules: the suite has no teeth for it", tc.name, attempts)
		})
	}
}

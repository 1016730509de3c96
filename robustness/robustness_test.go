package robustness

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvstore/kvstore/cluster"
	"github.com/kvstore/kvstore/internal/soon"
	"github.com/kvstore/kvstore/node"
	"github.com/kvstore/kvstore/robustness/linearizability"
	"github.com/kvstore/kvstore/robustness/nemesis"
	"github.com/kvstore/kvstore/robustness/workload"
	"github.com/kvstore/kvstore/store"
)

// Environment knobs:
//
//	KVSTORE_SEED=N        the first schedule's seed (default: random; printed
//	                      by every run). The seed alone decides a schedule's
//	                      node count, faults and workload, so a failure
//	                      replays with KVSTORE_SEED=N KVSTORE_SCHEDULES=1 and
//	                      the test and backend it printed.
//	KVSTORE_SCHEDULES=N   schedules per backend in the normal run (default 10)
//	KVSTORE_SOAK=10m      keep running schedules for this long instead
//	KVSTORE_SUMMARY=FILE  also append the summary lines to FILE (CI shows it)
//	KVSTORE_TEST_LOG=info show the nodes' logs
//	KVSTORE_KINDS=a,b     TestLinearizableUnderFaults plays only these
//	                      faults (by name; default nemesis.AllFaults)
//	KVSTORE_WRITE_GAP_CHECK=0  report, but do not fail on, a write gap over
//	                      the target (checkWriteGap)
const defaultSchedules = 10

// checkWriteGap makes a schedule fail when its longest window without an
// acknowledged write while a majority of voters was healthy
// (HealthyWriteGap) is longer than the target (writeGapTarget): docs/guarantees.md's
// promise that a new leader serves within about one session TTL plus one
// lease. KVSTORE_WRITE_GAP_CHECK=0 turns it off; the windows are measured
// and reported either way.
var checkWriteGap = os.Getenv("KVSTORE_WRITE_GAP_CHECK") != "0"

// writeGapTarget is the longest a cluster with settings cfg may go without
// acknowledging a write while a majority of voters is healthy: one session
// TTL (a lost leader's session expires) plus one lease (the new leader
// waits out the old leases) plus 1 s (the election and the first write).
// About 5 s with node.DefaultConfig, 3 s with the suite's settings.
func writeGapTarget(cfg node.Config) time.Duration {
	return cfg.SessionTTL + cfg.LeaseDuration + time.Second
}

// writeGapSlack is how far past the target a window may go before it fails
// the schedule: the suite's 1 s sessions, under -race on a CI machine busy
// with other packages, lapse from CPU starvation alone (seen: every node of
// both clusters at once, 4.9 s and 5.1 s windows against 3 s). A window
// past the target but within the slack is logged. The exact target, with
// the default settings, is held by cmd/kvstore's
// TestLivenessAfterLeaderFaults on node processes.
const writeGapSlack = 2

// keys is the size of the workload's key space: small, so that operations
// overlap.
const keys = 4

// nodesFor is the node count of a schedule: 3, and 5 for every fifth seed.
// It depends on the seed alone, so that replaying a seed replays the same
// cluster.
func nodesFor(seed uint64) int {
	if seed%5 == 4 {
		return 5
	}
	return 3
}

// run is one schedule's setup and outcome.
type run struct {
	backend  cluster.Backend
	seed     uint64
	nodes    int
	durable  bool // nodes keep their state in data directories
	faults   node.Faults
	lease    time.Duration // session TTL and read lease (default 1 s)
	kinds    []nemesis.Fault
	steps    int
	minHold  time.Duration
	maxHold  time.Duration
	workload time.Duration // quiet time after the schedule, still under load
	// writePause, if set, is the mean think time of the clients that
	// write (the read-only ones keep the default): keys then go unwritten
	// for longer than half a lease, long enough for copies to be renewed.
	writePause time.Duration
	// holdLeader holds the faults of nemesis.LeaderFaults half a second past
	// the write-gap target (nemesis.Options.LeaderHold), so that the
	// cluster must serve again before the heal for the target to be met.
	holdLeader bool
	replay     string // the command that replays this run
	dir        string // where the history and visualisations go; "" for a new temporary directory kept on failure

	// results
	schedule nemesis.Schedule
	ops      int
	injected int
	// powerLosses counts the nodes that lost power (nemesis.CrashAll);
	// tornGroups those whose log got a torn final group, which held
	// tornSubs submissions in all.
	powerLosses, tornGroups, tornSubs int
	// writeGap is the longest stretch of the history with no acknowledged
	// write (LongestWithoutWrite).
	writeGap time.Duration
	// healthyGap is the longest such stretch while a majority of voters
	// was healthy (HealthyWriteGap), gapTarget what it may be
	// (writeGapTarget); spans and stepGaps are each step's times and the
	// longest window that overlapped it.
	healthyGap Window
	gapTarget  time.Duration
	spans      []nemesis.Span
	stepGaps   []time.Duration
	// slow says how healthyGap broke the target (with checkWriteGap).
	slow string
	// illegal says why Porcupine proved the history (or the history
	// followed by the final state) not linearizable; empty if it did not.
	illegal string
	// durability lists final states (read through each node, or from each
	// node's own store) that the history does not explain.
	durability []string
	// diverged lists keys whose replicas differ once every node applied
	// the same position.
	diverged []string
	// notRecovering lists nodes the nemesis found not recovering after
	// they lost their disk, before any leader could reconcile them
	// (nemesis.ErrNotRecovering), or recovering after a power loss that
	// should have left their data (nemesis.ErrLostData).
	notRecovering []string
	// other lists failures that prove nothing about safety: the cluster
	// did not heal, a final read failed, the checker did not finish.
	other  []string
	report string // everything above with the schedule and events, for a failure message
}

// violated reports whether anything went wrong.
func (r *run) violated() bool {
	return r.illegal != "" || len(r.durability) > 0 || len(r.diverged) > 0 || len(r.notRecovering) > 0 || len(r.other) > 0 || r.slow != ""
}

// caughtBy names the safety check that failed, or "" if none did: a
// linearizability violation found by Porcupine, or a final state the
// history does not explain (a lost acknowledged write, a value nobody
// wrote). Unavailability alone (a cluster that did not heal) is not one.
func (r *run) caughtBy() string {
	switch {
	case r.illegal != "":
		return "linearizability (" + r.illegal + ")"
	case len(r.durability) > 0:
		return "durability (" + firstLine(r.durability[0]) + ")"
	}
	return ""
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " ..."
	}
	return s
}

func nodeConfig(r *run) func(*node.Config) {
	return func(c *node.Config) {
		c.SessionTTL = time.Second
		c.LeaseDuration = time.Second
		c.QuorumTimeout = 2 * time.Second
		c.OpTimeout = 4 * time.Second
		c.RPCTimeout = 500 * time.Millisecond
		c.Heartbeat = 100 * time.Millisecond
		c.Faults = r.faults
		if r.lease > 0 {
			c.SessionTTL, c.LeaseDuration = r.lease, r.lease
		}
	}
}

// play runs one schedule with clients and checks the history. It fails the
// test only for infrastructure errors; what went wrong is reported in r.
func play(t *testing.T, r *run) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	opts := cluster.Options{Nodes: r.nodes, Backend: r.backend, Node: nodeConfig(r)}
	ring := cluster.TestLogger(&opts)
	if r.durable {
		opts.DataDir = t.TempDir()
	}
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
	cfg := node.DefaultConfig()
	nodeConfig(r)(&cfg)
	r.gapTarget = writeGapTarget(cfg)
	o := nemesis.Options{
		Size: r.nodes, Steps: r.steps, Faults: r.kinds,
		MinHold: r.minHold, MaxHold: r.maxHold, MaxGap: 500 * time.Millisecond,
	}
	if r.holdLeader {
		o.LeaderHold = r.gapTarget + 500*time.Millisecond
	}
	r.schedule = nemesis.Generate(r.seed, o)
	var logMu sync.Mutex
	var events []string
	rec := linearizability.NewRecorder(nil)
	start := rec.Start() // the events and the history share a clock
	logf := func(format string, args ...any) {
		logMu.Lock()
		defer logMu.Unlock()
		events = append(events, fmt.Sprintf("%8v ", time.Since(start).Round(time.Millisecond))+fmt.Sprintf(format, args...))
	}

	wctx, stopLoad := context.WithCancel(ctx)
	// 8 clients read, write and delete; one read-only client per node
	// keeps reading even while a write of its node is stuck, so every
	// follower holds cached copies of the keys.
	w := workload.Workload{Clients: 8 + r.nodes, Readers: r.nodes, Keys: keys, OpTimeout: 3 * time.Second, ReadTimeout: 300 * time.Millisecond, Pause: 10 * time.Millisecond, Seed: r.seed}
	if r.writePause > 0 {
		w.Pause, w.ReaderPause = r.writePause, w.Pause
	}
	loadDone := make(chan workload.Stats, 1)
	go func() { loadDone <- w.Run(wctx, c, rec) }()

	target := &powerLossCounter{Cluster: c}
	injected, perr := nemesis.PlayObserved(ctx, target, r.schedule, 45*time.Second, logf, func(sp nemesis.Span) { r.spans = append(r.spans, sp) })
	r.powerLosses, r.tornGroups, r.tornSubs = int(target.losses.Load()), int(target.groups.Load()), int(target.subs.Load())
	r.injected = injected
	if errors.Is(perr, nemesis.ErrNotRecovering) || errors.Is(perr, nemesis.ErrLostData) {
		r.notRecovering = append(r.notRecovering, perr.Error())
	}
	healed := !errors.Is(perr, nemesis.ErrNotHealed)
	if healed {
		select { // a healthy stretch under load, so healed nodes serve again
		case <-time.After(r.workload):
		case <-ctx.Done():
		}
	}
	stopLoad()
	st := <-loadDone
	logf("workload: %d ops, %d failed, %d unknown", st.Ops, st.Failed, st.Unknown)
	if !healed {
		// The cluster did not heal: a liveness failure (or a lost quorum
		// caused by a broken protocol). Still check what clients saw.
		logf("%v", perr)
	}

	h := rec.History()
	r.ops = len(h)
	r.writeGap, _ = LongestWithoutWrite(h)
	logf("longest stretch without an acknowledged write: %v", r.writeGap.Round(time.Millisecond))
	windows := WritelessWindows(h, unhealthy(r.spans, start))
	r.healthyGap = longest(windows)
	r.stepGaps = stepGaps(windows, r.spans, start)
	for i, sp := range r.spans {
		logf("longest window without an acknowledged write around %s on %v: %v", sp.Step.Fault.Name(), sp.Nodes, r.stepGaps[i].Round(time.Millisecond))
	}
	logf("longest window without an acknowledged write while a majority was healthy: %v (target %v)", r.healthyGap, r.gapTarget)
	if r.healthyGap.Len() > r.gapTarget {
		logf("over the target %v (failing only past %d x)", r.gapTarget, writeGapSlack)
	}
	if checkWriteGap {
		r.slow = gapBreach(r.healthyGap, writeGapSlack*r.gapTarget, r.spans, start)
	}
	dir, keep := r.dir, false
	if dir == "" {
		dir, _ = os.MkdirTemp("", fmt.Sprintf("kvstore-lin-%d-", r.seed))
		keep = true
	}
	var details []string
	res := linearizability.Check(ctx, h, time.Minute, linearizability.VisualizationDir(dir))
	logf("history: %v", res)
	details = append(details, r.checked(res, "history", "visualisation: "+res.Visualization)...)
	if healed {
		details = append(details, checkFinalState(ctx, c, h, r, dir, res.Ok, logf)...)
	} else {
		r.other = append(r.other, "cluster did not heal: "+perr.Error())
	}
	if !r.violated() {
		if keep {
			_ = os.RemoveAll(dir)
		}
		if testing.Verbose() {
			t.Logf("%s, seed %d, %d nodes: %s\n  %s", r.backend, r.seed, r.nodes, r.schedule, strings.Join(events, "\n  "))
		}
		return
	}
	hpath := filepath.Join(dir, "history.json")
	_ = linearizability.SaveHistory(hpath, h)
	var problems []string
	if r.illegal != "" {
		problems = append(problems, "NOT LINEARIZABLE: "+r.illegal)
	}
	for _, p := range r.durability {
		problems = append(problems, "DURABILITY: "+p)
	}
	for _, p := range r.diverged {
		problems = append(problems, "REPLICAS DIVERGED: "+p)
	}
	for _, p := range r.notRecovering {
		problems = append(problems, "NOT RECOVERING: "+p)
	}
	for _, p := range r.other {
		problems = append(problems, "NOT HEALTHY: "+p)
	}
	if r.slow != "" {
		problems = append(problems, "TOO SLOW: "+r.slow)
	}
	problems = append(problems, details...)
	logs := ""
	if ring != nil {
		logs = "\n" + ring.String()
	}
	r.report = fmt.Sprintf("backend %s, seed %d, %d nodes\nreplay: %s\nschedule: %s\nhistory: %s\n%s\nevents:\n  %s\n%s%s",
		r.backend, r.seed, r.nodes, r.replay, r.schedule, hpath, strings.Join(problems, "\n"), strings.Join(events, "\n  "), c.Describe(), logs)
}

// checked records in r what a Porcupine check of what found: an illegal
// history (returning details for the report), or a check that did not
// finish, which is no pass.
func (r *run) checked(res linearizability.Result, what string, details ...string) []string {
	switch {
	case res.Ok:
		return nil
	case res.Illegal:
		r.illegal = fmt.Sprintf("%s not linearizable, keys %v", what, res.IllegalKeys)
		return details
	}
	r.other = append(r.other, fmt.Sprintf("check of the %s did not finish (not a pass): %v", what, res))
	return nil
}

// finalClient is the first client id of the final reads appended to a
// history (the workload's clients count from 0).
const finalClient = 1000

// checkFinalState reads, once the cluster is healthy again and the
// workload has stopped, every key through every node (every active one:
// not the nodes retired by a replacement) and every node's own replicated
// store, and records in r what the history does not explain. It
// returns details for the report.
//
// Reads through a follower are answered by the leader, so they alone would
// not see a follower whose store diverged; the stores themselves are read
// directly (Node.LocalItem) once every node has applied the same position,
// and must then be identical. Each final state must pass Durability, and
// the history followed by every final state, in the order it was read,
// must be linearizable (stricter: the final state must also agree with
// what the history's reads observed).
func checkFinalState(ctx context.Context, c *cluster.Cluster, h []linearizability.Op, r *run, dir string, historyOk bool, logf func(string, ...any)) []string {
	var details []string
	names := keyNames(keys)
	type view struct {
		what  string
		final map[string]linearizability.FinalValue
	}
	var views []view // complete final states, in the order they were read
	for _, n := range c.Active() {
		final := make(map[string]linearizability.FinalValue)
		for _, key := range names {
			var fv linearizability.FinalValue
			err := soon.Within(20*time.Second, func() error {
				gctx, gcancel := context.WithTimeout(ctx, 3*time.Second)
				defer gcancel()
				v, found, err := c.Get(gctx, n, key)
				fv = linearizability.FinalValue{Value: v, Found: found}
				return err
			})
			if err != nil {
				r.other = append(r.other, fmt.Sprintf("final read of %s through node %d: %v", key, n, err))
				continue
			}
			final[key] = fv
		}
		if len(final) == len(names) {
			views = append(views, view{fmt.Sprintf("read through node %d", n), final})
		}
	}
	reps, err := replicas(c, names)
	if err != nil {
		r.other = append(r.other, err.Error())
	}
	if len(reps) > 0 {
		logf("replicas: every node applied %s", reps[0].applied)
		r.diverged = compareReplicas(reps)
		for i, rep := range reps {
			if i > 0 && len(r.diverged) == 0 {
				break // identical: checking one is checking all
			}
			views = append(views, view{fmt.Sprintf("own store of node %d (applied %s)", rep.node, rep.applied), rep.final()})
		}
	}
	for _, v := range views {
		err := linearizability.Durability(h, v.final)
		var de *linearizability.DurabilityError
		switch {
		case err == nil:
		case errors.As(err, &de):
			r.durability = append(r.durability, fmt.Sprintf("%s: %v", v.what, err))
		default:
			r.other = append(r.other, fmt.Sprintf("durability check of %s: %v", v.what, err))
		}
	}
	if historyOk && len(views) > 0 {
		hf := h
		var what []string
		for i, v := range views {
			hf = linearizability.AppendFinalReads(hf, v.final, finalClient+i)
			what = append(what, fmt.Sprintf("client %d: %s", finalClient+i, v.what))
		}
		res := linearizability.Check(ctx, hf, time.Minute, linearizability.VisualizationDir(dir))
		logf("history and final state: %v", res)
		details = append(details, r.checked(res, "history followed by the final state",
			"visualisation of the history and the final state: "+res.Visualization, "final reads: "+strings.Join(what, "; "))...)
	}
	return details
}

func keyNames(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprint("k", i)
	}
	return names
}

// replica is one node's own store, read when every node had applied the
// same position.
type replica struct {
	node    int // its number in the cluster
	applied store.Version
	items   map[string]item
}

type item struct {
	value   string
	found   bool
	version store.Version
}

func (it item) String() string {
	if !it.found {
		return fmt.Sprintf("(absent) at %s", it.version)
	}
	return fmt.Sprintf("%q at %s", it.value, it.version)
}

func (r replica) final() map[string]linearizability.FinalValue {
	m := make(map[string]linearizability.FinalValue, len(r.items))
	for k, it := range r.items {
		m[k] = linearizability.FinalValue{Value: it.value, Found: it.found}
	}
	return m
}

// replicas reads every active node's own store (names and every key any
// node holds) once every node has applied the same position, and that
// position did not move while it was read.
func replicas(c *cluster.Cluster, names []string) ([]replica, error) {
	var out []replica
	err := soon.Within(20*time.Second, func() error {
		out = nil
		active := c.Active()
		nodes := make([]*node.Node, len(active))
		all := slices.Clone(names)
		for i, n := range active {
			nd, err := c.Node(n)
			if err != nil {
				return err
			}
			nodes[i] = nd
			all = append(all, nd.LocalKeys()...)
		}
		slices.Sort(all)
		all = slices.Compact(all)
		for i, nd := range nodes {
			n := active[i]
			rep := replica{node: n, applied: nd.Applied(), items: make(map[string]item, len(all))}
			for _, k := range all {
				v, found, ver := nd.LocalItem(k)
				rep.items[k] = item{v, found, ver}
			}
			if now := nd.Applied(); now != rep.applied {
				return fmt.Errorf("node %d applied %s while its store was read (now %s)", n, rep.applied, now)
			}
			if i > 0 && rep.applied != out[0].applied {
				return fmt.Errorf("node %d applied %s, node %d %s", n, rep.applied, out[0].node, out[0].applied)
			}
			out = append(out, rep)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("replicas did not reach the same position: %w", err)
	}
	return out, nil
}

// compareReplicas lists the keys whose items differ between replicas.
func compareReplicas(reps []replica) []string {
	var diffs []string
	for _, k := range slices.Sorted(maps.Keys(reps[0].items)) {
		var parts []string
		same := true
		for _, rep := range reps {
			if rep.items[k] != reps[0].items[k] {
				same = false
			}
			parts = append(parts, fmt.Sprintf("node %d has %v", rep.node, rep.items[k]))
		}
		if !same {
			diffs = append(diffs, fmt.Sprintf("key %q at applied %s: %s", k, reps[0].applied, strings.Join(parts, ", ")))
		}
	}
	return diffs
}

// replaySchedule is the command that replays schedule seed of
// TestLinearizableUnderFaults on backend b, and nothing else.
func replaySchedule(seed uint64, b cluster.Backend) string {
	kinds := ""
	if s := os.Getenv("KVSTORE_KINDS"); s != "" {
		kinds = fmt.Sprintf("KVSTORE_KINDS=%s ", s)
	}
	return fmt.Sprintf("%sKVSTORE_SEED=%d KVSTORE_SCHEDULES=1 go test -race ./robustness -run '^TestLinearizableUnderFaults$/^%s$' -v", kinds, seed, b)
}

// replayBug is the command that runs one case of
// TestCheckerCatchesBrokenProtocol on backend b, its first attempt with
// seed base plus the case's offset.
func replayBug(base uint64, b cluster.Backend, name string) string {
	return fmt.Sprintf("KVSTORE_SEED=%d go test -race ./robustness -run '^TestCheckerCatchesBrokenProtocol$/^%s$/^%s$' -v", base, b, name)
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

// summary prints line on standard output and appends it to
// $KVSTORE_SUMMARY, which CI prints.
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

// powerLossCounter counts the power losses the nemesis injects and the
// torn groups they leave.
type powerLossCounter struct {
	*cluster.Cluster
	losses, groups, subs atomic.Int64
}

func (p *powerLossCounter) PowerLoss(n int) (int, error) {
	torn, err := p.Cluster.PowerLoss(n)
	if err == nil {
		p.losses.Add(1)
		if torn > 0 {
			p.groups.Add(1)
			p.subs.Add(int64(torn))
		}
	}
	return torn, err
}

// tally counts what a suite run did.
type tally struct {
	histories, ops, faults, violations int
	writeGap                           time.Duration // the longest of the histories' (run.writeGap)
	healthyGap                         time.Duration // the longest of the histories' (run.healthyGap)
	byKind                             gapsByKind    // each step's gap (run.stepGaps), by fault
}

// add counts run r.
func (x *tally) add(r *run) {
	x.histories++
	x.ops += r.ops
	x.faults += r.injected
	x.writeGap = max(x.writeGap, r.writeGap)
	x.healthyGap = max(x.healthyGap, r.healthyGap.Len())
	if x.byKind == nil {
		x.byKind = gapsByKind{}
	}
	x.byKind.add(r.spans, r.stepGaps)
}

func (x tally) String() string {
	return fmt.Sprintf("%d histories, %d ops, %d faults, %d violations, longest stretch without an acknowledged write %v (%v while a majority was healthy)",
		x.histories, x.ops, x.faults, x.violations, x.writeGap.Round(time.Millisecond), x.healthyGap.Round(time.Millisecond))
}

// TestLinearizableUnderFaults is the randomized suite: every schedule's
// history must be linearizable and durable, on every backend. It prints
// one line per backend (linearizability/<backend>: ...) and then the
// summary over every backend in the format:
//
//	linearizability: <histories> histories, <ops> ops, <faults> faults, <violations> violations
func TestLinearizableUnderFaults(t *testing.T) {
	base := baseSeed(t)
	t.Logf("base seed %d (KVSTORE_SEED)", base)
	var mu sync.Mutex // guards total
	var total tally
	// The backends run in parallel (each schedule mostly waits out its
	// faults), so the summary over both is written once both are done.
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		summary(t, "linearizability: "+total.String())
		summary(t, "write gaps by fault: "+total.byKind.String())
		if total.histories >= 10 && total.ops < 5000 {
			t.Errorf("only %d operations in %d histories: the workload is too thin to prove much", total.ops, total.histories)
		}
	})
	eachBackendParallel(t, func(t *testing.T, b cluster.Backend) {
		var x tally
		defer func() {
			mu.Lock()
			defer mu.Unlock()
			total.histories += x.histories
			total.ops += x.ops
			total.faults += x.faults
			total.violations += x.violations
			total.writeGap = max(total.writeGap, x.writeGap)
			total.healthyGap = max(total.healthyGap, x.healthyGap)
			if total.byKind == nil {
				total.byKind = gapsByKind{}
			}
			total.byKind.merge(x.byKind)
		}()
		testLinearizableUnderFaults(t, b, base, &x)
	})
}

// faultsNamed is the fault mix KVSTORE_KINDS names, comma-separated: any
// fault of nemesis.AllFaults, nemesis.HandOver and nemesis.RmiDownFollower
// (the others need durable nodes); nil for "".
func faultsNamed(s string) ([]nemesis.Fault, error) {
	if s == "" {
		return nil, nil
	}
	known := append(slices.Clone(nemesis.AllFaults), nemesis.HandOver, nemesis.RmiDownFollower)
	var faults []nemesis.Fault
	for _, name := range strings.Split(s, ",") {
		name = strings.TrimSpace(name)
		f, ok := nemesis.ByName(name)
		if !ok || !slices.Contains(known, f) {
			return nil, fmt.Errorf("unknown fault %q (known: %v)", name, known)
		}
		faults = append(faults, f)
	}
	return faults, nil
}

// writePauseFor is the writers' think time of schedule seed: one schedule
// in four has slow writers, so that keys go unwritten for more than half a
// lease and the followers' copies are renewed (Renew) under the faults;
// with the default, every key is written long before that.
func writePauseFor(seed uint64) time.Duration {
	if seed%4 == 3 {
		return 400 * time.Millisecond
	}
	return 0
}

func testLinearizableUnderFaults(t *testing.T, b cluster.Backend, base uint64, x *tally) {
	schedules := defaultSchedules
	if s := os.Getenv("KVSTORE_SCHEDULES"); s != "" {
		var err error
		if schedules, err = strconv.Atoi(s); err != nil {
			t.Fatalf("KVSTORE_SCHEDULES: %v", err)
		}
	}
	var soakUntil time.Time
	if s := os.Getenv("KVSTORE_SOAK"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("KVSTORE_SOAK: %v", err)
		}
		soakUntil = time.Now().Add(d)
	}
	kinds, err := faultsNamed(os.Getenv("KVSTORE_KINDS"))
	if err != nil {
		t.Fatalf("KVSTORE_KINDS: %v", err)
	}
	defer func() {
		summary(t, fmt.Sprintf("linearizability/%s: %v", b, *x))
		summary(t, fmt.Sprintf("write gaps by fault/%s: %v", b, x.byKind))
	}()
	for i := 0; i < schedules || time.Now().Before(soakUntil); i++ {
		seed := base + uint64(i)
		r := &run{backend: b, seed: seed, nodes: nodesFor(seed), kinds: kinds, holdLeader: true, steps: 2, minHold: 500 * time.Millisecond, maxHold: 3 * time.Second, workload: time.Second,
			writePause: writePauseFor(seed), replay: replaySchedule(seed, b)}
		play(t, r)
		x.add(r)
		if r.violated() {
			x.violations++
			t.Errorf("violation:\n%s", r.report)
		}
	}
}

// TestDurableUnderCrashes is the suite for durable nodes (issues 7 and
// 13): every node has a data directory, and the faults (nemesis.DurableFaults)
// crash every node at once (a power loss), crash them one after another,
// and crash the leader, while the clients write; a node loses its disk and
// restarts (once or twice) empty, also while it holds the last copy of
// writes; a node is replaced by a new one, and a live voter removed and
// replaced. After each crash the nodes restart with their data (or
// recovering, without); the history must be linearizable, every
// acknowledged write present (the final reads, and every active node's own
// store, checked as in TestLinearizableUnderFaults), and a node that lost
// its disk recovering until a leader reconciled it. The third history
// is power losses of every node only (issue 17), with disks slow enough
// that each log is left with a torn final group: every node must come
// back with its data (a torn group read as corruption would set every
// data directory aside, and no leader could serve again); the summary
// counts the torn groups, and the test fails if there were none.
func TestDurableUnderCrashes(t *testing.T) {
	base := baseSeed(t)
	t.Logf("base seed %d (KVSTORE_SEED)", base)
	eachBackendParallel(t, func(t *testing.T, b cluster.Backend) {
		var x tally
		defer func() {
			summary(t, fmt.Sprintf("durability/%s: %v", b, x))
			summary(t, fmt.Sprintf("durability write gaps by fault/%s: %v", b, x.byKind))
		}()
		var losses, groups, subs int
		for i := 0; i < 3; i++ {
			seed := base + uint64(i)
			r := &run{backend: b, seed: seed, nodes: 3, durable: true, kinds: nemesis.DurableFaults,
				steps: 3, minHold: 200 * time.Millisecond, maxHold: time.Second, workload: time.Second,
				replay: fmt.Sprintf("KVSTORE_SEED=%d go test -race ./robustness -run '^TestDurableUnderCrashes$/^%s$' -v", seed, b)}
			if i == 2 {
				// Power losses of every node only, each disk a little slow
				// so that every node has a group in progress when the
				// power goes: each log gets a torn final group.
				r.kinds, r.steps, r.faults = []nemesis.Fault{nemesis.CrashAll}, 2, node.Faults{SlowDisk: 20 * time.Millisecond}
			}
			play(t, r)
			x.add(r)
			losses, groups, subs = losses+r.powerLosses, groups+r.tornGroups, subs+r.tornSubs
			if r.violated() {
				x.violations++
				t.Errorf("violation:\n%s", r.report)
			}
		}
		summary(t, fmt.Sprintf("durability/%s: %d node power losses, %d left a torn final group (%d submissions in them)", b, losses, groups, subs))
		if x.faults == 0 {
			t.Errorf("no crash was injected: the test proves nothing")
		}
		if groups == 0 {
			t.Errorf("no power loss left a torn group: the test proves nothing about them")
		}
	})
}

// TestCheckerCatchesBrokenProtocol switches deliberate protocol bugs on, one
// at a time, and requires the suite to find a safety violation for each: a
// history Porcupine proves not linearizable, or a final state the history
// does not explain (a lost acknowledged write, a value nobody wrote). A
// cluster that merely fails to heal does not count. A green run of
// TestLinearizableUnderFaults means something only if this passes. Each
// catch prints a line "teeth: <fault> (<backend>) caught by <check> ...".
func TestCheckerCatchesBrokenProtocol(t *testing.T) {
	base := baseSeed(t)
	t.Logf("base seed %d (KVSTORE_SEED)", base)
	eachBackendParallel(t, func(t *testing.T, b cluster.Backend) { testCheckerCatchesBrokenProtocol(t, b, base) })
}

func testCheckerCatchesBrokenProtocol(t *testing.T, b cluster.Backend, base uint64) {
	// Each case catches its bug in most schedules (measured: about one in
	// two at worst) and stops at the first catch; 8 misses in a row (under
	// 1% at one in two) mean the suite lost its teeth.
	const attempts = 8
	cases := []struct {
		name    string
		faults  node.Faults
		kinds   []nemesis.Fault
		nodes   int
		hold    time.Duration
		steps   int
		lease   time.Duration // 0: the suite's default
		durable bool          // the nodes keep their state in data directories
		// writePause: the writers' mean think time (0: the suite's
		// default).
		writePause time.Duration
	}{
		// Writes acknowledged without waiting for one holder of a cached
		// copy: a follower holding copies that cannot be reached serves
		// the old value until its lease ends. (Without faults the
		// replication stream still invalidates within milliseconds, too
		// fast to observe.) A reader on every node keeps both followers
		// holding copies, so the skipped holder is sometimes the
		// unreachable one.
		{"skip-invalidation", node.Faults{SkipInvalidation: true}, []nemesis.Fault{nemesis.RmiDownFollower}, 3, 1500 * time.Millisecond, 3, 0, false, 0},
		// Values handed out by the leader once committed, before older
		// cached copies end: while a write waits for an unreachable
		// follower's lease, the leader already serves the new value and the
		// follower still the old one.
		{"skip-read-gate", node.Faults{SkipReadGate: true}, []nemesis.Fault{nemesis.RmiDownFollower}, 3, 1500 * time.Millisecond, 3, 0, false, 0},
		// Reads answered from the value a key had before its first write
		// in flight, for good (the record of the latest visible value
		// never moves on): once a write of the key is acknowledged, the
		// leader still hands out the value before it.
		{"stale-prior", node.Faults{StalePrior: true}, []nemesis.Fault{nemesis.RmiDownFollower}, 3, 1500 * time.Millisecond, 3, 0, false, 0},
		// Cached copies served past their lease: a follower holding
		// copies that cannot be reached keeps serving the old value after
		// the write.
		{"ignore-lease", node.Faults{IgnoreLease: true}, []nemesis.Fault{nemesis.RmiDownFollower}, 3, 3 * time.Second, 1, 0, false, 0},
		// A majority of reachable nodes instead of voters: a cut-off leader
		// commits alone, and its writes vanish when the others elect.
		// CheckQuorum is off: it would end the cut leader's lone
		// commits within a second.
		{"live-majority", node.Faults{LiveMajority: true, NoCheckQuorum: true}, []nemesis.Fault{nemesis.PartitionLeader}, 3, 7 * time.Second, 1, 0, false, 0},
		// A new leader serving before the leases of the old epoch end: the
		// old leader hands over at once while an isolated follower still
		// serves its cached copies (it cannot learn of the new epoch).
		// Leases and sessions of 2 s leave the new leader time to take
		// over within them (caught in 8 of 9 schedules, against 8 of 16
		// with 1 s).
		{"skip-takeover-wait", node.Faults{SkipTakeoverWait: true}, []nemesis.Fault{nemesis.HandOver}, 5, 2 * time.Second, 3, 2 * time.Second, false, 0},
		// Entries acknowledged before they are on disk (durable nodes, on a
		// slow disk: 1.5 s per group commit): when every node crashes at
		// once, what was acknowledged but not yet on disk is gone.
		{"skip-durable-wait", node.Faults{SkipDurableWait: true, SlowDisk: 1500 * time.Millisecond}, []nemesis.Fault{nemesis.CrashAll}, 3, 200 * time.Millisecond, 5, 0, true, 0},
		// A node that lost its disk counted as restored when it restarts a
		// second time before any leader reconciled it: it holds the last
		// copy of writes a lagging follower lacks, the leader crashes, and
		// the laggard and the wiped node elect a leader that serves
		// without the writes; the crashed leader, back with its data, is
		// reconciled to that state. A hold of 4 s leaves the new leader
		// time to serve before the heal brings the old one back.
		// CheckQuorum is off: while the laggard is cut and the wiped node
		// restarts twice, the leader hears from no majority and would
		// step down, and the wiped node, elected while the old leader
		// still answers, would take the old leader's state.
		{"forget-unreconciled", node.Faults{ForgetUnreconciled: true, NoCheckQuorum: true}, []nemesis.Fault{nemesis.LoseLastCopy}, 3, 4 * time.Second, 2, 0, true, 0},
		// Copies renewed (Renew) without their holder recorded: a write of
		// such a key is acknowledged without waiting for the follower, which
		// serves its renewed old copy until it applies the write or, cut
		// off, until the lease ends. Writers that think 1 s leave copies
		// unwritten past half a lease, when they are renewed (with 400 ms,
		// caught only at the 8th attempt once on a loaded machine). Six
		// cuts a schedule, not three: with three, a CI run beside the
		// other packages missed it in 8 schedules of 8 once (caught at
		// attempts 1 to 3 elsewhere).
		{"renew-without-holding", node.Faults{RenewWithoutHolding: true}, []nemesis.Fault{nemesis.RmiDownFollower}, 3, 1500 * time.Millisecond, 6, 0, false, time.Second},
	}
	for ci, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var misses []string
			for attempt := 0; attempt < attempts; attempt++ {
				// Attempt a of case ci runs seed base+100*ci+a, so the
				// replay seed below makes the first attempt this one.
				seed := base + uint64(100*ci+attempt)
				replaySeed := seed - uint64(100*ci)
				r := &run{backend: b, seed: seed, nodes: tc.nodes, faults: tc.faults, lease: tc.lease, kinds: tc.kinds, durable: tc.durable, writePause: tc.writePause,
					steps: tc.steps, minHold: tc.hold, maxHold: tc.hold + time.Millisecond, workload: time.Second, dir: t.TempDir(),
					replay: replayBug(replaySeed, b, tc.name)}
				play(t, r)
				if by := r.caughtBy(); by != "" {
					summary(t, fmt.Sprintf("teeth: %s (%s) caught by %s with seed %d after %d ops, attempt %d", tc.name, b, by, r.seed, r.ops, attempt+1))
					t.Logf("%s", r.report)
					return
				}
				miss := fmt.Sprintf("seed %d: %d ops, no safety violation", r.seed, r.ops)
				if r.violated() {
					other := append(slices.Clone(r.diverged), r.other...)
					if r.slow != "" {
						other = append(other, r.slow)
					}
					miss += " (only: " + strings.Join(other, "; ") + ")"
				}
				misses = append(misses, miss)
				t.Log(miss)
			}
			t.Fatalf("the checker did not catch %s in %d schedules: the suite has no teeth for it (replay: %s)\n  %s",
				tc.name, attempts, replayBug(base, b, tc.name), strings.Join(misses, "\n  "))
		})
	}
}

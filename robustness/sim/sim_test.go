package sim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kvstore/kvstore/node"
	"github.com/kvstore/kvstore/robustness/linearizability"
)

// faultTime is how long each schedule's faults last, in virtual time.
const faultTime = 10 * time.Second

// seeds is the schedules TestSimulation runs: KVSTORE_SIM_SEED=<seed>
// runs that one alone (a replay); KVSTORE_SIM_SEEDS=<n> runs seeds 1..n;
// otherwise defaultSeeds (fewer under -race).
func seeds(t *testing.T) []uint64 {
	if s := os.Getenv("KVSTORE_SIM_SEED"); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("KVSTORE_SIM_SEED=%q: %v", s, err)
		}
		return []uint64{seed}
	}
	n := defaultSeeds
	if s := os.Getenv("KVSTORE_SIM_SEEDS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n <= 0 {
			t.Fatalf("KVSTORE_SIM_SEEDS=%q: want a positive count", s)
		}
	}
	out := make([]uint64, n)
	for i := range out {
		out[i] = uint64(i + 1)
	}
	return out
}

// nodesFor is the cluster size of a seed: every fourth seed runs 5 nodes,
// the others 3.
func nodesFor(seed uint64) int {
	if seed%4 == 0 {
		return 5
	}
	return 3
}

// outcome is what one schedule's run showed.
type outcome struct {
	sched    Schedule
	res      Result
	runErr   error  // the harness failed
	illegal  string // the linearizability checker's verdict, if not Ok
	durable  error  // the durability checker's, per node
	converge error
}

func (o outcome) violation() bool { return o.illegal != "" || o.durable != nil }

// runSchedule runs one schedule in a synctest bubble and checks what it
// saw, outside the bubble (with opts: where a counter-example is drawn).
func runSchedule(t *testing.T, sched Schedule, opts ...linearizability.CheckOption) outcome {
	return runScheduleWith(t, sched, nil, opts...)
}

// runScheduleWith is runSchedule with config adjusting every node's config.
func runScheduleWith(t *testing.T, sched Schedule, config func(*node.Config), opts ...linearizability.CheckOption) outcome {
	o := outcome{sched: sched}
	synctest.Test(t, func(t *testing.T) {
		so := DefaultOptions(sched, t.TempDir())
		so.Config = config
		o.res, o.runErr = Run(so)
	})
	if o.runErr != nil {
		return o
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if r := linearizability.Check(ctx, o.res.History, 30*time.Second, opts...); !r.Ok {
		o.illegal = r.String()
	}
	o.converge = o.res.ConvergeErr
	var errs []error
	for i, final := range o.res.Final {
		if err := linearizability.Durability(o.res.History, final); err != nil {
			errs = append(errs, fmt.Errorf("n%d: %w", i+1, err))
		}
	}
	o.durable = errors.Join(errs...)
	return o
}

// report writes the run's schedule, history and log to a directory that
// outlives the test and returns how to replay it.
func (o outcome) report(t *testing.T, test string) string {
	dir, err := os.MkdirTemp("", fmt.Sprintf("kvstore-sim-%d-", o.sched.Seed))
	var b strings.Builder
	fmt.Fprintf(&b, "replay: KVSTORE_SIM_SEED=%d go test -run '%s' ./robustness/sim\n", o.sched.Seed, test)
	if err != nil {
		fmt.Fprintf(&b, "(could not save the run: %v)\n", err)
	} else {
		_ = linearizability.SaveHistory(dir+"/history.json", o.res.History)
		_, _ = WriteFile(dir, "schedule.txt", []byte(o.sched.String()))
		_, _ = WriteFile(dir, "log.txt", o.res.Log)
		fmt.Fprintf(&b, "history: %s/history.json\nlog: %s/log.txt\n", dir, dir)
	}
	b.WriteString(o.sched.String())
	return b.String()
}

// TestSimulation runs many seeded schedules of faults, each on a new
// cluster of 3 or 5 nodes whose clock rates stay within the drift margin,
// and fails on any history that is not linearizable, any node whose final
// state the history does not explain, and any cluster that did not catch
// up once everything healed.
func TestSimulation(t *testing.T) {
	var ops, unknown, lost, hits, forwarded atomic.Int64
	start := time.Now()
	list := seeds(t)
	t.Run("seeds", func(t *testing.T) {
		for _, seed := range list {
			t.Run(strconv.FormatUint(seed, 10), func(t *testing.T) {
				t.Parallel()
				sched := NewSchedule(seed, nodesFor(seed), WithinMargin, faultTime, Config().ClockDrift)
				o := runSchedule(t, sched)
				ops.Add(o.res.Workload.Ops)
				unknown.Add(o.res.Workload.Unknown)
				lost.Add(int64(o.res.Net.Lost))
				hits.Add(int64(o.res.CacheHits))
				forwarded.Add(int64(o.res.Forwarded))
				switch {
				case o.runErr != nil:
					t.Fatalf("run: %v\n%s", o.runErr, o.report(t, "TestSimulation$"))
				case o.illegal != "":
					t.Fatalf("not linearizable: %s\n%s", o.illegal, o.report(t, "TestSimulation$"))
				case o.durable != nil:
					t.Fatalf("durability: %v\n%s", o.durable, o.report(t, "TestSimulation$"))
				case o.converge != nil:
					t.Fatalf("%v\n%s", o.converge, o.report(t, "TestSimulation$"))
				}
			})
		}
	})
	t.Logf("%d schedules in %v: %d operations (%d outcome unknown), %d reads from caches, %d forwarded on streams, %d messages lost",
		len(list), time.Since(start).Round(time.Millisecond), ops.Load(), unknown.Load(), hits.Load(), forwarded.Load(), lost.Load())
	// The followers' writes and fetches go to the leader on Forward
	// streams: a simulation that never used them would not test them.
	if ops.Load() > 0 && forwarded.Load() == 0 {
		t.Errorf("no write or fetch was forwarded on a stream in %d schedules", len(list))
	}
}

// TestSimulationFindsSkewBeyondMargin is the proof that the simulation has
// teeth: with some nodes' clocks running far slower or faster than the
// drift margin allows, a follower trusts a lease longer than its leader
// counts it, and some schedule among the first maxTeethSeeds shows a stale
// read (or a lost write).
func TestSimulationFindsSkewBeyondMargin(t *testing.T) {
	findViolation(t, maxTeethSeeds, "with clock rates beyond the drift margin", func(seed uint64) Schedule {
		return NewSchedule(seed, 3, BeyondMargin, faultTime, Config().ClockDrift)
	}, nil)
}

// findViolation is the body of a test that the simulation has teeth: it
// runs the schedules of seeds 1 to most (sched draws each; config adjusts
// every node's config, nil for none) until one shows a violation, and
// fails if none does. what says what the schedules do wrong.
func findViolation(t *testing.T, most uint64, what string, sched func(seed uint64) Schedule, config func(*node.Config)) {
	t.Helper()
	for seed := uint64(1); seed <= most; seed++ {
		s := sched(seed)
		var o outcome
		t.Run(strconv.FormatUint(seed, 10), func(t *testing.T) {
			o = runScheduleWith(t, s, config, linearizability.VisualizationDir(t.TempDir()))
		})
		if o.runErr != nil {
			t.Fatalf("seed %d: run: %v", seed, o.runErr)
		}
		if o.violation() {
			t.Logf("seed %d found a violation (schedules %s): %s %v", seed, what, o.illegal, o.durable)
			return
		}
	}
	t.Fatalf("no violation in %d schedules %s", most, what)
}

// maxTeethSeeds bounds the schedules TestSimulationFindsSkewBeyondMargin
// tries. About one schedule in seven finds a violation (measured over
// seeds 1-100: 15), so a miss in 100 is a broken simulation, not bad
// luck.
const maxTeethSeeds = 100

// TestSchedulesAreDistinct: the seeds the CI runs draw as many distinct
// schedules, and a seed always draws the same one (a replay).
func TestSchedulesAreDistinct(t *testing.T) {
	seen := make(map[string]uint64)
	for seed := uint64(1); seed <= 1000; seed++ {
		s := NewSchedule(seed, nodesFor(seed), WithinMargin, faultTime, Config().ClockDrift)
		key := s.String()[strings.IndexByte(s.String(), '\n'):]
		if other, ok := seen[key]; ok {
			t.Fatalf("seeds %d and %d draw the same schedule", other, seed)
		}
		seen[key] = seed
		if again := NewSchedule(seed, nodesFor(seed), WithinMargin, faultTime, Config().ClockDrift); again.String() != s.String() {
			t.Fatalf("seed %d drew two schedules", seed)
		}
	}
}

// TestSchedulesKeepAMajority: a schedule never has more than a minority
// of the nodes down at once, loses at most one disk, draws no immediate
// session expiry, and keeps every rate within the margin unless asked to
// go beyond it, where some node's rate is far outside it.
func TestSchedulesKeepAMajority(t *testing.T) {
	drift := Config().ClockDrift
	for seed := uint64(1); seed <= 300; seed++ {
		for _, skew := range []Skew{WithinMargin, BeyondMargin} {
			s := NewSchedule(seed, nodesFor(seed), skew, faultTime, drift)
			down, wipes, outside := map[int]bool{}, 0, false
			for _, e := range s.Events {
				switch e.Kind {
				case Crash:
					down[e.Node] = true
					if len(down) > (s.Nodes-1)/2 {
						t.Fatalf("%v: %d of %d nodes down at %v", s, len(down), s.Nodes, e.At)
					}
				case Restart:
					delete(down, e.Node)
					if !e.WithData {
						wipes++
					}
				case Expire:
					t.Fatalf("%v: an immediate expiry drawn", s)
				case Rate:
					if e.Rate < 1-withinRate(drift) || e.Rate > 1+withinRate(drift) {
						outside = true
					}
				}
			}
			if wipes > 1 {
				t.Fatalf("%v: %d disks lost", s, wipes)
			}
			if outside != (skew == BeyondMargin) {
				t.Fatalf("%v: a rate outside the margin is %v, want %v", s, outside, skew == BeyondMargin)
			}
		}
	}
}

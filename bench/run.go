package bench

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Result is one workload run against one target. Latencies are of the
// operations that succeeded in the measured phase; Ops counts those, and
// Errors the operations that failed in it.
type Result struct {
	Target       string `json:"target"`
	Workload     string `json:"workload"`
	Distribution string `json:"distribution"`
	Clients      int    `json:"clients"`
	Keys         int    `json:"keys"`
	ValueSize    int    `json:"value_size"`
	Seed         uint64 `json:"seed"`
	// Duration is the measured phase as it ran.
	Duration  time.Duration `json:"duration_ns"`
	Ops       uint64        `json:"ops"`
	OpsPerSec float64       `json:"ops_per_sec"`
	Reads     uint64        `json:"reads"`
	Updates   uint64        `json:"updates"`
	// Latency is over every operation; ReadLatency and UpdateLatency over
	// reads and updates alone (zero when there were none).
	Latency       Latency `json:"latency"`
	ReadLatency   Latency `json:"read_latency"`
	UpdateLatency Latency `json:"update_latency"`
	Errors        uint64  `json:"errors"`
	// FirstError is the first error of the measured phase, if any.
	FirstError string `json:"first_error,omitempty"`
	// CacheHitRatio is hits / (hits + misses) over the measured phase, for
	// targets that implement CacheStats and when they counted any; nil
	// otherwise.
	CacheHitRatio *float64 `json:"cache_hit_ratio,omitempty"`
	CacheHits     uint64   `json:"cache_hits,omitempty"`
	CacheMisses   uint64   `json:"cache_misses,omitempty"`
	// Durability is the target's statement of what a write survives.
	Durability string `json:"durability"`
	// RoundOpsPerSec is, when the workload ran in several rounds (Median),
	// every round's ops/s in the order they ran; the rest of the result is
	// the median round's.
	RoundOpsPerSec []float64 `json:"round_ops_per_sec,omitempty"`
}

// Median returns the round of rounds (one target's runs of one workload)
// whose ops/s is the median (the lower middle of an even count), with
// RoundOpsPerSec set to every round's ops/s. A real run, not an average:
// its latencies and errors belong together.
func Median(rounds []Result) Result {
	if len(rounds) == 0 {
		return Result{}
	}
	ops := make([]float64, len(rounds))
	order := make([]int, len(rounds))
	for i, r := range rounds {
		ops[i] = r.OpsPerSec
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(ops[a], ops[b]) })
	m := rounds[order[(len(order)-1)/2]]
	if len(rounds) > 1 {
		m.RoundOpsPerSec = ops
	}
	return m
}

// Latency summarizes a histogram.
type Latency struct {
	P50  time.Duration `json:"p50_ns"`
	P99  time.Duration `json:"p99_ns"`
	P999 time.Duration `json:"p999_ns"`
	Mean time.Duration `json:"mean_ns"`
	Max  time.Duration `json:"max_ns"`
}

func summarize(h *Histogram) Latency {
	return Latency{
		P50:  h.Quantile(0.50),
		P99:  h.Quantile(0.99),
		P999: h.Quantile(0.999),
		Mean: h.Mean(),
		Max:  h.Max(),
	}
}

// Run phases, in order.
const (
	phaseWarmup int32 = iota
	phaseMeasure
	phaseStop
)

// worker is one client's state. Only its goroutine writes the histograms
// and error fields; the counters are read by the progress printer.
type worker struct {
	_      [64]byte      // keep the counters off other workers' cache lines
	done   atomic.Uint64 // operations finished, any phase, any outcome
	failed atomic.Uint64 // of which failed
	_      [64]byte

	read, update Histogram
	errs         uint64
	firstErr     error
	firstErrAt   time.Duration // since the run's base time
}

// Run loads the keys (unless w.SkipLoad), runs the workload for w.Warmup
// unrecorded and then for w.Duration recorded, with w.Clients goroutines
// each calling target with its own client number, and returns the result.
// If progress is not nil it gets one line per second. It fails only when
// the load fails or ctx ends; operation errors are counted in the result.
func Run(ctx context.Context, target Target, w Workload, progress io.Writer) (Result, error) {
	w, err := w.normalize()
	if err != nil {
		return Result{}, err
	}
	ks := newKeySpace(w)
	if !w.SkipLoad {
		if err := load(ctx, target, w, ks, progress); err != nil {
			return Result{}, err
		}
	}
	readFrac, _ := ReadProportion(w.Name)
	label := fmt.Sprintf("%s %s/%s", target.Name(), w.Name, w.Distribution)

	var phase atomic.Int32
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	base := time.Now()
	workers := make([]*worker, w.Clients)
	var wg sync.WaitGroup
	for i := range workers {
		wk := &worker{}
		workers[i] = wk
		wg.Add(1)
		go func() {
			defer wg.Done()
			wk.run(wctx, target, i, w, ks, readFrac, &phase, base)
		}()
	}

	var stopProgress func()
	if progress != nil {
		stopProgress = startProgress(progress, label, workers, &phase)
	}
	cs, hasCS := target.(CacheStats)
	var hits0, misses0, hits1, misses1 uint64

	sleep := func(d time.Duration) error {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	err = sleep(w.Warmup)
	if hasCS {
		hits0, misses0 = cs.CacheCounts()
	}
	start := time.Now()
	phase.Store(phaseMeasure)
	if err == nil {
		err = sleep(w.Duration)
	}
	phase.Store(phaseStop)
	elapsed := time.Since(start)
	if hasCS {
		hits1, misses1 = cs.CacheCounts()
	}
	cancel() // operations still in flight are discarded
	wg.Wait()
	if stopProgress != nil {
		stopProgress()
	}
	if err != nil {
		return Result{}, fmt.Errorf("bench: %s: %w", label, err)
	}

	res := Result{
		Target:       target.Name(),
		Workload:     w.Name,
		Distribution: w.Distribution,
		Clients:      w.Clients,
		Keys:         w.Keys,
		ValueSize:    w.ValueSize,
		Seed:         w.Seed,
		Duration:     elapsed,
		Durability:   target.Durability(),
	}
	var reads, updates, all Histogram
	var firstAt time.Duration
	for _, wk := range workers {
		reads.Merge(&wk.read)
		updates.Merge(&wk.update)
		res.Errors += wk.errs
		if wk.firstErr != nil && (res.FirstError == "" || wk.firstErrAt < firstAt) {
			res.FirstError, firstAt = wk.firstErr.Error(), wk.firstErrAt
		}
	}
	all.Merge(&reads)
	all.Merge(&updates)
	res.Reads, res.Updates, res.Ops = reads.Count(), updates.Count(), all.Count()
	if elapsed > 0 {
		res.OpsPerSec = float64(res.Ops) / elapsed.Seconds()
	}
	res.Latency, res.ReadLatency, res.UpdateLatency = summarize(&all), summarize(&reads), summarize(&updates)
	// Counters that went back (a node restarted, or one that answered
	// only at the start) say nothing about the phase.
	if hasCS && hits1 >= hits0 && misses1 >= misses0 {
		res.CacheHits, res.CacheMisses = hits1-hits0, misses1-misses0
		if n := res.CacheHits + res.CacheMisses; n > 0 {
			r := float64(res.CacheHits) / float64(n)
			res.CacheHitRatio = &r
		}
	}
	return res, nil
}

// yieldEvery is how many operations a client runs before it yields the
// processor. A read answered from a node's memory never blocks, so without
// it a few dozen clients would hold both processors for whole 10 ms time
// slices while the nodes' coordinator keep-alives wait behind them in the run
// queue, and the nodes would suspend themselves (safe, but unavailable). A
// real client blocks on its own network between requests.
const yieldEvery = 32

// run is one client's loop. An operation counts only if it started and
// ended in the measured phase: one that started in the warm-up, or ended
// after the stop (the context is canceled then), is discarded.
func (wk *worker) run(ctx context.Context, target Target, id int, w Workload, ks *keySpace, readFrac float64, phase *atomic.Int32, base time.Time) {
	r := clientRand(w.Seed, id)
	value := randomValue(r, w.ValueSize)
	for i := 1; ; i++ {
		if i%yieldEvery == 0 {
			runtime.Gosched()
		}
		p := phase.Load()
		if p == phaseStop {
			return
		}
		read := readFrac == 1 || (readFrac > 0 && r.Float64() < readFrac)
		key := ks.names[ks.next(r)]
		t0 := time.Since(base)
		var err error
		if read {
			err = target.Get(ctx, id, key)
		} else {
			err = target.Put(ctx, id, key, value)
		}
		t1 := time.Since(base)
		if now := phase.Load(); now != p {
			if now == phaseStop {
				return
			}
			continue // started in the warm-up
		}
		wk.done.Add(1)
		if err != nil {
			wk.failed.Add(1)
			if p == phaseMeasure {
				wk.errs++
				if wk.firstErr == nil {
					wk.firstErr, wk.firstErrAt = err, t1
				}
			}
			continue
		}
		if p == phaseMeasure {
			if read {
				wk.read.Record(t1 - t0)
			} else {
				wk.update.Record(t1 - t0)
			}
		}
	}
}

// startProgress prints a line per second until the returned function is
// called: the phase, ops/s in the last second and, while measuring, the
// average so far.
func startProgress(out io.Writer, label string, workers []*worker, phase *atomic.Int32) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		var last, lastFailed uint64
		lastAt := time.Now()
		var measureOps, measureFailed uint64
		var measureStart time.Time
		measuring := false
		for {
			select {
			case <-done:
				return
			case now := <-tick.C:
				var ops, failed uint64
				for _, wk := range workers {
					ops += wk.done.Load()
					failed += wk.failed.Load()
				}
				p := phase.Load()
				if p == phaseStop {
					return
				}
				rate := float64(ops-last) / now.Sub(lastAt).Seconds()
				if p == phaseMeasure && !measuring {
					// The first tick of the measured phase: its average
					// starts from here.
					measuring, measureStart, measureOps, measureFailed = true, lastAt, last, lastFailed
				}
				if measuring {
					avg := float64(ops-measureOps) / now.Sub(measureStart).Seconds()
					fmt.Fprintf(out, "%s: %3.0fs measured  %s ops/s (average %s ops/s)  errors %d\n",
						label, now.Sub(measureStart).Seconds(), fmtCount(rate), fmtCount(avg), failed-measureFailed)
				} else {
					fmt.Fprintf(out, "%s: warm-up        %s ops/s  errors %d\n", label, fmtCount(rate), failed-lastFailed)
				}
				last, lastFailed, lastAt = ops, failed, now
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}

// Load writes every key of w once, with w.Clients clients in parallel (at
// most one per key), printing progress once a second if progress is not
// nil. Run calls it unless w.SkipLoad is set.
func Load(ctx context.Context, target Target, w Workload, progress io.Writer) error {
	w, err := w.normalize()
	if err != nil {
		return err
	}
	return load(ctx, target, w, newKeySpace(w), progress)
}

func load(ctx context.Context, target Target, w Workload, ks *keySpace, progress io.Writer) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next, done atomic.Int64
	n := int64(len(ks.names))
	var wg sync.WaitGroup
	for i := 0; i < min(w.Clients, len(ks.names)); i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := clientRand(^w.Seed, i)
			value := randomValue(r, w.ValueSize)
			for ctx.Err() == nil {
				k := next.Add(1) - 1
				if k >= n {
					return
				}
				if err := target.Put(ctx, i, ks.names[k], value); err != nil {
					cancel(fmt.Errorf("bench: load %s: put %s: %w", target.Name(), ks.names[k], err))
					return
				}
				done.Add(1)
			}
		}()
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	start := time.Now()
	for {
		select {
		case <-finished:
			if err := context.Cause(ctx); err != nil {
				return err
			}
			if progress != nil {
				fmt.Fprintf(progress, "%s: loaded %d keys in %.1fs\n", target.Name(), n, time.Since(start).Seconds())
			}
			return nil
		case <-tick.C:
			if progress != nil {
				fmt.Fprintf(progress, "%s: loading %d/%d keys\n", target.Name(), done.Load(), n)
			}
		}
	}
}

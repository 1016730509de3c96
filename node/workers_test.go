package node

import (
	"sync"
	"sync/atomic"
	"testing"
)

// TestWorkersAreKeptAndStopped: a batch's operations run on workers that
// stay for the next batch (at most maxIdleWorkers of them), every
// operation runs once, and close stops them all; an operation after close
// still runs.
func TestWorkersAreKeptAndStopped(t *testing.T) {
	w := newWorkers()
	var ran atomic.Int64
	batch := func(ops int) {
		var wg sync.WaitGroup
		wg.Add(ops)
		for range ops {
			w.do(func() {
				defer wg.Done()
				ran.Add(1)
			})
		}
		wg.Wait()
	}
	batch(8)
	started := workersSpawned(w)
	for range 100 {
		batch(8)
	}
	if got := ran.Load(); got != 808 {
		t.Fatalf("%d operations ran, want 808", got)
	}
	// Operations that find a worker idle take it: 100 more batches of 8
	// must not need a goroutine each (a worker finishing an operation
	// races the next do, so a few new ones may start).
	if more := workersSpawned(w) - started; more > 100 {
		t.Errorf("%d new workers for 800 operations after the first batch: workers are not kept", more)
	}
	w.close()
	if n := workersRunning(w); n != 0 {
		t.Errorf("%d workers still running after close", n)
	}
	done := make(chan struct{})
	w.do(func() { close(done) })
	<-done
}

// workersRunning is how many workers are alive, idle or not.
func workersRunning(w *workers) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.running
}

// workersSpawned is how many workers were ever started.
func workersSpawned(w *workers) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.spawned
}

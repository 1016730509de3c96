package node

import (
	"sync"
)

// maxIdleWorkers bounds the goroutines a node keeps waiting for a batch's
// next operation (their stacks, grown down the write path, are about 16
// KiB each).
const maxIdleWorkers = 256

// workers runs the operations of client batches that may block (writes,
// reads the cache does not answer) on goroutines kept between batches, as
// the gRPC server's stream workers are kept between calls: a new
// goroutine per operation starts with a small stack and grows it on the
// way down the write path, which in a leader's CPU profile under network
// W was 5.6% of its CPU. An operation that finds no idle worker gets a
// new one, which afterwards waits for more, unless maxIdleWorkers
// already do.
type workers struct {
	work chan func() // unbuffered: a send succeeds only to an idle worker

	mu      sync.Mutex
	idle    int // waiting for an operation
	running int // alive, idle or not
	spawned int // ever started (tests)
	closed  bool
	quit    chan struct{}
	wg      sync.WaitGroup // the workers
}

func newWorkers() *workers {
	return &workers{work: make(chan func()), quit: make(chan struct{})}
}

// do runs f on a worker. The caller waits for f itself (Batch does).
func (w *workers) do(f func()) {
	select {
	case w.work <- f:
		return
	default:
	}
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		go f()
		return
	}
	w.wg.Add(1)
	w.running++
	w.spawned++
	w.mu.Unlock()
	go w.run(f)
}

// run is one worker: f, then whatever comes while it waits idle.
func (w *workers) run(f func()) {
	defer w.wg.Done()
	defer func() {
		w.mu.Lock()
		w.running--
		w.mu.Unlock()
	}()
	for {
		f()
		w.mu.Lock()
		if w.closed || w.idle >= maxIdleWorkers {
			w.mu.Unlock()
			return
		}
		w.idle++
		w.mu.Unlock()
		select {
		case f = <-w.work:
			w.mu.Lock()
			w.idle--
			w.mu.Unlock()
		case <-w.quit:
			w.mu.Lock()
			w.idle--
			w.mu.Unlock()
			return
		}
	}
}

// close stops the idle workers and waits for every worker to end (those
// running an operation end with it).
func (w *workers) close() {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.quit)
	}
	w.mu.Unlock()
	w.wg.Wait()
}

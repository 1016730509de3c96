package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/kvstore/kvstore/client"
)

// writer starts a write every liveWriteEvery, each with its own deadline,
// however long the ones in flight take (up to liveMaxInFlight at once), and
// records each.
type writer struct {
	cl       *client.Client
	quit     chan struct{}
	loop     sync.WaitGroup
	inFlight sync.WaitGroup
	mu       sync.Mutex
	ops      []op
}

func startWriter(t *testing.T, endpoints []string) *writer {
	t.Helper()
	cl, err := client.New(client.Config{Endpoints: endpoints, AttemptTimeout: liveAttempt})
	if err != nil {
		t.Fatal(err)
	}
	w := &writer{cl: cl, quit: make(chan struct{})}
	t.Cleanup(func() { w.stop(t) })
	w.loop.Add(1)
	go w.run()
	return w
}

func (w *writer) run() {
	defer w.loop.Done()
	slots := make(chan struct{}, liveMaxInFlight)
	tick := time.NewTicker(liveWriteEvery)
	defer tick.Stop()
	for i := range liveMaxWrites {
		select {
		case <-w.quit:
			return
		case <-tick.C:
		}
		select {
		case slots <- struct{}{}:
		default:
			continue // as many in flight as allowed: skip a beat
		}
		w.inFlight.Add(1)
		go func() {
			defer func() { <-slots; w.inFlight.Done() }()
			key := fmt.Sprint("live", i)
			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), liveOpDeadline)
			err := w.cl.Put(ctx, key, "x")
			cancel()
			o := op{what: "put " + key, start: start, end: time.Now(), deadline: liveOpDeadline, err: err}
			w.mu.Lock()
			w.ops = append(w.ops, o)
			w.mu.Unlock()
		}()
	}
}

// longestGap is the longest time from from to to with no write
// acknowledged, and when it began.
func (w *writer) longestGap(from, to time.Time) (gap time.Duration, began time.Time) {
	w.mu.Lock()
	acks := []time.Time{to}
	for _, o := range w.ops {
		if o.err == nil && o.end.After(from) && o.end.Before(to) {
			acks = append(acks, o.end)
		}
	}
	w.mu.Unlock()
	slices.SortFunc(acks, time.Time.Compare)
	prev := from
	for _, a := range acks {
		if a.Sub(prev) > gap {
			gap, began = a.Sub(prev), prev
		}
		prev = a
	}
	return gap, began
}

// firstAck is when the first write begun after since was acknowledged.
func (w *writer) firstAck(since time.Time) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var first time.Time
	for _, o := range w.ops {
		if o.err == nil && o.start.After(since) && (first.IsZero() || o.end.Before(first)) {
			first = o.end
		}
	}
	return first, !first.IsZero()
}

// stop stops starting writes and waits for those in flight (each has its
// deadline; a write that outlives it by 5 s fails the test).
func (w *writer) stop(t *testing.T) {
	t.Helper()
	select {
	case <-w.quit:
		return
	default:
	}
	close(w.quit)
	w.loop.Wait()
	ended := make(chan struct{})
	go func() { w.inFlight.Wait(); close(ended) }()
	select {
	case <-ended:
	case <-time.After(liveOpDeadline + 5*time.Second):
		t.Errorf("writes still in flight %v after the writer stopped, over their deadline %v", liveOpDeadline+5*time.Second, liveOpDeadline)
	}
	w.cl.Close()
}

// writeErrs counts failed writes by the sentinel they match.
type writeErrs struct {
	total  int
	byKind map[string]int
}

// report fails the test for every write in flight longer than its deadline
// plus 1 s, and returns how many ended, the longest and the failures.
func (w *writer) report(t *testing.T) (writes int, longest time.Duration, errs writeErrs) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	errs.byKind = map[string]int{}
	kinds := []struct {
		name string
		err  error
	}{
		{"outcome unknown", client.ErrOutcomeUnknown}, {"partitioned", client.ErrPartitioned},
		{"no quorum", client.ErrNoQuorum}, {"no leader", client.ErrNoLeader},
		{"unavailable", client.ErrUnavailable}, {"timeout", client.ErrTimeout},
	}
	for _, o := range w.ops {
		took := o.end.Sub(o.start)
		longest = max(longest, took)
		if took > o.deadline+time.Second {
			t.Errorf("%s took %v, over its deadline %v plus 1 s: %v", o.what, took.Round(time.Millisecond), o.deadline, o.err)
		}
		if o.err == nil {
			continue
		}
		errs.total++
		kind := "other"
		for _, k := range kinds {
			if errors.Is(o.err, k.err) {
				kind = k.name
				break
			}
		}
		if kind == "other" && errs.byKind[kind] == 0 {
			t.Logf("%s: %v", o.what, o.err)
		}
		errs.byKind[kind]++
	}
	return len(w.ops), longest, errs
}

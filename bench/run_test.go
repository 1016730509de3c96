package bench

import (
	"bytes"
	"context"
	"errors"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// memTarget is an in-memory Target counting its calls; every read is a
// "cache hit".
type memTarget struct {
	mu     sync.RWMutex
	m      map[string][]byte
	gets   atomic.Uint64
	puts   atomic.Uint64
	failOn string // key whose operations fail
	closed bool
}

func newMemTarget() *memTarget { return &memTarget{m: map[string][]byte{}} }

func (t *memTarget) Name() string       { return "mem" }
func (t *memTarget) Durability() string { return "none" }
func (t *memTarget) Close() error       { t.closed = true; return nil }

func (t *memTarget) Get(_ context.Context, _ int, key string) error {
	t.gets.Add(1)
	if key == t.failOn {
		return errors.New("boom")
	}
	t.mu.RLock()
	_ = t.m[key]
	t.mu.RUnlock()
	return nil
}

func (t *memTarget) Put(_ context.Context, _ int, key string, value []byte) error {
	t.puts.Add(1)
	if key == t.failOn {
		return errors.New("boom")
	}
	t.mu.Lock()
	t.m[key] = value
	t.mu.Unlock()
	return nil
}

func (t *memTarget) CacheCounts() (hits, misses uint64) { return t.gets.Load(), 0 }

func TestRunMix(t *testing.T) {
	for _, tc := range []struct {
		name     string
		read     float64
		duration time.Duration
	}{{"A", 0.5, 1100 * time.Millisecond}, {"B", 0.95, 300 * time.Millisecond}, {"C", 1, 300 * time.Millisecond}, {"W", 0, 300 * time.Millisecond}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tgt := newMemTarget()
			var progress bytes.Buffer
			res, err := Run(context.Background(), tgt, Workload{Name: tc.name, Distribution: Uniform, Keys: 50, ValueSize: 8, Clients: 4, Duration: tc.duration, Warmup: 100 * time.Millisecond, Seed: 5}, &progress)
			if err != nil {
				t.Fatal(err)
			}
			if len(tgt.m) != 50 {
				t.Errorf("load wrote %d keys, want 50", len(tgt.m))
			}
			if res.Ops == 0 || res.Ops != res.Reads+res.Updates || res.Errors != 0 {
				t.Fatalf("ops %d reads %d updates %d errors %d", res.Ops, res.Reads, res.Updates, res.Errors)
			}
			if got := float64(res.Reads) / float64(res.Ops); math.Abs(got-tc.read) > 0.02 {
				t.Errorf("read share %.3f, want %.2f", got, tc.read)
			}
			if res.Duration < tc.duration || res.Duration > tc.duration+time.Second {
				t.Errorf("measured %v, want about %v", res.Duration, tc.duration)
			}
			if math.Abs(res.OpsPerSec-float64(res.Ops)/res.Duration.Seconds()) > 1 {
				t.Errorf("ops/s %v inconsistent with %d ops in %v", res.OpsPerSec, res.Ops, res.Duration)
			}
			if res.Target != "mem" || res.Workload != tc.name || res.Distribution != Uniform || res.Clients != 4 || res.Durability != "none" {
				t.Errorf("labels: %+v", res)
			}
			if tc.read > 0 {
				if res.CacheHitRatio == nil || *res.CacheHitRatio != 1 {
					t.Errorf("hit ratio %v, want 1", res.CacheHitRatio)
				}
				if res.CacheHits < res.Reads {
					t.Errorf("cache hits %d < measured reads %d", res.CacheHits, res.Reads)
				}
				if res.ReadLatency.P50 <= 0 || res.ReadLatency.P99 < res.ReadLatency.P50 || res.ReadLatency.P999 < res.ReadLatency.P99 {
					t.Errorf("read latency %+v", res.ReadLatency)
				}
			} else if res.CacheHitRatio != nil || res.Reads != 0 {
				t.Errorf("W: reads %d, hit ratio %v", res.Reads, *res.CacheHitRatio)
			}
			if tc.read < 1 && res.UpdateLatency.P50 <= 0 {
				t.Errorf("update latency %+v", res.UpdateLatency)
			}
			if !strings.Contains(progress.String(), "loaded 50 keys") || (tc.duration > time.Second && !strings.Contains(progress.String(), "measured")) {
				t.Errorf("progress:\n%s", progress.String())
			}
		})
	}
}

func TestRunCountsErrors(t *testing.T) {
	tgt := newMemTarget()
	tgt.failOn = KeyName(3)
	_, err := Run(context.Background(), tgt, Workload{Name: "C", Distribution: Uniform, Keys: 10, Clients: 2, Duration: 200 * time.Millisecond}, nil)
	if err == nil || !strings.Contains(err.Error(), "load") {
		t.Fatalf("a failing load returned %v, want a load error", err)
	}
	res, err := Run(context.Background(), tgt, Workload{Name: "C", Distribution: Uniform, Keys: 10, Clients: 2, Duration: 300 * time.Millisecond, SkipLoad: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors == 0 || res.FirstError != "boom" || res.Ops == 0 {
		t.Fatalf("errors %d first %q ops %d, want about a tenth of the ops failed with boom", res.Errors, res.FirstError, res.Ops)
	}
	if frac := float64(res.Errors) / float64(res.Errors+res.Ops); frac < 0.05 || frac > 0.15 {
		t.Fatalf("error share %.3f, want about 0.1", frac)
	}
}

func TestRunCanceled(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := Run(ctx, newMemTarget(), Workload{Name: "A", Keys: 10, Clients: 2, Duration: time.Hour}, nil)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Fatalf("Run returned %v after %v, want the context's error soon", err, time.Since(start))
	}
}

func TestWorkloadValidation(t *testing.T) {
	for _, w := range []Workload{
		{Name: "D"},
		{Name: "A", Distribution: "latest"},
		{Name: "A", Clients: -1},
		{Name: "A", Keys: -3},
		{Name: "A", Warmup: -time.Second},
	} {
		if _, err := Run(context.Background(), newMemTarget(), w, nil); err == nil {
			t.Errorf("%+v accepted", w)
		}
	}
	w, err := Workload{Name: "b"}.normalize()
	if err != nil || w.Name != "B" || w.Distribution != Zipf || w.Keys != DefaultKeys || w.ValueSize != DefaultValueSize || w.Clients != DefaultClients || w.Duration != DefaultDuration {
		t.Fatalf("defaults: %+v, %v", w, err)
	}
}

// TestSameSeedSameSequence: client i's operations and keys depend only on
// the seed and i.
func TestSameSeedSameSequence(t *testing.T) {
	w, _ := Workload{Name: "A"}.normalize()
	ks := newKeySpace(w)
	seq := func(seed uint64, client int) []int {
		r := clientRand(seed, client)
		out := make([]int, 100)
		for i := range out {
			out[i] = ks.next(r)
			if r.Float64() < 0.5 {
				out[i] = -out[i] - 1
			}
		}
		return out
	}
	a, b, c, d := seq(1, 0), seq(1, 0), seq(1, 1), seq(2, 0)
	for i := range a {
		if a[i] != b[i] {
			t.Fatal("same seed and client, different sequences")
		}
	}
	same := func(x, y []int) bool {
		for i := range x {
			if x[i] != y[i] {
				return false
			}
		}
		return true
	}
	if same(a, c) || same(a, d) {
		t.Fatal("different clients or seeds, same sequence")
	}
}

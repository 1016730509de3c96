package linearizability

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock returns a clock that advances by 10ns on every reading.
func fakeClock() func() time.Time {
	var n atomic.Int64
	base := time.Unix(1_000_000, 0)
	return func() time.Time { return base.Add(time.Duration(n.Add(10))) }
}

func TestRecorderFakeClock(t *testing.T) {
	r := NewRecorder(fakeClock()) // start = reading 1
	p := r.Begin(0, Input{Kind: Put, Key: "x", Value: "1"})
	p.End(Output{Value: "ignored", Found: true})
	g := r.Begin(1, Input{Kind: Get, Key: "x"})
	g.End(Output{Value: "1", Found: true})
	a := r.Begin(1, Input{Kind: Get, Key: "x"})
	a.End(Output{Value: "stale", Found: false}) // value dropped when not found
	u := r.Begin(2, Input{Kind: Put, Key: "x", Value: "2"})
	u.EndUnknown()
	ug := r.Begin(3, Input{Kind: Get, Key: "x"})
	ug.EndUnknown() // a read with unknown outcome is dropped
	d := r.Begin(4, Input{Kind: Delete, Key: "x"})
	d.Drop()
	e := r.Begin(5, Input{Kind: Delete, Key: "x"})
	e.End(Output{Unknown: true, Err: "kvstore: timed out"})

	want := []Op{
		{ClientID: 0, Input: Input{Kind: Put, Key: "x", Value: "1"}, Output: Output{}, Call: 10, Return: 20},
		{ClientID: 1, Input: Input{Kind: Get, Key: "x"}, Output: Output{Value: "1", Found: true}, Call: 30, Return: 40},
		{ClientID: 1, Input: Input{Kind: Get, Key: "x"}, Output: Output{}, Call: 50, Return: 60},
		{ClientID: 2, Input: Input{Kind: Put, Key: "x", Value: "2"}, Output: Output{Unknown: true}, Call: 70, Return: Infinity},
		{ClientID: 5, Input: Input{Kind: Delete, Key: "x"}, Output: Output{Unknown: true, Err: "kvstore: timed out"}, Call: 100, Return: Infinity},
	}
	if got := r.History(); !slices.Equal(got, want) {
		t.Fatalf("history:\n got %+v\nwant %+v", got, want)
	}
}

func TestRecorderPendingWritesAreUnknown(t *testing.T) {
	r := NewRecorder(fakeClock())
	r.Begin(0, Input{Kind: Put, Key: "x", Value: "1"})
	r.Begin(1, Input{Kind: Get, Key: "x"})
	h := r.History()
	if len(h) != 1 || !h[0].Output.Unknown || h[0].Return != Infinity || h[0].Input.Value != "1" {
		t.Fatalf("pending put should appear as unknown, pending get not at all: %+v", h)
	}
}

func TestRecorderDoubleFinishPanics(t *testing.T) {
	r := NewRecorder(fakeClock())
	p := r.Begin(0, Input{Kind: Put, Key: "x", Value: "1"})
	p.End(Output{})
	defer func() {
		if recover() == nil {
			t.Fatal("second End did not panic")
		}
	}()
	p.Drop()
}

func TestRecorderBeginInvalidPanics(t *testing.T) {
	r := NewRecorder(nil)
	defer func() {
		if recover() == nil {
			t.Fatal("Begin with the zero kind did not panic")
		}
	}()
	r.Begin(0, Input{Key: "x"})
}

// memStore is a linearizable store: every operation takes effect atomically
// under the mutex, between Begin and End.
type memStore struct {
	mu sync.Mutex
	m  map[string]string
}

func (s *memStore) do(in Input) Output {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch in.Kind {
	case Get:
		v, ok := s.m[in.Key]
		return Output{Value: v, Found: ok}
	case Put:
		s.m[in.Key] = in.Value
	case Delete:
		delete(s.m, in.Key)
	}
	return Output{}
}

// TestRecorderConcurrent runs clients against a linearizable in-memory store
// with the real clock, including writes that "time out" and are applied
// late, after the client moved on, or never, and reads that fail. History is
// taken concurrently. The recorded history must be linearizable, and the
// final state must pass Durability. Run it with -race.
func TestRecorderConcurrent(t *testing.T) {
	const clients, perClient = 8, 150
	keys := []string{"a", "b", "c"}
	store := &memStore{m: make(map[string]string)}
	r := NewRecorder(nil)

	var late sync.WaitGroup
	var wg sync.WaitGroup
	stop := make(chan struct{})
	snapshots := make(chan int)
	go func() { // read the history while it is being written
		n := 0
		for {
			select {
			case <-stop:
				snapshots <- n
				return
			default:
				_ = r.History()
				n++
				time.Sleep(time.Millisecond)
			}
		}
	}()
	var recorded atomic.Int64
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(c), 7))
			for i := range perClient {
				key := keys[rng.IntN(len(keys))]
				var in Input
				switch x := rng.IntN(10); {
				case x < 5:
					in = Input{Kind: Get, Key: key}
				case x < 9:
					in = Input{Kind: Put, Key: key, Value: fmt.Sprintf("c%d-%d", c, i)}
				default:
					in = Input{Kind: Delete, Key: key}
				}
				p := r.Begin(c, in)
				switch x := rng.IntN(20); {
				case x == 0 && in.Kind.IsWrite():
					// Time-out; the write is applied later, concurrently
					// with this client's next operations.
					p.EndUnknown()
					recorded.Add(1)
					late.Add(1)
					delay := time.Duration(rng.IntN(3)) * time.Millisecond
					go func() {
						defer late.Done()
						time.Sleep(delay)
						store.do(in)
					}()
				case x == 1 && in.Kind.IsWrite():
					store.do(in) // applied, but the reply is lost
					p.EndUnknown()
					recorded.Add(1)
				case x == 2:
					// Rejected before being applied, or a failed read.
					p.Drop()
				case x == 3 && in.Kind.IsWrite():
					p.EndUnknown() // never applied
					recorded.Add(1)
				default:
					p.End(store.do(in))
					recorded.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	late.Wait()
	close(stop)
	t.Logf("%d concurrent History snapshots", <-snapshots)

	h := r.History()
	// Reads with unknown outcome are dropped by the recorder; every other
	// finished operation is recorded.
	if int64(len(h)) != recorded.Load() {
		t.Fatalf("history has %d ops, recorded %d", len(h), recorded.Load())
	}
	for i := 1; i < len(h); i++ {
		if h[i].Call < h[i-1].Call {
			t.Fatalf("history not sorted by call time at %d", i)
		}
	}
	res := Check(context.Background(), h, time.Minute, VisualizationDir(t.TempDir()))
	t.Log(res)
	if !res.Ok {
		t.Fatalf("linearizable store judged %v", res)
	}

	final := make(map[string]FinalValue)
	for k, v := range store.m {
		final[k] = FinalValue{Value: v, Found: true}
	}
	if err := Durability(h, final); err != nil {
		t.Fatal(err)
	}
	res = Check(context.Background(), AppendFinalReads(h, final, clients), time.Minute, VisualizationDir(t.TempDir()))
	if !res.Ok {
		t.Fatalf("with final reads: %v", res)
	}
}

// TestRecorderCatchesStaleRead: a store bug observed through the recorder
// (fake clock, so deterministic) is reported on the right key.
func TestRecorderCatchesStaleRead(t *testing.T) {
	r := NewRecorder(fakeClock())
	r.Begin(0, Input{Kind: Put, Key: "k", Value: "1"}).End(Output{})
	r.Begin(1, Input{Kind: Put, Key: "other", Value: "o"}).End(Output{})
	r.Begin(1, Input{Kind: Put, Key: "k", Value: "2"}).End(Output{})
	r.Begin(0, Input{Kind: Get, Key: "other"}).End(Output{Value: "o", Found: true})
	r.Begin(0, Input{Kind: Get, Key: "k"}).End(Output{Value: "1", Found: true}) // stale
	res := Check(context.Background(), r.History(), time.Minute, VisualizationDir(t.TempDir()))
	if res.Ok || res.Unknown || !slices.Equal(res.IllegalKeys, []string{"k"}) || res.Visualization == "" {
		t.Fatalf("stale read: got %v", res)
	}
}

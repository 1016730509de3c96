package memtransport

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kvstore/kvstore/rpc/kvpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpcpeer "google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// recorder is a Peer service that records the Writes it is given, in
// order, and answers each with a response it keeps (to mutate later).
type recorder struct {
	kvpb.UnimplementedPeerServer
	mu    sync.Mutex
	reqs  []*kvpb.WriteRequest
	resps []*kvpb.WriteResponse
	block chan struct{} // if not nil, Write waits for it (or its ctx)
	ended []error       // ctx.Err() of blocked calls once they end
}

func (r *recorder) Write(ctx context.Context, req *kvpb.WriteRequest) (*kvpb.WriteResponse, error) {
	if r.block != nil {
		select {
		case <-r.block:
		case <-ctx.Done():
			r.mu.Lock()
			r.ended = append(r.ended, ctx.Err())
			r.mu.Unlock()
			return nil, ctx.Err()
		}
	}
	resp := &kvpb.WriteResponse{Epoch: 7}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reqs = append(r.reqs, req)
	r.resps = append(r.resps, resp)
	return resp, nil
}

func (r *recorder) keys() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ks []string
	for _, q := range r.reqs {
		ks = append(ks, q.Key)
	}
	return ks
}

func setup(t *testing.T) (*Network, *recorder, kvpb.PeerClient) {
	t.Helper()
	nw := New(1)
	r := &recorder{}
	nw.Register("b", r)
	c, err := nw.Endpoint("a").Peer("b")
	if err != nil {
		t.Fatal(err)
	}
	return nw, r, c
}

// TestDeliversCopies: a call reaches the service at the address with a
// copy of the request and returns a copy of the answer, reporting the
// peer it reached.
func TestDeliversCopies(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, r, c := setup(t)
		req := &kvpb.WriteRequest{Key: "k"}
		var p grpcpeer.Peer
		resp, err := c.Write(t.Context(), req, grpc.Peer(&p))
		if err != nil || resp.Epoch != 7 {
			t.Fatalf("Write = %v, %v", resp, err)
		}
		if p.Addr == nil || p.Addr.String() != "b" {
			t.Fatalf("peer = %v, want b", p.Addr)
		}
		req.Key = "changed"
		r.resps[0].Epoch = 8
		if r.reqs[0] == req || r.reqs[0].Key != "k" || resp.Epoch != 7 {
			t.Fatalf("messages shared between caller and service: service saw %q, caller got epoch %d", r.reqs[0].Key, resp.Epoch)
		}
	})
}

// TestRefusedWithoutService: a call to an address with no service fails
// at once with Unavailable and reports no peer (the request never left).
func TestRefusedWithoutService(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := New(1)
		c, _ := nw.Endpoint("a").Peer("nobody")
		var p grpcpeer.Peer
		start := time.Now()
		_, err := c.Write(t.Context(), &kvpb.WriteRequest{}, grpc.Peer(&p))
		if status.Code(err) != codes.Unavailable || p.Addr != nil || time.Since(start) != 0 {
			t.Fatalf("Write to no service = %v, peer %v after %v; want Unavailable at once, no peer", err, p.Addr, time.Since(start))
		}
		if nw.Stats().Refused != 1 {
			t.Fatalf("stats %+v, want one refused", nw.Stats())
		}
	})
}

// TestCutEachDirection: a cut request direction delivers nothing, a cut
// reply direction delivers the request but loses the answer; either way
// the call waits for its deadline and reports the peer as reached.
func TestCutEachDirection(t *testing.T) {
	for _, tc := range []struct {
		from, to  string
		delivered int
	}{{"a", "b", 0}, {"b", "a", 1}} {
		synctest.Test(t, func(t *testing.T) {
			nw, r, c := setup(t)
			nw.Cut(tc.from, tc.to, true)
			ctx, cancel := context.WithTimeout(t.Context(), time.Second)
			defer cancel()
			var p grpcpeer.Peer
			start := time.Now()
			_, err := c.Write(ctx, &kvpb.WriteRequest{Key: "k"}, grpc.Peer(&p))
			if status.Code(err) != codes.DeadlineExceeded || time.Since(start) != time.Second || p.Addr == nil {
				t.Fatalf("cut %s->%s: %v after %v, peer %v; want DeadlineExceeded after 1s, peer set", tc.from, tc.to, err, time.Since(start), p.Addr)
			}
			if got := len(r.keys()); got != tc.delivered {
				t.Fatalf("cut %s->%s: %d requests delivered, want %d", tc.from, tc.to, got, tc.delivered)
			}
			nw.Cut(tc.from, tc.to, false)
			if _, err := c.Write(t.Context(), &kvpb.WriteRequest{}); err != nil {
				t.Fatalf("after the heal: %v", err)
			}
		})
	}
}

// TestDelayEachDirection: a call takes the delay of the request's
// direction plus that of the reply's.
func TestDelayEachDirection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw, _, c := setup(t)
		nw.SetFaults("a", "b", Faults{Delay: 100 * time.Millisecond})
		nw.SetFaults("b", "a", Faults{Delay: 30 * time.Millisecond})
		start := time.Now()
		if _, err := c.Write(t.Context(), &kvpb.WriteRequest{}); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d != 130*time.Millisecond {
			t.Fatalf("call took %v, want 130ms", d)
		}
	})
}

// TestDuplicate: a duplicated request reaches the service twice; the
// caller gets one answer.
func TestDuplicate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw, r, c := setup(t)
		nw.SetFaults("a", "b", Faults{Duplicate: 1, Delay: time.Millisecond})
		if _, err := c.Write(t.Context(), &kvpb.WriteRequest{Key: "k"}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		if ks := r.keys(); len(ks) != 2 {
			t.Fatalf("service saw %v, want the request twice", ks)
		}
	})
}

// TestCloseLosesDuplicates: closing the network loses the duplicates
// still on their way, so none of its goroutines outlives it (the bubble
// would not end).
func TestCloseLosesDuplicates(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw, r, c := setup(t)
		nw.SetFaults("a", "b", Faults{Duplicate: 1, Jitter: time.Hour})
		for range 10 {
			if _, err := c.Write(t.Context(), &kvpb.WriteRequest{}); err != nil {
				t.Fatal(err)
			}
		}
		nw.Close()
		if n := len(r.keys()); n >= 20 {
			t.Fatalf("%d deliveries: the duplicates arrived before Close", n)
		}
	})
}

// TestReorder: a request held back is overtaken by one sent after it.
func TestReorder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw, r, c := setup(t)
		nw.SetFaults("a", "b", Faults{Reorder: 1, ReorderDelay: 50 * time.Millisecond})
		var wg sync.WaitGroup
		wg.Go(func() { _, _ = c.Write(t.Context(), &kvpb.WriteRequest{Key: "first"}) })
		synctest.Wait() // the first is on its way, held back
		nw.SetFaults("a", "b", Faults{})
		wg.Go(func() { _, _ = c.Write(t.Context(), &kvpb.WriteRequest{Key: "second"}) })
		wg.Wait()
		if ks := r.keys(); len(ks) != 2 || ks[0] != "second" {
			t.Fatalf("arrival order %v, want second first", ks)
		}
	})
}

// TestDropRate: each message is lost with the link's probability, drawn
// from the network's seed.
func TestDropRate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw, r, c := setup(t)
		nw.SetFaults("a", "b", Faults{Drop: 0.5})
		const calls = 1000
		failed := 0
		for range calls {
			ctx, cancel := context.WithTimeout(t.Context(), time.Millisecond)
			if _, err := c.Write(ctx, &kvpb.WriteRequest{}); err != nil {
				failed++
			}
			cancel()
		}
		if failed < 400 || failed > 600 || failed+len(r.keys()) != calls {
			t.Fatalf("%d of %d calls lost, %d delivered; want about half lost", failed, calls, len(r.keys()))
		}
	})
}

// TestContextEnds: the end of the caller's context returns the call at
// once with its status and ends the service's context; closing the
// endpoint ends its calls in flight with Canceled and refuses new ones.
func TestContextEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw, r, c := setup(t)
		r.block = make(chan struct{})
		ctx, cancel := context.WithCancel(t.Context())
		errc := make(chan error, 1)
		go func() {
			_, err := c.Write(ctx, &kvpb.WriteRequest{})
			errc <- err
		}()
		synctest.Wait()
		cancel()
		if err := <-errc; status.Code(err) != codes.Canceled {
			t.Fatalf("canceled call = %v, want Canceled", err)
		}
		synctest.Wait()
		if len(r.ended) != 1 {
			t.Fatalf("service's context not ended: %v", r.ended)
		}

		e := nw.Endpoint("a")
		c2, _ := e.Peer("b")
		go func() {
			_, err := c2.Write(t.Context(), &kvpb.WriteRequest{})
			errc <- err
		}()
		synctest.Wait()
		e.Close()
		if err := <-errc; status.Code(err) != codes.Canceled {
			t.Fatalf("call through a closed endpoint = %v, want Canceled", err)
		}
		if _, err := e.Peer("b"); err == nil {
			t.Fatal("a closed endpoint hands out clients")
		}
	})
}

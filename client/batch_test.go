package client_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/client"
	"github.com/kvstore/kvstore/internal/soon"
	"github.com/kvstore/kvstore/robustness/linearizability"
	"github.com/kvstore/kvstore/robustness/workload"
	"github.com/kvstore/kvstore/rpc"
	"github.com/kvstore/kvstore/rpc/kvpb"
)

// oneClient is the workload's view of a single Go client: every worker
// shares it, so that its calls to a node go out in batches.
type oneClient struct{ c *client.Client }

func (o oneClient) Size() int { return 1 }
func (o oneClient) Get(ctx context.Context, _ int, key string) (string, bool, error) {
	return o.c.Get(ctx, key)
}
func (o oneClient) Put(ctx context.Context, _ int, key, value string) error {
	return o.c.Put(ctx, key, value)
}
func (o oneClient) Delete(ctx context.Context, _ int, key string) error {
	return o.c.Delete(ctx, key)
}

// carried counts how one client's operations travelled: Batch calls and
// stream messages, and the operations they carried.
type carried struct{ batches, batched, messages, streamed int64 }

// batchedHistory runs 24 workers through one client on a 3-node cluster
// for d and returns their history and how the client's calls travelled;
// without streams, the client's reads go in batches too.
func batchedHistory(t *testing.T, d time.Duration, seed uint64, streams bool) ([]linearizability.Op, carried) {
	t.Helper()
	c := newCluster(t, 3)
	cl := newClient(t, addr(t, c, 0), addr(t, c, 1), addr(t, c, 2))
	if !streams {
		client.NoStreams(cl)
	}
	// Warm up: a leader serves, and the client knows it.
	if err := cl.Put(ctxT(t, 10*time.Second), "warm-up", "x"); err != nil {
		t.Fatal(err)
	}
	rec := linearizability.NewRecorder(nil)
	rec.Start()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	w := workload.Workload{Clients: 24, Keys: 16, OpTimeout: 5 * time.Second, Pause: time.Millisecond, Seed: seed}
	st := w.Run(ctx, oneClient{cl}, rec)
	var n carried
	n.batches, n.batched = client.BatchStats(cl)
	n.messages, n.streamed = client.StreamStats(cl)
	t.Logf("%d ops (%d failed, %d unknown); %d batches carried %d of them, %d stream messages %d", st.Ops, st.Failed, st.Unknown, n.batches, n.batched, n.messages, n.streamed)
	return rec.History(), n
}

// TestBatchedCallsAreLinearizable: one client's concurrent calls travel
// together on streams, answered out of order (or in batches, to a node
// without streams), and what its callers see is still linearizable.
func TestBatchedCallsAreLinearizable(t *testing.T) {
	for _, streams := range []bool{true, false} {
		t.Run(fmt.Sprintf("streams=%v", streams), func(t *testing.T) {
			h, n := batchedHistory(t, 2*time.Second, 1, streams)
			if !streams && (n.batches == 0 || n.batched < 2*n.batches) {
				t.Fatalf("%d batches carried %d operations: the test did not batch", n.batches, n.batched)
			}
			if streams && (n.messages == 0 || n.streamed <= n.messages) {
				t.Fatalf("%d stream messages carried %d operations: the test did not stream several at once", n.messages, n.streamed)
			}
			if !streams && n.messages != 0 {
				t.Fatalf("%d stream messages without streams", n.messages)
			}
			res := linearizability.Check(context.Background(), h, time.Minute)
			if !res.Ok {
				t.Fatalf("%v", res)
			}
		})
	}
}

// TestBatchingCheckerCatchesMixedAnswers is the proof that the test above
// has teeth: with each batch's answers, or each stream message's, handed
// to the wrong callers, the history is not linearizable.
func TestBatchingCheckerCatchesMixedAnswers(t *testing.T) {
	for name, fault := range map[string]func(bool){
		"batch":  client.SetFaultRotateAnswers,
		"stream": client.SetFaultRotateStreamAnswers,
	} {
		t.Run(name, func(t *testing.T) {
			fault(true)
			defer fault(false)
			for attempt := 1; attempt <= 3; attempt++ {
				h, _ := batchedHistory(t, 2*time.Second, uint64(attempt), name == "stream")
				res := linearizability.Check(context.Background(), h, time.Minute)
				if !res.Ok && !res.Unknown {
					t.Logf("caught at attempt %d: %v", attempt, res)
					return
				}
			}
			t.Fatal("answers given to the wrong callers went unnoticed in 3 attempts")
		})
	}
}

// batchNode is a node stand-in whose Gets wait until released, so that calls
// queue in the client; it may refuse batches.
type batchNode struct {
	kvpb.UnimplementedKVServer
	release   chan struct{}
	batchErr  error // Batch answers with this, if set
	noBatch   bool  // Batch is unimplemented (an older node)
	gets      atomic.Int64
	batchOps  atomic.Int64
	batchCall atomic.Int64
}

func (f *batchNode) Get(ctx context.Context, req *kvpb.GetRequest) (*kvpb.GetResponse, error) {
	f.gets.Add(1)
	select {
	case <-f.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return &kvpb.GetResponse{Value: "v-" + req.Key, Found: true}, nil
}

func (f *batchNode) Batch(ctx context.Context, req *kvpb.BatchRequest) (*kvpb.BatchResponse, error) {
	f.batchCall.Add(1)
	if f.noBatch {
		return nil, status.Error(codes.Unimplemented, "unknown method Batch")
	}
	if f.batchErr != nil {
		if _, ok := status.FromError(f.batchErr); ok {
			return nil, f.batchErr
		}
		return nil, rpc.ToStatus(f.batchErr)
	}
	f.batchOps.Add(int64(len(req.Ops)))
	resp := &kvpb.BatchResponse{}
	for _, op := range req.Ops {
		key := op.GetGet().GetKey()
		if key == "refused" {
			resp.Results = append(resp.Results, &kvpb.BatchResult{Error: rpc.MarshalStatus(fmt.Errorf("%w: no", kvstore.ErrBadRequest))})
			continue
		}
		resp.Results = append(resp.Results, &kvpb.BatchResult{Get: &kvpb.GetResponse{Value: "v-" + key, Found: true}})
	}
	return resp, nil
}

func startBatchNode(t *testing.T, f *batchNode) string { return serveKV(t, f) }

// serveKV serves kv as a node's client service on a loopback port and
// returns its address.
func serveKV(t *testing.T, kv kvpb.KVServer) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	kvpb.RegisterKVServer(srv, kv)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// queuedGets starts two Gets that hold the client's calls in flight, then
// n more that queue behind them, releases the first two, and returns every
// Get's value and error by key.
func queuedGets(t *testing.T, f *batchNode, keys ...string) map[string]error {
	t.Helper()
	cl := newClient(t, startBatchNode(t, f))
	var mu sync.Mutex
	errs := map[string]error{}
	var wg sync.WaitGroup
	get := func(key string) {
		defer wg.Done()
		v, _, err := cl.Get(ctxT(t, 10*time.Second), key)
		if err == nil && v != "v-"+key {
			err = fmt.Errorf("got %q, want %q", v, "v-"+key)
		}
		mu.Lock()
		errs[key] = err
		mu.Unlock()
	}
	wg.Add(2)
	go get("first")
	go get("second")
	soon.Succeeds(t, 10*time.Second, func() error {
		if n := f.gets.Load(); n < 2 {
			return fmt.Errorf("the node has %d of the first two Gets", n)
		}
		return nil
	})
	wg.Add(len(keys))
	for _, k := range keys {
		go get(k)
	}
	soon.Succeeds(t, 10*time.Second, func() error {
		if n := client.Queued(cl); n != len(keys) {
			return fmt.Errorf("%d calls queued in the client, want %d", n, len(keys))
		}
		return nil
	})
	if got := f.gets.Load() + f.batchCall.Load(); got != 2 {
		t.Errorf("the node saw %d calls before the first two returned, want 2", got)
	}
	close(f.release)
	wg.Wait()
	return errs
}

// TestBatchCarriesQueuedCallsAndTheirOwnErrors: calls that arrive while
// two are in flight leave together in one Batch, and each caller gets its
// own answer: its value, or the error the node gave that operation alone.
func TestBatchCarriesQueuedCallsAndTheirOwnErrors(t *testing.T) {
	f := &batchNode{release: make(chan struct{})}
	errs := queuedGets(t, f, "a", "b", "refused", "c")
	for _, k := range []string{"first", "second", "a", "b", "c"} {
		if errs[k] != nil {
			t.Errorf("get %s: %v", k, errs[k])
		}
	}
	if !errors.Is(errs["refused"], client.ErrBadRequest) {
		t.Errorf("get refused: %v, want ErrBadRequest", errs["refused"])
	}
	if f.batchCall.Load() != 1 || f.batchOps.Load() != 4 {
		t.Errorf("%d batches of %d operations in all, want 1 of 4", f.batchCall.Load(), f.batchOps.Load())
	}
}

// TestBatchFallsBackToSingleCalls: a node that does not know Batch (an
// older version), and a batch over the node's request or in-flight limit
// or over gRPC's message size limit, get the operations one by one, and
// every call succeeds.
func TestBatchFallsBackToSingleCalls(t *testing.T) {
	for name, f := range map[string]*batchNode{
		"unimplemented": {noBatch: true},
		"too large":     {batchErr: fmt.Errorf("%w: request of 2000000 bytes", kvstore.ErrTooLarge)},
		"busy":          {batchErr: fmt.Errorf("%w: too many requests in flight", kvstore.ErrBusy)},
		// gRPC's own message size limit, as for the answers of many
		// large values: no sentinel of the node's.
		"answer too large": {batchErr: status.Error(codes.ResourceExhausted, "received message larger than max")},
	} {
		t.Run(name, func(t *testing.T) {
			f.release = make(chan struct{})
			errs := queuedGets(t, f, "a", "b", "c")
			for k, err := range errs {
				if err != nil {
					t.Errorf("get %s: %v", k, err)
				}
			}
			if f.gets.Load() != 5 {
				t.Errorf("the node answered %d single Gets, want 5", f.gets.Load())
			}
		})
	}
}

// TestNodeAnswersEachBatchOperation: a node runs every operation of a
// batch as if it came alone and answers each in order: values, the
// leader's address for a write, and the error only that operation had.
func TestNodeAnswersEachBatchOperation(t *testing.T) {
	c := newCluster(t, 3)
	cl := newClient(t, addr(t, c, 1))
	if err := cl.Put(ctxT(t, 10*time.Second), "there", "v"); err != nil {
		t.Fatal(err)
	}
	cc := rawConn(t, addr(t, c, 1))
	get := func(k string) *kvpb.BatchOp {
		return &kvpb.BatchOp{Op: &kvpb.BatchOp_Get{Get: &kvpb.GetRequest{Key: k}}}
	}
	resp, err := kvpb.NewKVClient(cc).Batch(ctxT(t, 10*time.Second), &kvpb.BatchRequest{Ops: []*kvpb.BatchOp{
		get("there"),
		{Op: &kvpb.BatchOp_Put{Put: &kvpb.PutRequest{Key: "new", Value: "w", RequestId: "batch-test.1"}}},
		get(strings.Repeat("k", 5000)), // over MaxKeySize
		{},                             // no operation
		get("absent"),
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Results) != 5 {
		t.Fatalf("%d results for 5 operations", len(resp.Results))
	}
	r := resp.Results
	errOf := func(i int) error { return rpc.FromStatus(rpc.UnmarshalStatus(r[i].GetError())) }
	switch {
	case errOf(0) != nil || r[0].GetGet().GetValue() != "v" || !r[0].GetGet().GetFound():
		t.Errorf("get there: %v %v", r[0], errOf(0))
	case errOf(1) != nil || r[1].GetPut().GetLeaderAddr() == "":
		t.Errorf("put new: %v %v", r[1], errOf(1))
	case !errors.Is(errOf(2), kvstore.ErrTooLarge):
		t.Errorf("get of a long key: %v, want ErrTooLarge", errOf(2))
	case !errors.Is(errOf(3), kvstore.ErrBadRequest):
		t.Errorf("empty operation: %v, want ErrBadRequest", errOf(3))
	case errOf(4) != nil || r[4].GetGet().GetFound():
		t.Errorf("get absent: %v %v", r[4], errOf(4))
	}
	if v, found, err := cl.Get(ctxT(t, 10*time.Second), "new"); err != nil || !found || v != "w" {
		t.Errorf("the batch's put: get new = %q %v %v", v, found, err)
	}

	// A read the node's cache answers is answered in place, beside one
	// that must fetch: both right, and the first counted as a hit.
	nd, err := c.Node(1)
	if err != nil {
		t.Fatal(err)
	}
	soon.Succeeds(t, 30*time.Second, func() error {
		if _, _, err := cl.Get(ctxT(t, 10*time.Second), "there"); err != nil { // cache it at node 1
			return err
		}
		hits := nd.Stats().CacheHits
		resp, err := kvpb.NewKVClient(cc).Batch(ctxT(t, 10*time.Second), &kvpb.BatchRequest{Ops: []*kvpb.BatchOp{
			get("there"), get(fmt.Sprintf("uncached-%d", hits)),
		}})
		if err != nil {
			return err
		}
		r := resp.Results
		if r[0].GetGet().GetValue() != "v" || !r[0].GetGet().GetFound() || r[1].GetGet().GetFound() || r[0].Error != nil || r[1].Error != nil {
			t.Fatalf("a cached and an uncached read in one batch: %v", r)
		}
		if nd.Stats().CacheHits == hits {
			return errors.New("the batch's cached read was no hit (the copy's lease ended first?)")
		}
		return nil
	})
}

// TestOpNearItsDeadlineGoesAlone: an operation with little time left is
// not queued behind the calls in flight (a batch ends with its earliest
// operation's deadline): it goes out at once, alone.
func TestOpNearItsDeadlineGoesAlone(t *testing.T) {
	f := &batchNode{release: make(chan struct{})}
	cl := newClient(t, startBatchNode(t, f))
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(f.release)
	for _, k := range []string{"first", "second"} {
		wg.Go(func() { _, _, _ = cl.Get(ctxT(t, 10*time.Second), k) })
	}
	soon.Succeeds(t, 10*time.Second, func() error {
		if n := f.gets.Load(); n < 2 {
			return fmt.Errorf("the node has %d of the first two Gets", n)
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	wg.Go(func() { _, _, _ = cl.Get(ctx, "hurried") })
	soon.Succeeds(t, 10*time.Second, func() error {
		if n := f.gets.Load(); n != 3 {
			return fmt.Errorf("the node has %d single Gets, want 3", n)
		}
		return nil
	})
	if q := client.Queued(cl); q != 0 {
		t.Errorf("%d operations queued, want none", q)
	}
}

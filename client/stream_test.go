package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/client"
	"github.com/kvstore/kvstore/cluster"
	"github.com/kvstore/kvstore/faultproxy"
	"github.com/kvstore/kvstore/internal/soon"
	"github.com/kvstore/kvstore/rpc"
	"github.com/kvstore/kvstore/rpc/kvpb"
)

// rawConn is a plain gRPC connection to a node, for calls the Go client
// would not make.
func rawConn(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func openStream(t *testing.T, cc *grpc.ClientConn) kvpb.KV_StreamClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s, err := kvpb.NewKVClient(cc).Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func getOp(id uint64, key string) *kvpb.BatchOp {
	return &kvpb.BatchOp{Id: id, TimeoutUs: 10e6, Op: &kvpb.BatchOp_Get{Get: &kvpb.GetRequest{Key: key}}}
}

// answers reads response messages until every id in want is answered,
// and returns the answers by id and the messages' ids in arrival order.
func answers(t *testing.T, s kvpb.KV_StreamClient, want ...uint64) (map[uint64]*kvpb.BatchResult, [][]uint64) {
	t.Helper()
	got := map[uint64]*kvpb.BatchResult{}
	var msgs [][]uint64
	for len(got) < len(want) {
		resp, err := s.Recv()
		if err != nil {
			t.Fatalf("after %v: %v", msgs, err)
		}
		var ids []uint64
		for _, r := range resp.Results {
			if _, dup := got[r.Id]; dup {
				t.Fatalf("operation %d answered twice", r.Id)
			}
			got[r.Id] = r
			ids = append(ids, r.Id)
		}
		msgs = append(msgs, ids)
	}
	for _, id := range want {
		if got[id] == nil {
			t.Fatalf("no answer for operation %d; answers came as %v", id, msgs)
		}
	}
	return got, msgs
}

func resultErr(r *kvpb.BatchResult) error { return rpc.FromStatus(rpc.UnmarshalStatus(r.GetError())) }

// TestNodeAnswersEachStreamOperation: a node runs every operation of a
// stream as if it came alone and answers each under its id: values, the
// leader's address for a write, the error only that operation had; and a
// read its cache answers is answered at once, before one sent with it
// that waits for the leader.
func TestNodeAnswersEachStreamOperation(t *testing.T) {
	c := newCluster(t, 3)
	ldr, _, err := c.Leader(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	f := (ldr + 1) % 3
	cl := newClient(t, addr(t, c, f))
	if err := cl.Put(ctxT(t, 10*time.Second), "there", "v"); err != nil {
		t.Fatal(err)
	}
	s := openStream(t, rawConn(t, addr(t, c, f)))
	if err := s.Send(&kvpb.BatchRequest{Ops: []*kvpb.BatchOp{
		getOp(7, "there"),
		{Id: 8, Op: &kvpb.BatchOp_Put{Put: &kvpb.PutRequest{Key: "new", Value: "w", RequestId: "stream-test.1"}}},
		getOp(9, strings.Repeat("k", 5000)), // over MaxKeySize
		{Id: 10},                            // no operation
	}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Send(&kvpb.BatchRequest{Ops: []*kvpb.BatchOp{getOp(11, "absent")}}); err != nil {
		t.Fatal(err)
	}
	r, _ := answers(t, s, 7, 8, 9, 10, 11)
	switch {
	case resultErr(r[7]) != nil || r[7].GetGet().GetValue() != "v" || !r[7].GetGet().GetFound():
		t.Errorf("get there: %v %v", r[7], resultErr(r[7]))
	case resultErr(r[8]) != nil || r[8].GetPut().GetLeaderAddr() != addr(t, c, ldr):
		t.Errorf("put new: %v %v, want the leader's address %s", r[8], resultErr(r[8]), addr(t, c, ldr))
	case !errors.Is(resultErr(r[9]), kvstore.ErrTooLarge):
		t.Errorf("get of a long key: %v, want ErrTooLarge", resultErr(r[9]))
	case !errors.Is(resultErr(r[10]), kvstore.ErrBadRequest):
		t.Errorf("empty operation: %v, want ErrBadRequest", resultErr(r[10]))
	case resultErr(r[11]) != nil || r[11].GetGet().GetFound():
		t.Errorf("get absent: %v %v", r[11], resultErr(r[11]))
	}
	if v, found, err := cl.Get(ctxT(t, 10*time.Second), "new"); err != nil || !found || v != "w" {
		t.Errorf("the stream's put: get new = %q %v %v", v, found, err)
	}

	// With the leader's links slow, a read the follower must fetch takes
	// a round trip of them; a read of a key it holds, sent after it in the
	// same message, is answered first, in a message of its own.
	nd, err := c.Node(f)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetNodeDelay(ldr, 150*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	id := uint64(100)
	soon.Succeeds(t, 30*time.Second, func() error {
		if _, _, err := cl.Get(ctxT(t, 10*time.Second), "there"); err != nil { // cache it at f
			return err
		}
		hits := nd.Stats().CacheHits
		id += 2
		if err := s.Send(&kvpb.BatchRequest{Ops: []*kvpb.BatchOp{getOp(id, fmt.Sprintf("uncached-%d", id)), getOp(id+1, "there")}}); err != nil {
			t.Fatal(err)
		}
		r, msgs := answers(t, s, id, id+1)
		if resultErr(r[id]) != nil || r[id].GetGet().GetFound() || resultErr(r[id+1]) != nil || r[id+1].GetGet().GetValue() != "v" {
			t.Fatalf("an uncached and a cached read: %v", r)
		}
		if nd.Stats().CacheHits == hits {
			return errors.New("the cached read was no hit (the copy's lease ended first?)")
		}
		if len(msgs[0]) != 1 || msgs[0][0] != id+1 {
			return fmt.Errorf("answers came as %v: the cached read (%d) waited for the uncached one (%d)", msgs, id+1, id)
		}
		return nil
	})
}

// TestStreamOperationsOverLimits: on a stream, an operation over the
// node's request size limit is answered with ErrTooLarge and the stream
// goes on; a stream holding its connection's whole allowance of requests
// in flight makes a call beside it on that connection fail with ErrBusy,
// while its own next operation waits for a place instead of failing,
// unless its time runs out while it waits.
func TestStreamOperationsOverLimits(t *testing.T) {
	const allowed = 2
	c, ldr, cl := limitedLeader(t, allowed)
	cc := rawConn(t, addr(t, c, ldr))
	s := openStream(t, cc)
	if err := s.Send(&kvpb.BatchRequest{Ops: []*kvpb.BatchOp{getOp(1, strings.Repeat("k", testMaxRequest)), getOp(2, "k")}}); err != nil {
		t.Fatal(err)
	}
	r, _ := answers(t, s, 1, 2)
	if err := resultErr(r[1]); !errors.Is(err, kvstore.ErrTooLarge) || !strings.Contains(err.Error(), "MaxRequestSize") {
		t.Errorf("operation over MaxRequestSize: %v, want ErrTooLarge naming MaxRequestSize", err)
	}
	if resultErr(r[2]) != nil || r[2].GetGet().GetValue() != "v0" {
		t.Errorf("get k after it: %v %v", r[2], resultErr(r[2]))
	}

	// Slow writes (under the node-to-node timeout, 1 s) hold the
	// allowance.
	if err := c.SetNodeDelay(ldr, 400*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	put := func(id uint64, key string) *kvpb.BatchOp {
		return &kvpb.BatchOp{Id: id, TimeoutUs: 20e6, Op: &kvpb.BatchOp_Put{Put: &kvpb.PutRequest{Key: key, Value: "v", RequestId: fmt.Sprintf("limits.%d", id)}}}
	}
	late := put(6, "late")
	late.TimeoutUs = 100e3
	if err := s.Send(&kvpb.BatchRequest{Ops: []*kvpb.BatchOp{put(3, "slow3"), put(4, "slow4"), getOp(5, "k"), late}}); err != nil {
		t.Fatal(err)
	}
	kv := kvpb.NewKVClient(cc)
	soon.Succeeds(t, 5*time.Second, func() error {
		_, err := kv.Get(ctxT(t, 5*time.Second), &kvpb.GetRequest{Key: "k"})
		if err := rpc.FromStatus(err); !errors.Is(err, kvstore.ErrBusy) {
			return fmt.Errorf("a call beside the stream's slow writes: %v, want ErrBusy", err)
		}
		return nil
	})
	r, _ = answers(t, s, 3, 4, 5, 6)
	for id, res := range r {
		if err := resultErr(res); err != nil && id != 6 {
			t.Errorf("operation %d: %v", id, err)
		}
	}
	// The last waited for a place longer than its caller would wait: it
	// is answered so, and not run.
	if err := resultErr(r[6]); !errors.Is(err, kvstore.ErrTimeout) {
		t.Errorf("a write whose time ran out while it waited: %v, want ErrTimeout", err)
	}
	if err := c.SetNodeDelay(ldr, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(ctxT(t, 5*time.Second), &kvpb.GetRequest{Key: "k"}); err != nil {
		t.Errorf("a call once the stream's writes are done: %v", err)
	}
	if v, found, err := cl.Get(ctxT(t, 10*time.Second), "late"); err != nil || found {
		t.Errorf("get late = %q %v %v: the write that timed out before it started was run", v, found, err)
	}
}

// TestNodeStopEndsItsStreams: a node that stops ends its open streams
// with Unavailable (the Go client then retries elsewhere) instead of
// waiting for their clients to close them; the client's next read goes to
// another node.
func TestNodeStopEndsItsStreams(t *testing.T) {
	c := newCluster(t, 3)
	s := openStream(t, rawConn(t, addr(t, c, 2)))
	if err := s.Send(&kvpb.BatchRequest{Ops: []*kvpb.BatchOp{getOp(1, "k")}}); err != nil {
		t.Fatal(err)
	}
	answers(t, s, 1)
	cl := newClient(t, addr(t, c, 2), addr(t, c, 1))
	if _, _, err := cl.Get(ctxT(t, 10*time.Second), "k"); err != nil {
		t.Fatal(err)
	}
	if client.Streams(cl) != 1 {
		t.Fatalf("%d streams open, want 1", client.Streams(cl))
	}
	stopped := make(chan error, 1)
	go func() { stopped <- c.Stop(2) }()
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the node did not stop within 30 s with a stream open")
	}
	for {
		_, err := s.Recv()
		if err == nil {
			continue
		}
		if status.Code(err) != codes.Unavailable {
			t.Errorf("the stream ended with %v, want Unavailable", err)
		}
		break
	}
	if _, _, err := cl.Get(ctxT(t, 10*time.Second), "k"); err != nil {
		t.Errorf("a read after the node stopped: %v", err)
	}
}

// TestStoppingNodeDoesNotWaitForAClientThatDoesNotRead: a client that
// sends reads on a stream and never reads the answers fills its
// connection's flow-control window; a node that stops gives up sending
// the rest after stopFlush (1 s) instead of waiting for that client
// forever. Close has no deadline here, so without the bound it would not
// return at all.
func TestStoppingNodeDoesNotWaitForAClientThatDoesNotRead(t *testing.T) {
	c := newCluster(t, 3)
	cl := newClient(t, addr(t, c, 2))
	big := strings.Repeat("v", 200<<10)
	if err := cl.Put(ctxT(t, 10*time.Second), "big", big); err != nil {
		t.Fatal(err)
	}
	s := openStream(t, rawConn(t, addr(t, c, 2)))
	// 40 answers of 200 KiB: far more than the window of a connection
	// that reads nothing (64 KiB by default).
	req := &kvpb.BatchRequest{}
	for i := range 40 {
		req.Ops = append(req.Ops, getOp(uint64(i+1), "big"))
	}
	nd, err := c.Node(2)
	if err != nil {
		t.Fatal(err)
	}
	reads := func() uint64 { st := nd.Stats(); return st.CacheHits + st.CacheMisses + st.LeaderReads }
	before := reads()
	if err := s.Send(req); err != nil {
		t.Fatal(err)
	}
	// Every read ran, so the answers wait on the client.
	soon.Succeeds(t, 10*time.Second, func() error {
		if got := reads() - before; got < 40 {
			return fmt.Errorf("%d of 40 reads ran", got)
		}
		return nil
	})
	stopped := make(chan error, 1)
	go func() { stopped <- nd.Close(context.Background()) }()
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the node did not stop within 60 s: it waited for a client that does not read")
	}
}

// TestStreamToASilentlyDeadNodeBreaks: when a node's connection stops
// carrying anything without being closed (a lost network, a powered-off
// machine), the client's keepalive closes it, and the streams on it end,
// instead of taking calls that can only wait out their attempts.
func TestStreamToASilentlyDeadNodeBreaks(t *testing.T) {
	c := newCluster(t, 3)
	p, err := faultproxy.New(addr(t, c, 0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	cl, err := client.New(client.Config{Endpoints: []string{p.Addr()}, KeepaliveTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	if _, _, err := cl.Get(ctxT(t, 10*time.Second), "k"); err != nil {
		t.Fatal(err)
	}
	if n := client.Streams(cl); n != 1 {
		t.Fatalf("%d streams open, want 1", n)
	}
	p.SetBlackhole(true)
	// A ping after 10 s without traffic, unanswered for 1 s.
	soon.Succeeds(t, 40*time.Second, func() error {
		if n := client.Streams(cl); n != 0 {
			return fmt.Errorf("%d streams still open on a connection that carries nothing", n)
		}
		return nil
	})
}

// streamNode is a node stand-in that serves Stream: it answers each Get
// with "v-<key>" and each Put with success at once, never answers an
// operation on a key starting with "hang", and breaks its first stream
// (Unavailable) at the first key "break".
type streamNode struct {
	kvpb.UnimplementedKVServer
	opened  atomic.Int64
	broke   atomic.Bool
	seen    atomic.Int64 // operations received
	hangAll bool         // answer nothing
}

func (f *streamNode) Stream(s kvpb.KV_StreamServer) error {
	f.opened.Add(1)
	for {
		req, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		f.seen.Add(int64(len(req.Ops)))
		if f.hangAll {
			continue
		}
		resp := &kvpb.BatchResponse{}
		for _, op := range req.Ops {
			if put := op.GetPut(); put != nil {
				if !strings.HasPrefix(put.Key, "hang") {
					resp.Results = append(resp.Results, &kvpb.BatchResult{Id: op.Id, Put: &kvpb.PutResponse{}})
				}
				continue
			}
			key := op.GetGet().GetKey()
			switch {
			case strings.HasPrefix(key, "hang"):
				continue
			case key == "break" && f.broke.CompareAndSwap(false, true):
				return status.Error(codes.Unavailable, "stream broken on purpose")
			}
			resp.Results = append(resp.Results, &kvpb.BatchResult{Id: op.Id, Get: &kvpb.GetResponse{Value: "v-" + key, Found: true}})
		}
		if err := s.Send(resp); err != nil {
			return err
		}
	}
}

// TestStreamCallsEndOnTheirOwn: a read whose caller gives up returns at
// its deadline while the stream goes on serving the others, and a write
// sent on a stream whose caller gives up is outcome unknown; a stream that
// breaks fails its calls, which the client retries on a new stream.
func TestStreamCallsEndOnTheirOwn(t *testing.T) {
	f := &streamNode{}
	cl := newClient(t, serveKV(t, f))

	var wg sync.WaitGroup
	defer wg.Wait()
	hung := make(chan error, 1)
	wg.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		_, _, err := cl.Get(ctx, "hang")
		hung <- err
	})
	for i := range 20 {
		k := fmt.Sprint("a", i)
		if v, _, err := cl.Get(ctxT(t, 10*time.Second), k); err != nil || v != "v-"+k {
			t.Fatalf("get %s = %q %v beside a read that hangs", k, v, err)
		}
	}
	select {
	case err := <-hung:
		if !errors.Is(err, client.ErrTimeout) {
			t.Errorf("the read that hangs: %v, want ErrTimeout", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the read that hangs did not end at its deadline")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := cl.Put(ctx, "hang", "v"); !errors.Is(err, client.ErrOutcomeUnknown) {
		t.Errorf("a write sent and never answered: %v, want ErrOutcomeUnknown", err)
	}
	if err := cl.Put(ctxT(t, 10*time.Second), "k", "v"); err != nil {
		t.Errorf("a write beside it: %v", err)
	}

	if v, _, err := cl.Get(ctxT(t, 10*time.Second), "break"); err != nil || v != "v-break" {
		t.Errorf("a read whose stream broke: %q %v, want it retried on a new stream", v, err)
	}
	if n := f.opened.Load(); n != 3 {
		t.Errorf("%d streams opened, want 3 (reads, writes, reads again)", n)
	}
}

// TestStreamAttemptEndsAtItsTimeout: an operation on a stream that its
// node never answers is given up at the attempt's timeout, with no deadline
// of the caller's, and the call moves to the next endpoint; the next call
// starts there.
func TestStreamAttemptEndsAtItsTimeout(t *testing.T) {
	silent, live := &streamNode{hangAll: true}, &streamNode{}
	const attempt = 300 * time.Millisecond
	cl, err := client.New(client.Config{Endpoints: []string{serveKV(t, silent), serveKV(t, live)}, Timeout: time.Minute, AttemptTimeout: attempt})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	type answer struct {
		v   string
		err error
		d   time.Duration
	}
	got := make(chan answer, 1)
	go func() {
		start := time.Now()
		v, _, err := cl.Get(context.Background(), "a")
		got <- answer{v, err, time.Since(start)}
	}()
	select {
	case a := <-got:
		if a.err != nil || a.v != "v-a" {
			t.Fatalf("get = %q, %v; want the second endpoint's answer", a.v, a.err)
		}
		if a.d < attempt {
			t.Errorf("answered after %v, before the first attempt's timeout %v", a.d, attempt)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a read sent to a node that never answers did not move on at the attempt's timeout")
	}
	if n := silent.seen.Load(); n != 1 {
		t.Errorf("the silent node received %d operations, want 1", n)
	}
	if v, _, err := cl.Get(ctxT(t, 10*time.Second), "b"); err != nil || v != "v-b" {
		t.Fatalf("next get = %q, %v", v, err)
	}
	if n := silent.seen.Load(); n != 1 {
		t.Errorf("the next call went to the silent node first (%d operations received)", n)
	}
}

// TestStreamOperationEndsWhenItsNodeStopsServing: an operation a node runs
// for a stream ends with ErrPartitioned the moment the node stops serving
// (its session is cut), not at its deadline: the stream's operations share
// one binding to the node's serving state (node.servingBinding).
func TestStreamOperationEndsWhenItsNodeStopsServing(t *testing.T) {
	c := newCluster(t, 3)
	ld, _, err := c.Leader(ctxT(t, 20*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	f := (ld + 1) % 3
	attempts := make(chan error, 100)
	cl, err := client.New(client.Config{Endpoints: []string{addr(t, c, f)}, Timeout: time.Minute, AttemptTimeout: time.Minute,
		OnAttempt: func(_ string, _ time.Duration, err error) {
			select {
			case attempts <- err:
			default:
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.Put(ctxT(t, 10*time.Second), "k", "before"); err != nil {
		t.Fatal(err)
	}
	nd, err := c.Node(f)
	if err != nil {
		t.Fatal(err)
	}
	// With the leader's inbound RPC down, a write through f waits for the
	// leader, sending it again and again.
	if err := c.RmiDown(ld); err != nil {
		t.Fatal(err)
	}
	sent := nd.Stats().Forwarded
	for len(attempts) > 0 {
		<-attempts
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = cl.Put(ctx, "k", "pending") }() // retried after the cut, until canceled
	soon.Succeeds(t, 10*time.Second, func() error {
		if nd.Stats().Forwarded < sent+2 {
			return errors.New("the write has not reached the leader twice yet")
		}
		return nil
	})
	if err := c.ZkDown(f); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	// The node's answer to the attempt under way (the client's attempt
	// timeout and the call's are a minute).
	select {
	case err := <-attempts:
		if !errors.Is(err, client.ErrPartitioned) {
			t.Fatalf("the pending write's attempt: %v, want ErrPartitioned", err)
		}
		t.Logf("the pending write's attempt ended %v after the cut", time.Since(cut).Round(time.Millisecond))
	case <-time.After(20 * time.Second):
		t.Fatal("the pending write still waits 20 s after its node stopped serving")
	}
	if err := c.RmiUp(ld); err != nil {
		t.Fatal(err)
	}
}

// TestStreamBoundsItsUnansweredCalls: a stream has at most MaxStreamOps
// calls sent and unanswered; more wait in the client, and go out once
// callers give up on the ones the node does not answer, so a node that
// never answers some cannot wedge the stream.
func TestStreamBoundsItsUnansweredCalls(t *testing.T) {
	f := &streamNode{}
	cl, err := client.New(client.Config{Endpoints: []string{serveKV(t, f)}, Timeout: time.Minute, AttemptTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	const extra = 10
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range client.MaxStreamOps + extra {
		wg.Go(func() { _, _, _ = cl.Get(ctx, fmt.Sprint("hang-", i)) })
	}
	soon.Succeeds(t, 30*time.Second, func() error {
		if q, n := client.StreamQueued(cl), f.seen.Load(); q != extra || n != client.MaxStreamOps {
			return fmt.Errorf("%d calls queued in the client and %d received by the node, want %d and %d", q, n, extra, client.MaxStreamOps)
		}
		return nil
	})
	cancel()
	wg.Wait()
	if v, _, err := cl.Get(ctxT(t, 10*time.Second), "a"); err != nil || v != "v-a" {
		t.Errorf("a read after %d calls gave up: %q %v", client.MaxStreamOps+extra, v, err)
	}
}

// TestStreamsPerConnectionAreBounded: one client connection may have 64
// Streams open (each may hold up to MaxClientRequests answers its client
// has not read); the next is refused with ErrBusy, and one is allowed again
// once another closed.
func TestStreamsPerConnectionAreBounded(t *testing.T) {
	c := newCluster(t, 1)
	cc := rawConn(t, addr(t, c, 0))
	const most = 64
	var open []kvpb.KV_StreamClient
	for i := range most {
		s := openStream(t, cc)
		if err := s.Send(&kvpb.BatchRequest{Ops: []*kvpb.BatchOp{getOp(1, "k")}}); err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		answers(t, s, 1)
		open = append(open, s)
	}
	refused := func() error {
		s := openStream(t, cc)
		_ = s.Send(&kvpb.BatchRequest{Ops: []*kvpb.BatchOp{getOp(1, "k")}})
		_, err := s.Recv()
		return err
	}
	err := refused()
	if status.Code(err) != codes.ResourceExhausted || !errors.Is(rpc.FromStatus(err), kvstore.ErrBusy) {
		t.Fatalf("stream %d on one connection: %v, want ResourceExhausted, ErrBusy", most+1, err)
	}
	if err := open[0].CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := open[0].Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("closing a stream: %v, want io.EOF", err)
	}
	soon.Succeeds(t, 10*time.Second, func() error {
		s := openStream(t, cc)
		if err := s.Send(&kvpb.BatchRequest{Ops: []*kvpb.BatchOp{getOp(1, "k")}}); err != nil {
			return err
		}
		if _, err := s.Recv(); err != nil {
			return fmt.Errorf("a stream once another closed: %w", err)
		}
		return nil
	})
}

// TestStreamWriteGivenUpStillCommits: a write the leader appends as it
// arrives on a stream is waited for even if its time ran out before a
// worker took it up: that wait marks the leader's own entry on disk,
// which a lone voter's commit needs. A finish that gave up first (as one
// that checked the session again once could) would leave the write
// appended and never visible, until a later write marked its entry too;
// so each write here is checked before the next is sent. The node ends
// an operation 5 ms before its timeout (answerBefore's margin); past that
// the writes' time grows from 0 in steps of 50 µs, so that some end
// before their append, some between it and the wait, and some after.
func TestStreamWriteGivenUpStillCommits(t *testing.T) {
	c := cluster.StartTest(t, cluster.Options{Nodes: 1, DataDir: t.TempDir()})
	nd, err := c.Node(0)
	if err != nil {
		t.Fatal(err)
	}
	s := openStream(t, rawConn(t, nd.Addr()))
	cl := newClient(t, nd.Addr())
	const writes = 60
	appended, late := 0, 0 // late: appended, and answered with an error
	for i := range writes {
		key := fmt.Sprintf("given-up-%d", i)
		id := uint64(i + 1)
		if err := s.Send(&kvpb.BatchRequest{Ops: []*kvpb.BatchOp{{Id: id, TimeoutUs: timeoutUs(i), Op: &kvpb.BatchOp_Put{Put: &kvpb.PutRequest{Key: key, Value: "v", RequestId: "given-up." + key}}}}}); err != nil {
			t.Fatal(err)
		}
		r, _ := answers(t, s, id)
		// Answered: appended by now, or never.
		if _, found, _ := nd.LocalItem(key); !found {
			continue
		}
		appended++
		if resultErr(r[id]) != nil {
			late++
		}
		soon.Succeeds(t, 10*time.Second, func() error {
			v, found, err := cl.Get(ctxT(t, 5*time.Second), key)
			if err != nil || !found || v != "v" {
				return fmt.Errorf("write %d (timeout %d µs), appended, is not visible: get %s = %q, %v, %v", i, timeoutUs(i), key, v, found, err)
			}
			return nil
		})
	}
	t.Logf("of %d writes, %d were appended, %d of them answered with an error", writes, appended, late)
	if appended == 0 {
		t.Fatal("no write was appended: the test tested nothing")
	}
}

// timeoutUs is the timeout of TestStreamWriteGivenUpStillCommits's i-th
// write, in µs.
func timeoutUs(i int) int64 { return 5000 + 50*int64(i) }

package client

// Batching: a client's concurrent Gets to one node, and its concurrent
// writes, travel together in one Batch call once enough calls are in
// flight to that node. On this project's machine most of a networked read's
// CPU was gRPC's per-call work (stream setup, headers, a goroutine per
// call) on both ends, not KVStore's; a batch pays it once for many
// operations. Like a group commit, it adds no wait when the node is idle:
// an operation goes alone, at once, while fewer than batchDepth calls are
// in flight to the node; only the ones that arrive while that many are in
// flight wait, and leave together as soon as one returns.
//
// Each operation of a batch is still a call of its own: the node runs it
// as if it came alone and answers it with the status it alone would have
// had, so the retry, failover and outcome-unknown rules of Client.do apply
// to it unchanged.

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/rpc"
	"github.com/kvstore/kvstore/rpc/kvpb"
)

const (
	// batchDepth is how many calls of one kind (reads, writes) a client
	// keeps in flight to one node before it queues operations for the
	// next batch.
	batchDepth = 2
	// maxBatchOps and maxBatchBytes bound one batch; an operation larger
	// than maxBatchBytes on its own always goes alone. Both stay well
	// under a node's default limits (MaxClientRequests 1024,
	// MaxRequestSize 1.5 MiB).
	maxBatchOps   = 128
	maxBatchBytes = 256 << 10
	// minBatchedTime: an operation with less time left than this goes
	// alone, at once.
	minBatchedTime = 500 * time.Millisecond
)

// batcher queues one kind of operation (reads or writes) to one endpoint.
type batcher struct {
	kv kvpb.KVClient

	mu       sync.Mutex
	inFlight int        // calls in flight: single operations and batches
	queue    []*pending // waiting for the next batch
	// off: the node does not know Batch (an older version): every
	// operation goes alone.
	off bool

	batches, batched atomic.Int64 // Batch calls made, operations they carried
}

// faultRotateAnswers is a deliberate bug for tests (export_test.go): each
// batch's answers go to the wrong callers, rotated by one, as a batcher
// that mixed up its queue would. The linearizability test must catch it.
var faultRotateAnswers atomic.Bool

// pending is one queued operation and, once done is closed, its answer.
type pending struct {
	op       *kvpb.BatchOp
	inline   kvpb.BatchOp // op on a stream: a copy of the caller's, with its own id
	size     int
	deadline time.Time
	done     chan struct{}
	// Set before done is closed.
	res  *kvpb.BatchResult
	err  error    // the whole call's error (the transport's, a deadline)
	addr net.Addr // the connection the batch went out on; nil: not sent
}

// queuedAddr stands for "the request may have left": an operation given up
// while queued can still go out in a later batch.
var queuedAddr net.Addr = &net.UnixAddr{Name: "queued in a batch", Net: "unix"}

// run sends op to the batcher's node, alone or in a batch, and returns its
// answer. It sets p.Addr when the request may have left this process, as
// grpc.Peer does for a single call.
func (b *batcher) run(ctx context.Context, op *kvpb.BatchOp, p *peer.Peer) (*kvpb.BatchResult, error) {
	size := proto.Size(op)
	deadline, ok := ctx.Deadline()
	b.mu.Lock()
	// An operation near its deadline goes alone, so that a batch's
	// deadline (its earliest operation's) leaves the node time to answer.
	if b.off || b.inFlight < batchDepth || size > maxBatchBytes || !ok || time.Until(deadline) < minBatchedTime {
		b.inFlight++
		b.mu.Unlock()
		res, err := single(ctx, b.kv, op, p)
		b.finish()
		return res, err
	}
	pd := &pending{op: op, size: size, deadline: deadline, done: make(chan struct{})}
	b.queue = append(b.queue, pd)
	b.mu.Unlock()
	select {
	case <-pd.done:
		p.Addr = pd.addr
		return pd.res, pd.err
	case <-ctx.Done():
		p.Addr = queuedAddr
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

// finish ends one call in flight and, if operations are queued, sends the
// next batch.
func (b *batcher) finish() {
	b.mu.Lock()
	b.inFlight--
	if len(b.queue) == 0 || b.inFlight >= batchDepth {
		b.mu.Unlock()
		return
	}
	n, bytes := 0, 0
	for n < len(b.queue) && n < maxBatchOps && (n == 0 || bytes+b.queue[n].size <= maxBatchBytes) {
		bytes += b.queue[n].size
		n++
	}
	batch := b.queue[:n:n]
	b.queue = b.queue[n:]
	b.inFlight++
	b.mu.Unlock()
	go b.send(batch)
}

// send makes one Batch call for batch and hands every operation its answer.
func (b *batcher) send(batch []*pending) {
	defer b.finish()
	// The call ends with its earliest operation's deadline (each has at
	// least minBatchedTime left when queued): the node answers every
	// operation before any caller gives up on it, as it would have alone,
	// and stops working for callers that are gone.
	deadline := batch[0].deadline
	for _, pd := range batch[1:] {
		if pd.deadline.Before(deadline) {
			deadline = pd.deadline
		}
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	req := &kvpb.BatchRequest{Ops: make([]*kvpb.BatchOp, len(batch))}
	for i, pd := range batch {
		req.Ops[i] = pd.op
	}
	var pr peer.Peer
	b.batches.Add(1)
	b.batched.Add(int64(len(batch)))
	resp, err := b.kv.Batch(ctx, req, grpc.Peer(&pr))
	if err == nil && len(resp.Results) > 1 && faultRotateAnswers.Load() {
		resp.Results = append(resp.Results[1:], resp.Results[0])
	}
	if err == nil && len(resp.Results) != len(batch) {
		err = status.Errorf(codes.Internal, "a batch of %d operations answered with %d results", len(batch), len(resp.Results))
	}
	// A node without Batch takes the operations one by one from now on;
	// a batch too large for the node's request limit, for a message size
	// limit of gRPC's (the answers of many large values), or for the
	// node's in-flight limit, is split into single calls, each of which
	// gets the answer it would have had alone. A write sent again keeps
	// its request id, so it is applied once.
	unknown := status.Code(err) == codes.Unimplemented
	if unknown || (len(batch) > 1 && splitOn(err)) {
		if unknown {
			b.mu.Lock()
			b.off = true
			b.mu.Unlock()
		}
		var wg sync.WaitGroup
		for _, pd := range batch {
			wg.Go(func() {
				var p peer.Peer
				pd.res, pd.err = single(ctx, b.kv, pd.op, &p)
				pd.addr = p.Addr
				close(pd.done)
			})
		}
		wg.Wait()
		return
	}
	for i, pd := range batch {
		pd.addr = pr.Addr
		if err != nil {
			pd.err = err
		} else {
			pd.res = resp.Results[i]
		}
		close(pd.done)
	}
}

// splitOn reports whether a batch that failed with err should be sent
// again one operation at a time.
func splitOn(err error) bool {
	if rpc.Typed(err) {
		err = rpc.FromStatus(err)
		return errors.Is(err, kvstore.ErrTooLarge) || errors.Is(err, kvstore.ErrBusy)
	}
	return status.Code(err) == codes.ResourceExhausted // gRPC's message size limits
}

// single sends op alone, as the RPC of its kind, and returns its answer as
// a batch result (the call's error apart, as for a batch).
func single(ctx context.Context, kv kvpb.KVClient, op *kvpb.BatchOp, p *peer.Peer) (*kvpb.BatchResult, error) {
	var r kvpb.BatchResult
	var err error
	switch o := op.GetOp().(type) {
	case *kvpb.BatchOp_Get:
		r.Get, err = kv.Get(ctx, o.Get, grpc.Peer(p))
	case *kvpb.BatchOp_Put:
		r.Put, err = kv.Put(ctx, o.Put, grpc.Peer(p))
	case *kvpb.BatchOp_Delete:
		r.Delete, err = kv.Delete(ctx, o.Delete, grpc.Peer(p))
	default:
		err = status.Error(codes.Internal, "client: an empty batch operation")
	}
	if err != nil {
		return nil, err
	}
	return &r, nil
}

// opError is the error of one operation of an answered call: the status it
// would have failed with alone, or an Internal status if the answer has
// neither an error nor a response of op's kind.
func opError(op *kvpb.BatchOp, r *kvpb.BatchResult) error {
	if err := rpc.UnmarshalStatus(r.GetError()); err != nil {
		return err
	}
	var ok bool
	switch op.GetOp().(type) {
	case *kvpb.BatchOp_Get:
		ok = r.GetGet() != nil
	case *kvpb.BatchOp_Put:
		ok = r.GetPut() != nil
	case *kvpb.BatchOp_Delete:
		ok = r.GetDelete() != nil
	}
	if !ok {
		return status.Error(codes.Internal, "client: a batch answer without a response of its operation's kind")
	}
	return nil
}

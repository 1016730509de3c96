package node

// The client service's Stream (kvstore_client.proto): one client's
// operations on one long-lived stream, each answered as soon as it is done.
// A Batch is answered when its slowest operation is, so a read this node
// answers from its cache waited for a read of the same batch that asked the
// leader, or a write that waited for the disks; on a stream it does not.
// It also spares a call's own work (stream setup, headers) per batch.

import (
	"context"
	"fmt"
	"time"

	grpcpeer "google.golang.org/grpc/peer"
	"google.golang.org/protobuf/proto"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/rpc"
	"github.com/kvstore/kvstore/rpc/kvpb"
)

// Stream serves one client's stream. Each operation runs as it would in a
// Batch (a read the cache answers at once, the rest on the node's
// workers), under its own deadline (its timeout_us, pulled in as
// answerBefore pulls in a call's) and the node's limits, counted per
// operation. One client connection may have maxClientStreams open (more
// are refused with ErrBusy). The stream ends when the client closes it,
// when it breaks, or when the node stops (Unavailable: the client retries
// elsewhere).
func (s *clientServer) Stream(st kvpb.KV_StreamServer) error {
	who := "unknown client"
	if p, ok := grpcpeer.FromContext(st.Context()); ok && p.Addr != nil {
		who = p.Addr.String()
	}
	done, err := s.n.limits.openStream(who)
	if err != nil {
		return err
	}
	defer done()
	recv := func(os *opServer[*kvpb.BatchResult]) error {
		return receive(os, st.Recv, func(op *kvpb.BatchOp, deadline time.Time) { s.start(os, who, op, deadline) })
	}
	send := func(rs []*kvpb.BatchResult) error { return st.Send(&kvpb.BatchResponse{Results: rs}) }
	return serveOps(s.n, st.Context(), s.n.limits.maxInFlight, recv, send)
}

// start runs op of the stream os from the client who, to be answered by
// deadline (none if zero), and queues its answer.
func (s *clientServer) start(os *opServer[*kvpb.BatchResult], who string, op *kvpb.BatchOp, deadline time.Time) {
	n := s.n
	answer := func(r *kvpb.BatchResult) {
		r.Id = op.Id
		os.answer(r)
	}
	if !deadline.IsZero() && !time.Now().Before(deadline) {
		answer(errResult(fmt.Errorf("%w: node %s: the operation's time (timeout_us) ran out before it started", kvstore.ErrTimeout, n.cfg.ID)))
		return
	}
	l := n.limits
	if size := opSize(op); size > l.maxSize {
		answer(errResult(fmt.Errorf("%w: operation of %d bytes (MaxRequestSize %d)", kvstore.ErrTooLarge, size, l.maxSize)))
		return
	}
	if !l.acquire(who, 1) {
		answer(errResult(fmt.Errorf("%w: client %s would have more than %d requests in flight (MaxClientRequests %d)", kvstore.ErrBusy, who, l.maxInFlight, l.maxInFlight)))
		return
	}
	if r := s.cachedOp(op); r != nil {
		l.release(who, 1)
		answer(r)
		return
	}
	// A write the leader can append at once is appended here, on the
	// receiver; the worker then only waits for it.
	aw := s.appendNow(op)
	n.workers.do(func() {
		ctx, cancel := opContext(os.serving.current(), deadline)
		var r *kvpb.BatchResult
		if aw != nil {
			r = s.finishWrite(ctx, aw)
		} else {
			r = s.batchOp(ctx, op)
		}
		cancel()
		// Released before the answer is queued, as a call's is before its
		// answer leaves: a client that sends its next operation once it
		// has this answer must find the place free.
		l.release(who, 1)
		answer(r)
	})
}

// appendNow appends op now if it is a write this node can append as
// leader at once (writer.appendNow); nil otherwise.
func (s *clientServer) appendNow(op *kvpb.BatchOp) *appendedWrite {
	w := s.n.writer
	switch o := op.GetOp().(type) {
	case *kvpb.BatchOp_Put:
		return w.appendNow(kvpb.Op_OP_SET, o.Put.RequestId, o.Put.Key, o.Put.Value)
	case *kvpb.BatchOp_Delete:
		return w.appendNow(kvpb.Op_OP_DELETE, o.Delete.RequestId, o.Delete.Key, "")
	}
	return nil
}

// finishWrite finishes a write appendNow appended and answers it as Put
// or Delete would.
func (s *clientServer) finishWrite(ctx context.Context, aw *appendedWrite) *kvpb.BatchResult {
	if err := s.n.writer.finish(ctx, aw); err != nil {
		return &kvpb.BatchResult{Error: rpc.MarshalStatus(err)}
	}
	if aw.op == kvpb.Op_OP_DELETE {
		return &kvpb.BatchResult{Delete: &kvpb.DeleteResponse{LeaderAddr: s.n.leaderAddr()}}
	}
	return &kvpb.BatchResult{Put: &kvpb.PutResponse{LeaderAddr: s.n.leaderAddr()}}
}

// maxOpTimeout bounds an operation's timeout_us (a larger one counts as
// this long rather than overflowing).
const maxOpTimeout = 24 * time.Hour

// opDeadline is when an operation that arrived at now with timeoutUs must
// be done: its caller's time less the margin answerBefore leaves a call
// for its answer to arrive; zero (none) without a timeout.
func opDeadline(now time.Time, timeoutUs int64) time.Time {
	if timeoutUs <= 0 {
		return time.Time{}
	}
	d := time.Duration(min(timeoutUs, maxOpTimeout.Microseconds())) * time.Microsecond
	margin := min(max(d/10, 5*time.Millisecond), 250*time.Millisecond)
	return now.Add(d - margin)
}

// opContext is the context an operation of a stream runs under: until its
// deadline, or, without one, as long as the stream.
func opContext(ctx context.Context, deadline time.Time) (context.Context, context.CancelFunc) {
	if deadline.IsZero() {
		return context.WithCancel(ctx)
	}
	return context.WithDeadline(ctx, deadline)
}

// opSize is the size of op's request as it would travel alone, which the
// node's MaxRequestSize bounds.
func opSize(op *kvpb.BatchOp) int {
	switch o := op.GetOp().(type) {
	case *kvpb.BatchOp_Get:
		return proto.Size(o.Get)
	case *kvpb.BatchOp_Put:
		return proto.Size(o.Put)
	case *kvpb.BatchOp_Delete:
		return proto.Size(o.Delete)
	}
	return 0
}

// errResult is the answer of an operation that failed with err.
func errResult(err error) *kvpb.BatchResult {
	return &kvpb.BatchResult{Error: rpc.MarshalStatus(err)}
}

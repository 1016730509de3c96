package node

// The client service's Stream (kvstore_client.proto): one client's
// operations on one long-lived stream, each answered as soon as it is done.
// A Batch is answered when its slowest operation is, so a read this node
// answers from its cache waited for a read of the same batch that asked the
// leader, or a write that waited for the disks; on a stream it does not.
// It also spares a call's own work (stream setup, headers) per batch.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	grpcpeer "google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/rpc"
	"github.com/kvstore/kvstore/rpc/kvpb"
)

// maxAnswerBytes bounds one response message of a stream (answers that
// are done together go together up to it; a larger answer goes alone).
const maxAnswerBytes = 1 << 20

// stopFlush bounds how long a stopping node tries to send a stream's last
// answers.
const stopFlush = time.Second

// Stream serves one client's stream. Each operation runs as it would in a
// Batch (a read the cache answers at once, the rest on the node's
// workers), under its own deadline (its timeout_us, pulled in as
// answerBefore pulls in a call's) and the node's limits, counted per
// operation. The stream ends when the client closes it, when it breaks,
// or when the node stops (Unavailable: the client retries elsewhere).
func (s *clientServer) Stream(st kvpb.KV_StreamServer) error {
	n := s.n
	ctx := st.Context()
	who := "unknown client"
	if p, ok := grpcpeer.FromContext(ctx); ok && p.Addr != nil {
		who = p.Addr.String()
	}
	// The operations' context ends with the stream, and at once when the
	// node stops.
	opsCtx, stopOps := context.WithCancel(ctx)
	defer stopOps()
	ss := &serverStream{s: s, ctx: opsCtx, who: who, wake: make(chan struct{}, 1), slots: make(chan struct{}, n.limits.maxInFlight)}
	sent := make(chan error, 1)
	go func() { sent <- ss.sendLoop(ctx, st) }()
	received := make(chan error, 1)
	go func() { received <- ss.recvLoop(st) }()

	var err error
	sendDone, stopping := false, false
	select {
	case err = <-received:
		if errors.Is(err, io.EOF) {
			err = nil // the client closed its side: answer what runs, then end
		}
	case <-n.ctx.Done():
		stopOps()
		stopping = true
		err = status.Errorf(codes.Unavailable, "node %s: stopping", n.cfg.ID)
	case err = <-sent:
		sendDone = true
	}
	// No operation starts from here on; the ones running end by their
	// deadlines (or at once, if the node stops) and are answered.
	ss.mu.Lock()
	ss.closing = true
	ss.mu.Unlock()
	ss.ops.Wait()
	if !sendDone {
		// The answers go out. A stopping node waits for a client that
		// does not read them at most stopFlush: its calls count as sent,
		// and the client asks another node.
		ss.flush()
		var limit <-chan time.Time
		if stopping {
			t := time.NewTimer(stopFlush)
			defer t.Stop()
			limit = t.C
		}
		select {
		case e := <-sent:
			if err == nil && e != nil && !errors.Is(e, context.Canceled) {
				err = e
			}
		case <-limit:
		}
	}
	return err
}

// serverStream is the state of one Stream call.
type serverStream struct {
	s   *clientServer
	ctx context.Context
	who string // the client connection, as the limiter names it

	mu      sync.Mutex
	closing bool // no operation starts any more
	answers []*kvpb.BatchResult
	final   bool          // flush: send what is queued, then stop
	wake    chan struct{} // an answer is queued (capacity 1)
	ops     sync.WaitGroup
	// slots holds one token per operation started and not yet answered
	// on the wire: at MaxClientRequests, the stream reads no more of the
	// client's messages until answers went out, so a client that sends
	// and does not read cannot pile answers up in the node.
	slots chan struct{}
}

// recvLoop takes the client's request messages and starts their
// operations, until the stream ends (io.EOF: the client closed its side).
func (ss *serverStream) recvLoop(st kvpb.KV_StreamServer) error {
	for {
		req, err := st.Recv()
		if err != nil {
			return err
		}
		// An operation's time runs from its arrival, not from its start:
		// one that waited here for a slot until its caller gave up is not
		// run.
		now := time.Now()
		for _, op := range req.Ops {
			deadline := opDeadline(now, op.TimeoutUs)
			select {
			case ss.slots <- struct{}{}:
			case <-ss.ctx.Done():
				return ss.ctx.Err()
			}
			ss.mu.Lock()
			if ss.closing {
				ss.mu.Unlock()
				return nil
			}
			ss.ops.Add(1)
			ss.mu.Unlock()
			ss.start(op, deadline)
		}
	}
}

// start runs op, to be answered by deadline (none if zero), and queues
// its answer.
func (ss *serverStream) start(op *kvpb.BatchOp, deadline time.Time) {
	n := ss.s.n
	if !deadline.IsZero() && !time.Now().Before(deadline) {
		ss.answer(op.Id, errResult(fmt.Errorf("%w: node %s: the operation's time (timeout_us) ran out before it started", kvstore.ErrTimeout, n.cfg.ID)))
		return
	}
	l := n.limits
	if size := opSize(op); size > l.maxSize {
		ss.answer(op.Id, errResult(fmt.Errorf("%w: operation of %d bytes (MaxRequestSize %d)", kvstore.ErrTooLarge, size, l.maxSize)))
		return
	}
	if !l.acquire(ss.who, 1) {
		ss.answer(op.Id, errResult(fmt.Errorf("%w: client %s would have more than %d requests in flight (MaxClientRequests %d)", kvstore.ErrBusy, ss.who, l.maxInFlight, l.maxInFlight)))
		return
	}
	if r := ss.s.cachedOp(op); r != nil {
		l.release(ss.who, 1)
		ss.answer(op.Id, r)
		return
	}
	n.workers.do(func() {
		ctx, cancel := opContext(ss.ctx, deadline)
		r := ss.s.batchOp(ctx, op)
		cancel()
		// Released before the answer is queued, as a call's is before its
		// answer leaves: a client that sends its next operation once it
		// has this answer must find the place free.
		l.release(ss.who, 1)
		ss.answer(op.Id, r)
	})
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

// answer queues r as the answer of operation id.
func (ss *serverStream) answer(id uint64, r *kvpb.BatchResult) {
	r.Id = id
	ss.mu.Lock()
	ss.answers = append(ss.answers, r)
	ss.mu.Unlock()
	ss.ops.Done()
	select {
	case ss.wake <- struct{}{}:
	default:
	}
}

// flush makes sendLoop send what is queued and return.
func (ss *serverStream) flush() {
	ss.mu.Lock()
	ss.final = true
	ss.mu.Unlock()
	select {
	case ss.wake <- struct{}{}:
	default:
	}
}

// sendLoop sends the queued answers, those done together in one message,
// until the stream (ctx) ends or, after flush, nothing is queued.
func (ss *serverStream) sendLoop(ctx context.Context, st kvpb.KV_StreamServer) error {
	for {
		select {
		case <-ss.wake:
		case <-ctx.Done():
			return ctx.Err()
		}
		ss.mu.Lock()
		queued, final := ss.answers, ss.final
		ss.answers = nil
		ss.mu.Unlock()
		for len(queued) > 0 {
			k, bytes := 1, proto.Size(queued[0])
			for ; k < len(queued); k++ {
				size := proto.Size(queued[k])
				if bytes+size > maxAnswerBytes {
					break
				}
				bytes += size
			}
			if err := st.Send(&kvpb.BatchResponse{Results: queued[:k]}); err != nil {
				return err
			}
			for range k {
				<-ss.slots
			}
			queued = queued[k:]
		}
		if final {
			return nil
		}
	}
}

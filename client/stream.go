package client

// Streams: a client's reads of one node travel on one long-lived gRPC
// stream (KV.Stream), its writes on another, and each comes back as soon
// as the node is done with it. In a Batch, a read the node answered from
// its cache waited for the batch's slowest operation: a read of a key
// whose copy a write had just dropped, which asks the leader. Operations
// that arrive together still leave together, in one message, and answers
// done together come back together; a stream also spares the per-call
// work (stream setup, headers) that a Batch call pays, and writes no
// longer wait for one of two batches in flight to return before they
// leave, so the leader sees them sooner and commits them in larger
// groups. Reads and writes keep separate streams because the node bounds
// what a stream has unanswered (MaxClientRequests) and a stream shares one
// flow-control window: slow writes must not hold reads back.
//
// Each operation is still a call of its own: the node runs it as if it
// came alone, under the time its caller has left, and answers it with the
// status it alone would have had, so the retry, failover and
// outcome-unknown rules of Client.do apply unchanged. A node without
// Stream (an older version) gets batches (batch.go).

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/kvstore/kvstore/rpc/kvpb"
)

// streamer sends one kind of operation to one endpoint on a stream, which
// it opens on first use and again after one breaks.
type streamer struct {
	kv kvpb.KVClient
	// fallback takes the operations when the node has no Stream, and those
	// too large for a stream's message.
	fallback *batcher

	mu      sync.Mutex
	cur     *opStream     // the open stream; nil: none
	opening chan struct{} // closed once the stream being opened is open or failed
	off     bool          // the node has no Stream

	sent, carried atomic.Int64 // request messages sent, operations they carried
}

// maxStreamOps bounds the operations a stream has sent, not had answered
// and whose callers still wait; more wait in the client. A node counts
// each against the connection's MaxClientRequests (1024 by default), which
// the client's other calls on that connection share: a burst of reads must
// not leave its writes refused as busy. Calls given up on do not count, so
// a node that never answers some cannot wedge the stream; the node drops
// those whose time ran out before it reached them.
const maxStreamOps = 256

// faultRotateStreamAnswers, when set, hands each message of answers with
// several in it to the wrong calls: a deliberate bug, for the test that
// proves the linearizability check catches it.
var faultRotateStreamAnswers atomic.Bool

// opStream is one open stream and its operations in flight.
type opStream struct {
	s      kvpb.KV_StreamClient
	cancel context.CancelFunc
	addr   net.Addr // the connection it runs on

	mu         sync.Mutex
	calls      map[uint64]*pending // sent or queued, not answered
	queue      []*pending          // not sent yet
	unanswered int                 // sent, not answered, not given up
	next       uint64
	err        error // set once the stream broke; nil while it works
	wake       chan struct{}
	streams    *streamer
}

// run sends op to the streamer's node and returns its answer, or gives up
// on it at end or when ctx ends. It sets p.Addr when the request may have
// left this process, as grpc.Peer does for a single call.
func (s *streamer) run(ctx context.Context, end time.Time, op *kvpb.BatchOp, p *peer.Peer) (*kvpb.BatchResult, error) {
	size := proto.Size(op)
	if size > maxBatchBytes {
		return s.runAlone(ctx, end, op, p)
	}
	st, err := s.stream(ctx, end)
	if errors.Is(err, errNoStream) {
		return s.runAlone(ctx, end, op, p)
	}
	if err != nil {
		return nil, err
	}
	pd := st.enqueue(end, size, op)
	t := startTimer(time.Until(end))
	defer stopTimer(t)
	var gaveUp error
	select {
	case <-pd.done:
	case <-ctx.Done():
		gaveUp = ctx.Err()
	case <-t.C:
		gaveUp = context.DeadlineExceeded
	}
	if gaveUp != nil {
		if forgotten, addr := st.forget(pd); forgotten {
			p.Addr = addr // nil: it never left
			return nil, status.FromContextError(gaveUp).Err()
		}
		<-pd.done // answered meanwhile
	}
	if status.Code(pd.err) == codes.Unimplemented && pd.res == nil {
		// The node has no Stream: it ran nothing of it.
		s.mu.Lock()
		s.off = true
		s.mu.Unlock()
		return s.runAlone(ctx, end, op, p)
	}
	p.Addr = pd.addr
	return pd.res, pd.err
}

// runAlone sends op in a Batch call (alone or batched with others), for a
// node without Stream or an operation too large for a stream's message.
func (s *streamer) runAlone(ctx context.Context, end time.Time, op *kvpb.BatchOp, p *peer.Peer) (*kvpb.BatchResult, error) {
	ctx, cancel := context.WithDeadline(ctx, end)
	defer cancel()
	return s.fallback.run(ctx, op, p)
}

// timers holds stopped timers for reuse: a wait on a stream needs one for
// its deadline, and a reused one allocates nothing.
var timers sync.Pool

// startTimer returns a timer that fires after d.
func startTimer(d time.Duration) *time.Timer {
	if t, ok := timers.Get().(*time.Timer); ok {
		t.Reset(d)
		return t
	}
	return time.NewTimer(d)
}

// stopTimer stops t and keeps it for reuse if it never fired; t must not
// be used after. A timer that fired is left to the collector: under the
// timers of Go before 1.23 (GODEBUG=asynctimerchan=1, the default of a
// program whose go.mod names an older Go) its tick may reach the channel
// after Stop returns, and would end the next user's wait at once. Under
// today's timers Stop reports false only once the tick was received, so
// only waits that timed out give up their timer.
func stopTimer(t *time.Timer) {
	if t.Stop() {
		timers.Put(t)
	}
}

// idAndTimeoutMax bounds what an operation's id and timeout add to its
// encoded size: two varint fields.
const idAndTimeoutMax = 2 * (1 + binary.MaxVarintLen64)

// errNoStream: the node has no Stream.
var errNoStream = errors.New("client: the node has no Stream")

// stream returns the open stream, opening one by end if none is.
func (s *streamer) stream(ctx context.Context, end time.Time) (*opStream, error) {
	s.mu.Lock()
	if s.cur != nil && !s.off {
		st := s.cur
		s.mu.Unlock()
		return st, nil
	}
	s.mu.Unlock()
	ctx, cancel := context.WithDeadline(ctx, end)
	defer cancel()
	s.mu.Lock()
	for {
		if s.off {
			s.mu.Unlock()
			return nil, errNoStream
		}
		if s.cur != nil {
			st := s.cur
			s.mu.Unlock()
			return st, nil
		}
		if s.opening == nil {
			break
		}
		ch := s.opening
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		s.mu.Lock()
	}
	ch := make(chan struct{})
	s.opening = ch
	s.mu.Unlock()
	st, err := s.open(ctx)
	s.mu.Lock()
	s.opening = nil
	close(ch)
	if err == nil {
		s.cur = st
	}
	s.mu.Unlock()
	return st, err
}

// open opens a stream; ctx bounds the opening only.
func (s *streamer) open(ctx context.Context) (*opStream, error) {
	sctx, cancel := context.WithCancel(context.Background())
	stop := context.AfterFunc(ctx, cancel)
	cs, err := s.kv.Stream(sctx)
	if !stop() {
		// ctx ended while the stream was opened: the stream is canceled.
		cancel()
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	if err != nil {
		cancel()
		return nil, err
	}
	st := &opStream{s: cs, cancel: cancel, calls: make(map[uint64]*pending), wake: make(chan struct{}, 1), streams: s, addr: queuedAddr}
	if pr, ok := peer.FromContext(cs.Context()); ok && pr.Addr != nil {
		st.addr = pr.Addr
	}
	go st.sendLoop(sctx)
	go st.recvLoop()
	return st, nil
}

// enqueue queues op for the next message: a copy of it in the returned
// call, with its id set, and its timeout (the time left until deadline)
// once it is sent; size is op's encoded size. If the stream broke
// already, the returned call is done, with the stream's error and
// nothing sent.
func (st *opStream) enqueue(deadline time.Time, size int, op *kvpb.BatchOp) *pending {
	pd := &pending{deadline: deadline, done: make(chan struct{})}
	pd.inline.Op = op.Op
	o := &pd.inline
	pd.op = o
	st.mu.Lock()
	if st.err != nil {
		pd.err = st.err
		st.mu.Unlock()
		close(pd.done)
		return pd
	}
	st.next++
	o.Id = st.next
	pd.size = size + idAndTimeoutMax
	st.calls[o.Id] = pd
	st.queue = append(st.queue, pd)
	st.mu.Unlock()
	select {
	case st.wake <- struct{}{}:
	default:
	}
	return pd
}

// forget drops a call its caller gave up on: false if it was answered (or
// failed) already. addr is the connection it may have left on, or nil if
// it was still queued: then it never leaves.
func (st *opStream) forget(pd *pending) (forgotten bool, addr net.Addr) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if _, ok := st.calls[pd.op.Id]; !ok {
		return false, nil
	}
	delete(st.calls, pd.op.Id)
	if pd.addr != nil {
		st.unanswered--
		st.wakeLocked()
		return true, pd.addr
	}
	for i, q := range st.queue {
		if q == pd {
			st.queue = append(st.queue[:i], st.queue[i+1:]...)
			break
		}
	}
	return true, nil
}

// sendLoop sends the queued operations, those queued together in one
// message (up to maxBatchOps and maxBatchBytes), while fewer than
// maxStreamOps are unanswered, until the stream ends.
func (st *opStream) sendLoop(ctx context.Context) {
	for {
		select {
		case <-st.wake:
		case <-ctx.Done():
			return
		}
		for {
			queued := st.take()
			if len(queued) == 0 {
				break
			}
			for len(queued) > 0 {
				k, bytes := 0, 0
				for k < len(queued) && k < maxBatchOps && (k == 0 || bytes+queued[k].size <= maxBatchBytes) {
					bytes += queued[k].size
					k++
				}
				req := &kvpb.BatchRequest{Ops: make([]*kvpb.BatchOp, k)}
				for i, pd := range queued[:k] {
					req.Ops[i] = pd.op
				}
				if err := st.s.Send(req); err != nil {
					// A failed Send need not end the stream: end it, so
					// that recvLoop fails its calls and the next call
					// opens another.
					st.cancel()
					return
				}
				st.streams.sent.Add(1)
				st.streams.carried.Add(int64(k))
				queued = queued[k:]
			}
		}
	}
}

// take removes from the queue the operations that may be sent now (as
// many as keep maxStreamOps unanswered) and sets their timeouts: the time
// their callers have left now.
func (st *opStream) take() []*pending {
	st.mu.Lock()
	defer st.mu.Unlock()
	k := min(len(st.queue), maxStreamOps-st.unanswered)
	if k <= 0 {
		return nil
	}
	queued := st.queue[:k:k]
	st.queue = append([]*pending(nil), st.queue[k:]...)
	st.unanswered += k
	now := time.Now()
	for _, pd := range queued {
		pd.addr = st.addr // from here on it may have left
		if !pd.deadline.IsZero() {
			pd.op.TimeoutUs = max(1, pd.deadline.Sub(now).Microseconds())
		}
	}
	return queued
}

// wakeLocked wakes sendLoop if calls wait in the queue.
func (st *opStream) wakeLocked() {
	if len(st.queue) == 0 {
		return
	}
	select {
	case st.wake <- struct{}{}:
	default:
	}
}

// recvLoop hands every answer to its call until the stream ends, then
// fails the calls left with the stream's error.
func (st *opStream) recvLoop() {
	for {
		resp, err := st.s.Recv()
		if err != nil {
			st.fail(err)
			return
		}
		if len(resp.Results) > 1 && faultRotateStreamAnswers.Load() {
			first := resp.Results[0].Id
			for i := range len(resp.Results) - 1 {
				resp.Results[i].Id = resp.Results[i+1].Id
			}
			resp.Results[len(resp.Results)-1].Id = first
		}
		st.mu.Lock()
		for _, r := range resp.Results {
			pd, ok := st.calls[r.Id]
			if !ok || pd.addr == nil {
				continue // its caller gave up (or a node answered what it was not sent)
			}
			delete(st.calls, r.Id)
			st.unanswered--
			pd.res = r
			close(pd.done)
		}
		st.wakeLocked()
		st.mu.Unlock()
	}
}

// fail ends the stream: every call not answered fails with err (one not
// sent yet says so by its nil addr), and the next call opens a new stream.
func (st *opStream) fail(err error) {
	if errors.Is(err, io.EOF) || errors.Is(err, context.Canceled) {
		err = status.Error(codes.Unavailable, "client: the stream to the node ended")
	}
	st.mu.Lock()
	st.err = err
	calls := st.calls
	st.calls = nil
	for _, pd := range st.queue {
		pd.addr = nil
	}
	st.queue = nil
	st.mu.Unlock()
	st.cancel()
	s := st.streams
	s.mu.Lock()
	if s.cur == st {
		s.cur = nil
	}
	s.mu.Unlock()
	for _, pd := range calls {
		pd.err = err
		close(pd.done)
	}
}

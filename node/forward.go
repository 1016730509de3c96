package node

// Forwarded operations on streams (Peer.Forward): a follower sends the
// writes its clients give it, and the reads its cache misses (fetches), to
// the leader on long-lived streams (one for writes, one for fetches) per
// leader address instead of one Write or Fetch call each. A unary call
// costs each side a new HTTP/2 stream, its headers and several goroutine
// hand-offs; on two shared cores, a write through a follower took about
// 1.2 ms more than one given to the leader (in-process W: 14,100 writes/s
// against 20,700 with every write given to the leader). Operations sent
// together travel in one message, and answers done together come back in
// one.
//
// Each operation is still a call of its own: the leader serves it as
// Write or Fetch would serve it alone (peerServer.Write and Fetch: the
// cluster and incarnation checks, validation, the leader's limits), under
// the time its sender has left, and answers it with the status that call
// would have had, so forwardWrite's retry, failover and outcome-unknown
// rules, and get's, hold unchanged. A write still queued when its sender
// gives up never leaves; one handed to the stream may have. A leader
// without Forward (an older build) answers Unimplemented, and its
// operations go by Write and Fetch for a while (forwardRetry).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/rpc"
	"github.com/kvstore/kvstore/rpc/kvpb"
)

const (
	// maxForwardOps bounds the operations a Forward stream has
	// unanswered at the leader; past it the leader reads no more of the
	// stream.
	maxForwardOps = 1024
	// maxForwardBytes bounds one message of operations (one larger
	// operation goes alone, up to the node's message limit).
	maxForwardBytes = 1 << 20
	// forwardRetry is how long operations for a leader without Forward go
	// by Write and Fetch before a stream is tried again (the node may be
	// upgraded).
	forwardRetry = time.Minute
)

// forwarder holds this node's Forward streams: two per leader address, one
// for writes and one for fetches. A leader bounds what one stream has
// unanswered (maxForwardOps) and a stream shares one flow-control window,
// so writes waiting for the disks must not hold reads back.
type forwarder struct {
	n *Node

	mu      sync.Mutex
	streams map[fwdKey]*fwdStream
	off     map[string]time.Time // addresses without Forward, and since when
	closed  bool                 // wait began: no stream opens any more
	wg      sync.WaitGroup       // the streams' goroutines

	sent, carried atomic.Int64 // messages sent on the streams, operations they carried
	retired       atomic.Int64 // streams ended because the leader moved (retireLocked)
}

func newForwarder(n *Node) *forwarder {
	return &forwarder{n: n, streams: make(map[fwdKey]*fwdStream), off: make(map[string]time.Time)}
}

// fwdKey names a stream: its leader's address, and whether it carries
// fetches (or writes).
type fwdKey struct {
	addr  string
	fetch bool
}

// fwdStream is one Forward stream and its operations in flight.
type fwdStream struct {
	f      *forwarder
	key    fwdKey
	ctx    context.Context
	cancel context.CancelFunc

	mu    sync.Mutex
	calls map[uint64]*fwdCall // queued or sent, not answered
	queue []*fwdCall          // not sent yet
	next  uint64
	err   error // set once the stream broke
	// answered: an answer came; the leader serves Forward, so an
	// Unimplemented end is no proof that it ran nothing.
	answered  bool
	noForward bool // it ended Unimplemented before any answer
	wake      chan struct{}
}

// fwdCall is one forwarded operation on a stream.
type fwdCall struct {
	op       *kvpb.ForwardedOp
	deadline time.Time
	sent     bool // taken by the sender: it may have left
	done     chan struct{}
	// Set before done is closed.
	res       *kvpb.ForwardedResult
	err       error // the stream's error
	noForward bool  // the stream ended Unimplemented before any answer
}

// errUseCall: the operation was not sent and goes in a call of its own
// (Write, Fetch): the leader at the address has no Forward, or its stream
// has maxForwardOps unanswered.
var errUseCall = errors.New("node: the operation goes in a call of its own")

// write forwards req to the leader at addr on its stream (c is the
// node's client of addr) and returns its answer as sendWrite's Write call
// does: reached reports whether the write may have left this node. It
// fails with errUseCall, having sent nothing, if the write must go in a
// call of its own.
func (f *forwarder) write(ctx context.Context, c kvpb.PeerClient, addr string, req *kvpb.WriteRequest) (resp *kvpb.WriteResponse, reached bool, err error) {
	r, reached, err := f.call(ctx, c, addr, &kvpb.ForwardedOp{Op: &kvpb.ForwardedOp_Write{Write: req}})
	if err != nil {
		return nil, reached, err
	}
	if r.GetWrite() == nil {
		return nil, true, status.Error(codes.Internal, "node: a forwarded write answered with neither a result nor an error")
	}
	return r.GetWrite(), true, nil
}

// fetch forwards req to the leader at addr on its stream, as write does.
func (f *forwarder) fetch(ctx context.Context, c kvpb.PeerClient, addr string, req *kvpb.FetchRequest) (*kvpb.FetchResponse, error) {
	r, _, err := f.call(ctx, c, addr, &kvpb.ForwardedOp{Op: &kvpb.ForwardedOp_Fetch{Fetch: req}})
	if err != nil {
		return nil, err
	}
	if r.GetFetch() == nil {
		return nil, status.Error(codes.Internal, "node: a forwarded fetch answered with neither a result nor an error")
	}
	return r.GetFetch(), nil
}

// call sends op on the stream to addr and returns its answer; reached
// reports whether op may have left this node. Errors are gRPC statuses,
// as a call's are.
func (f *forwarder) call(ctx context.Context, c kvpb.PeerClient, addr string, op *kvpb.ForwardedOp) (r *kvpb.ForwardedResult, reached bool, err error) {
	st, err := f.stream(c, fwdKey{addr: addr, fetch: op.GetFetch() != nil})
	if err != nil {
		return nil, false, err
	}
	call := st.enqueue(ctx, op)
	if call == nil {
		return nil, false, errUseCall // the stream is full
	}
	select {
	case <-call.done:
	case <-ctx.Done():
		if st.forget(call) {
			return nil, call.sent, status.FromContextError(ctx.Err()).Err()
		}
		<-call.done // answered meanwhile
	}
	if call.res == nil {
		if call.noForward {
			// The leader has no Forward: it ran nothing of the stream.
			f.mu.Lock()
			f.off[addr] = time.Now()
			f.mu.Unlock()
			return nil, false, errUseCall
		}
		return nil, call.sent, call.err
	}
	if err := rpc.UnmarshalStatus(call.res.Error); err != nil {
		return nil, true, err
	}
	return call.res, true, nil
}

// stream returns the open stream k, opening one if none is.
func (f *forwarder) stream(c kvpb.PeerClient, k fwdKey) (*fwdStream, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if since, ok := f.off[k.addr]; ok {
		if time.Since(since) < forwardRetry {
			return nil, errUseCall
		}
		delete(f.off, k.addr)
	}
	f.retireLocked(k)
	if st := f.streams[k]; st != nil {
		return st, nil
	}
	if f.closed || f.n.ctx.Err() != nil {
		return nil, fmt.Errorf("node %s: %w", f.n.cfg.ID, kvstore.ErrStopped)
	}
	ctx, cancel := context.WithCancel(f.n.ctx)
	st := &fwdStream{f: f, key: k, ctx: ctx, cancel: cancel, calls: make(map[uint64]*fwdCall), wake: make(chan struct{}, 1)}
	f.streams[k] = st
	f.wg.Add(1)
	go st.run(c)
	return st, nil
}

// retireLocked ends the streams of k's kind to other addresses that have
// no operation in flight: the leader moved on from them, and each would
// otherwise hold a stream, and two goroutines at both ends, for the
// node's life. A stream still carrying operations is left to finish
// them; the next operation after that ends it. Callers hold f.mu.
func (f *forwarder) retireLocked(k fwdKey) {
	for key, st := range f.streams {
		if key.fetch != k.fetch || key.addr == k.addr {
			continue
		}
		st.mu.Lock()
		idle := len(st.calls) == 0 && st.err == nil
		if idle {
			// An operation still routed there fails at once (Unavailable)
			// rather than reopen the stream.
			st.err = status.Errorf(codes.Unavailable, "node %s: the stream to %s ended: the leader is at another address", f.n.cfg.ID, key.addr)
		}
		st.mu.Unlock()
		if idle {
			delete(f.streams, key)
			st.cancel()
			f.retired.Add(1)
		}
	}
}

// wait waits for the streams' goroutines, which end with the node's
// context; no stream opens after it began.
func (f *forwarder) wait() {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	f.wg.Wait()
}

// enqueue queues op for the next message. If the stream broke already,
// the returned call is done, with the stream's error and nothing sent; if
// maxForwardOps of its callers wait for answers already, it returns nil:
// the leader would read no more of the stream, and writes held by the
// disks or by a lease would hold every later operation back, so op goes
// in a call of its own.
func (st *fwdStream) enqueue(ctx context.Context, op *kvpb.ForwardedOp) *fwdCall {
	call := &fwdCall{op: op, done: make(chan struct{})}
	call.deadline, _ = ctx.Deadline()
	st.mu.Lock()
	if st.err != nil {
		call.err, call.noForward = st.err, st.noForward
		st.mu.Unlock()
		close(call.done)
		return call
	}
	if len(st.calls) >= maxForwardOps {
		st.mu.Unlock()
		return nil
	}
	st.next++
	call.op.Id = st.next
	st.calls[call.op.Id] = call
	st.queue = append(st.queue, call)
	st.mu.Unlock()
	select {
	case st.wake <- struct{}{}:
	default:
	}
	return call
}

// forget drops a call its sender gave up on: false if it was answered (or
// failed) already. A call still queued never leaves. A sent one stays
// among the stream's calls until its answer comes (recvLoop drops it
// then, with no one to hand it to) or the stream ends: the leader holds
// its place among the stream's maxForwardOps until it answered it, so
// enqueue must count it, or a follower whose writers give up would keep
// queueing behind a stream the leader no longer reads.
func (st *fwdStream) forget(call *fwdCall) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if _, ok := st.calls[call.op.Id]; !ok {
		return false
	}
	if call.sent {
		return true
	}
	delete(st.calls, call.op.Id)
	for i, q := range st.queue {
		if q == call {
			st.queue = append(st.queue[:i], st.queue[i+1:]...)
			break
		}
	}
	return true
}

// run opens the stream, then sends the queued operations, those queued
// together in one message, until the stream ends.
func (st *fwdStream) run(c kvpb.PeerClient) {
	defer st.f.wg.Done()
	cs, err := c.Forward(st.ctx)
	if err != nil {
		st.fail(err)
		return
	}
	st.f.wg.Add(1)
	go st.recvLoop(cs)
	for {
		select {
		case <-st.wake:
		case <-st.ctx.Done():
			return
		}
		for {
			msg := st.take()
			if msg == nil {
				break
			}
			// Counted before it leaves: a test that waits for an
			// answer then finds it counted.
			st.f.sent.Add(1)
			st.f.carried.Add(int64(len(msg.Ops)))
			if err := cs.Send(msg); err != nil {
				// The stream ended: Recv returns its status once the
				// answers that came before it are read, and recvLoop
				// then fails the calls left (those still queued as not
				// sent). Canceling here would drop those answers.
				return
			}
		}
	}
}

// take removes one message's worth of operations from the queue (up to
// maxForwardBytes; a larger one alone), marks them sent and sets their
// timeouts: the time their senders have left now. Only what goes out in
// the next Send is marked: a sender that gives up on a call still queued
// behind a Send that blocks knows it never left. nil: nothing is queued.
func (st *fwdStream) take() *kvpb.ForwardRequest {
	st.mu.Lock()
	defer st.mu.Unlock()
	k, bytes := 0, 0
	for k < len(st.queue) {
		size := proto.Size(st.queue[k].op)
		if k > 0 && bytes+size > maxForwardBytes {
			break
		}
		bytes += size
		k++
	}
	if k == 0 {
		return nil
	}
	msg := &kvpb.ForwardRequest{Ops: make([]*kvpb.ForwardedOp, k)}
	now := time.Now()
	for i, call := range st.queue[:k] {
		call.sent = true
		if !call.deadline.IsZero() {
			call.op.TimeoutUs = max(1, call.deadline.Sub(now).Microseconds())
		}
		msg.Ops[i] = call.op
	}
	st.queue = append(st.queue[:0:0], st.queue[k:]...)
	return msg
}

// recvLoop hands every answer to its call until the stream ends, then
// fails the calls left with the stream's error.
func (st *fwdStream) recvLoop(cs kvpb.Peer_ForwardClient) {
	defer st.f.wg.Done()
	for {
		resp, err := cs.Recv()
		if err != nil {
			st.fail(err)
			return
		}
		if faultsOn && st.f.n.cfg.Faults.RotateForwardAnswers && len(resp.Results) > 1 {
			first := resp.Results[0].Id
			for i := range len(resp.Results) - 1 {
				resp.Results[i].Id = resp.Results[i+1].Id
			}
			resp.Results[len(resp.Results)-1].Id = first
		}
		st.mu.Lock()
		st.answered = true
		for _, r := range resp.Results {
			call, ok := st.calls[r.Id]
			if !ok || !call.sent {
				continue // the leader answered what it was not sent
			}
			// Its sender may have given up (forget): then the answer
			// only frees its place.
			delete(st.calls, r.Id)
			call.res = r
			close(call.done)
		}
		st.mu.Unlock()
	}
}

// fail ends the stream: every call not answered fails with err, and the
// next operation opens a new stream.
func (st *fwdStream) fail(err error) {
	if errors.Is(err, io.EOF) || errors.Is(err, context.Canceled) || status.Code(err) == codes.Canceled {
		err = status.Errorf(codes.Unavailable, "node %s: the stream to the leader at %s ended", st.f.n.cfg.ID, st.key.addr)
	}
	st.mu.Lock()
	st.err = err
	st.noForward = status.Code(err) == codes.Unimplemented && !st.answered
	noForward := st.noForward
	calls := st.calls
	st.calls = nil
	st.queue = nil
	st.mu.Unlock()
	st.cancel()
	f := st.f
	f.mu.Lock()
	if f.streams[st.key] == st {
		delete(f.streams, st.key)
	}
	f.mu.Unlock()
	for _, call := range calls {
		call.err, call.noForward = err, noForward
		close(call.done)
	}
}

// Forward serves a follower's stream of forwarded operations at the
// leader: each runs as Write or Fetch would run it alone, on the node's
// workers, under its own deadline (its timeout_us, pulled in as
// answerBefore pulls in a call's), and is answered as soon as it is done.
// A write to a leader that serves is appended as soon as it arrives, and
// only its wait goes to a worker; a fetch it can answer without a wait is
// answered at once: on two busy cores a woken worker waited 0.1 to 0.4 ms
// to run, and the write's group commit, or the read, would wait for it.
func (s *peerServer) Forward(st kvpb.Peer_ForwardServer) error {
	n := s.n
	recv := func(os *opServer[*kvpb.ForwardedResult]) error {
		return receive(os, st.Recv, func(op *kvpb.ForwardedOp, deadline time.Time) {
			s.startForwarded(os.ctx, op, deadline, os.answer)
		})
	}
	send := func(rs []*kvpb.ForwardedResult) error { return st.Send(&kvpb.ForwardResponse{Results: rs}) }
	return serveOps(n, st.Context(), maxForwardOps, recv, send)
}

// startForwarded serves one operation of a Forward stream under ctx (the
// stream's) and deadline (its own), and gives its result to answer, once.
// When the leader serves, a write is appended at once and only its wait
// goes to a worker, and a read answered without a wait is answered at
// once, each exactly as Write or Fetch would answer it; everything else
// runs on a worker (forwarded). The receiver then takes the leader's
// locks (l.mu, the replica's, the disk queue's) for as long as an append
// or a read holds them: a long holder (the lease sweep) holds back the
// stream's next operations as it would have held back their workers.
func (s *peerServer) startForwarded(ctx context.Context, op *kvpb.ForwardedOp, deadline time.Time, answer func(*kvpb.ForwardedResult)) {
	if err := s.refuseForwarded(deadline); err != nil {
		answer(&kvpb.ForwardedResult{Id: op.Id, Error: rpc.MarshalStatus(err)})
		return
	}
	switch o := op.GetOp().(type) {
	case *kvpb.ForwardedOp_Write:
		l, err := s.checkWrite(o.Write)
		if err == nil && l.servesNow() {
			a, err := l.appendWrite(storeOp(o.Write.Op), o.Write.Key, o.Write.Value, o.Write.ReqId)
			if err != nil {
				answer(forwardedWrite(op.Id, nil, err))
				return
			}
			s.n.workers.do(func() {
				octx, cancel := opContext(ctx, deadline)
				defer cancel()
				r, err := l.awaitWrite(octx, a, o.Write.FromId)
				resp, err := writeResponse(l, r, err)
				answer(forwardedWrite(op.Id, resp, err))
			})
			return
		}
		if err != nil {
			answer(forwardedWrite(op.Id, nil, err))
			return
		}
	case *kvpb.ForwardedOp_Fetch:
		l, err := s.checkFetch(o.Fetch)
		if err == nil && l.servesNow() {
			if r, wait, err := l.readNow(o.Fetch.Key, o.Fetch.FromId); wait == nil {
				resp, err := s.fetchResponse(l, r, err)
				answer(forwardedFetch(op.Id, resp, err))
				return
			}
		}
		if err != nil {
			answer(forwardedFetch(op.Id, nil, err))
			return
		}
	}
	s.n.workers.do(func() {
		// Checked again: the op may have waited for the worker.
		if err := s.refuseForwarded(deadline); err != nil {
			answer(&kvpb.ForwardedResult{Id: op.Id, Error: rpc.MarshalStatus(err)})
			return
		}
		answer(s.forwarded(ctx, op, deadline))
	})
}

// refuseForwarded is the refusal of an operation of a Forward stream that
// must not run: the leader's inbound RPC is down (as its interceptor
// refuses a Write or Fetch call), or the operation's time ran out before
// it started.
func (s *peerServer) refuseForwarded(deadline time.Time) error {
	n := s.n
	if err := n.guard.peerDown(); err != nil {
		return err
	}
	if !deadline.IsZero() && !time.Now().Before(deadline) {
		return fmt.Errorf("%w: node %s: the operation's time (timeout_us) ran out before it started", kvstore.ErrTimeout, n.cfg.ID)
	}
	return nil
}

// forwardedWrite is the answer of forwarded write id.
func forwardedWrite(id uint64, resp *kvpb.WriteResponse, err error) *kvpb.ForwardedResult {
	r := &kvpb.ForwardedResult{Id: id, Error: rpc.MarshalStatus(err)}
	if err == nil {
		r.Result = &kvpb.ForwardedResult_Write{Write: resp}
	}
	return r
}

// forwardedFetch is the answer of forwarded fetch id.
func forwardedFetch(id uint64, resp *kvpb.FetchResponse, err error) *kvpb.ForwardedResult {
	r := &kvpb.ForwardedResult{Id: id, Error: rpc.MarshalStatus(err)}
	if err == nil {
		r.Result = &kvpb.ForwardedResult_Fetch{Fetch: resp}
	}
	return r
}

// forwarded serves one operation of a Forward stream as a Write or Fetch
// call would serve it (startForwarded checked that it may run).
func (s *peerServer) forwarded(ctx context.Context, op *kvpb.ForwardedOp, deadline time.Time) *kvpb.ForwardedResult {
	octx, cancel := opContext(ctx, deadline)
	defer cancel()
	switch o := op.GetOp().(type) {
	case *kvpb.ForwardedOp_Write:
		resp, err := s.Write(octx, o.Write)
		return forwardedWrite(op.Id, resp, err)
	case *kvpb.ForwardedOp_Fetch:
		resp, err := s.Fetch(octx, o.Fetch)
		return forwardedFetch(op.Id, resp, err)
	default:
		err := fmt.Errorf("%w: node %s: a forwarded operation of no known kind", kvstore.ErrBadRequest, s.n.cfg.ID)
		return &kvpb.ForwardedResult{Id: op.Id, Error: rpc.MarshalStatus(err)}
	}
}

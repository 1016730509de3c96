package node

// The Append calls a leader keeps in flight to one follower
// (docs/design.md, Replication: Pipelining), as etcd-io/raft's Progress in
// its replicate state keeps several MsgApp in flight: the next batch of
// entries goes while the follower still applies, or writes to its disk,
// the one before, so neither the follower's disk nor the leader waits for
// the other.

import (
	"context"
	"time"

	"github.com/kvstore/kvstore/clock"
	"github.com/kvstore/kvstore/rpc/kvpb"
)

// DefaultAppendsInFlight is Config.AppendsInFlight's default. Of 1, 2
// and 4, 4 did best in process (BenchmarkConcurrentWrites), 2 through the
// Go client on node processes sharing two cores, where 4 lost to 1; 2
// gained in both.
const DefaultAppendsInFlight = 2

// appendCall is one Append call in flight to a follower.
type appendCall struct {
	req     *kvpb.AppendRequest
	id      uint64 // its place in the order the window sent its calls
	sent    clock.Instant
	barrier bool // it carries no entries and waits for the follower's disk
	early   int  // the bytes of its entries, if it asks for an early answer
	resp    *kvpb.AppendResponse
	err     error
}

// appendWindow is the Append calls in flight to one follower, owned by its
// replicator, under a context that ends them all: at most
// Config.AppendsInFlight calls that carry entries (or a heartbeat), plus at
// most one barrier (an Append with no entries asking for an early answer,
// which the follower answers once its disk holds what it applied), so
// that new entries never wait behind a disk.
//
// At most limit+1 calls are in flight (room), and done holds as many, so a
// call's answer never waits to be delivered.
type appendWindow struct {
	ctx       context.Context
	cancel    context.CancelFunc
	calls     int    // calls in flight, the barrier included
	carrying  int    // calls in flight that carry entries
	lastBatch int    // the entries of the last call sent that carried some
	barrier   bool   // the barrier is in flight
	early     int    // bytes of entries in flight asked for an early answer
	sent      uint64 // calls sent so far (the last one's id)
	taken     uint64 // the highest id of a call whose answer took its Append
	done      chan *appendCall
}

// newAppendWindow is an empty window under parent for up to max calls
// besides the barrier.
func newAppendWindow(parent context.Context, max int) *appendWindow {
	w := &appendWindow{done: make(chan *appendCall, max+1)}
	w.ctx, w.cancel = context.WithCancel(parent)
	return w
}

// room reports whether a call that carries entries (or a heartbeat) may
// go, with limit such calls in flight at most.
func (w *appendWindow) room(limit int) bool {
	n := w.calls
	if w.barrier {
		n--
	}
	return n < limit
}

// add counts req, sent at sent, as a call in flight.
func (w *appendWindow) add(req *kvpb.AppendRequest, sent clock.Instant) *appendCall {
	w.sent++
	call := &appendCall{req: req, id: w.sent, sent: sent, barrier: req.AnswerEarly && len(req.Entries) == 0}
	if req.AnswerEarly {
		call.early = entryBytes(req.Entries)
	}
	w.calls++
	if len(req.Entries) > 0 {
		w.carrying++
		w.lastBatch = len(req.Entries)
	}
	w.early += call.early
	w.barrier = w.barrier || call.barrier
	return call
}

// fail counts req as a call that failed with err before it went out; its
// answer arrives on w.done.
func (w *appendWindow) fail(req *kvpb.AppendRequest, sent clock.Instant, err error) {
	call := w.add(req, sent)
	call.err = err
	w.done <- call
}

// send starts req on c, bounded by timeout; its answer arrives on w.done.
func (w *appendWindow) send(c kvpb.PeerClient, req *kvpb.AppendRequest, sent clock.Instant, timeout time.Duration) {
	call := w.add(req, sent)
	parent := w.ctx
	go func() {
		ctx, cancel := context.WithTimeout(parent, timeout)
		call.resp, call.err = c.Append(ctx, req)
		cancel()
		w.done <- call // never blocks: the channel holds every call
	}()
}

// finished records that call, taken from w.done, is over.
func (w *appendWindow) finished(call *appendCall) {
	w.calls--
	if len(call.req.Entries) > 0 {
		w.carrying--
	}
	w.early -= call.early
	if call.barrier {
		w.barrier = false
	}
}

// overtaken reports whether call failed after a call sent later took its
// Append: that one followed the position call left, so the follower has
// what call carried, and its failure (a barrier that timed out on a slow
// disk while entries went on beside it, an answer lost) says nothing.
func (w *appendWindow) overtaken(call *appendCall) bool {
	return call.err != nil && w.late(call)
}

// late reports whether call, taken from w.done, was answered after a
// call sent later had its answer taken.
func (w *appendWindow) late(call *appendCall) bool { return call.id < w.taken }

// reset ends the calls in flight and waits for them, dropping their
// answers (they were sent on what the leader no longer believes of the
// follower), and opens the window again under parent.
func (w *appendWindow) reset(parent context.Context) {
	w.cancel()
	for w.calls > 0 {
		w.finished(<-w.done)
	}
	w.ctx, w.cancel = context.WithCancel(parent)
}

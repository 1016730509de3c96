package node

// The write path (docs/design.md, Writes and visibility): every client
// write enters here, is checked against the node's limits, and is
// forwarded to the leader (or written as the leader: leader.write) with
// one request id until it is acknowledged or fails; the writer's node then
// caches the value it wrote.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/clock"
	"github.com/kvstore/kvstore/coord"
	"github.com/kvstore/kvstore/rpc"
	"github.com/kvstore/kvstore/rpc/kvpb"
	"github.com/kvstore/kvstore/store"
	"google.golang.org/grpc"
	grpcpeer "google.golang.org/grpc/peer"
)

// MaxRequestID is the longest request id a client may attach to a write.
const MaxRequestID = 128

// Set sets key to value through this node. It returns once a majority of
// voters hold the write and every cached copy of the key was invalidated.
func (n *Node) Set(ctx context.Context, key, value string) error {
	return n.writer.write(ctx, kvpb.Op_OP_SET, "", key, value)
}

// Delete removes key through this node, with Set's guarantees.
func (n *Node) Delete(ctx context.Context, key string) error {
	return n.writer.write(ctx, kvpb.Op_OP_DELETE, "", key, "")
}

// SetWithID sets key like Set, named by the caller's request id: a retry
// with the same id (through any node) is applied once. An empty id behaves
// like Set.
func (n *Node) SetWithID(ctx context.Context, reqID, key, value string) error {
	return n.writer.write(ctx, kvpb.Op_OP_SET, reqID, key, value)
}

// DeleteWithID removes key like Delete, named by the caller's request id.
func (n *Node) DeleteWithID(ctx context.Context, reqID, key string) error {
	return n.writer.write(ctx, kvpb.Op_OP_DELETE, reqID, key, "")
}

// writer is the node's write path below Set and Delete: it names each
// write with a request id and forwards it to the leader until it is
// acknowledged or fails.
type writer struct {
	n *Node
	// incarn and reqSeq make the ids of the writes this node names: the
	// node's id, its incarnation (random, drawn when it is built) and a
	// counter.
	incarn string
	reqSeq atomic.Uint64
	writes atomic.Uint64 // writes acknowledged through this node
}

func newWriter(n *Node) *writer {
	return &writer{n: n, incarn: strconv.FormatUint(rand.Uint64(), 36)}
}

// write is every client write's one path: Set, Delete and their WithID
// forms. clientID is the caller's request id ("": the node makes one). It
// checks the id and the node's limits before anything is sent, forwards
// the write to the leader under the operation's context, and records the
// operation in the node's metrics.
func (w *writer) write(ctx context.Context, op kvpb.Op, clientID, key, value string) (err error) {
	n := w.n
	start := n.now()
	defer func() { n.met.observe(writeKind(op), start, err) }()
	if err := w.check(clientID, key, value); err != nil {
		return err
	}
	octx, done, err := n.opContext(ctx)
	if err != nil {
		return err
	}
	defer done()
	if err := w.forwardWrite(octx, op, key, value, w.requestID(clientID), nil); err != nil {
		return err
	}
	w.writes.Add(1)
	return nil
}

// check refuses a write whose request id or size the node's limits
// refuse.
func (w *writer) check(clientID, key, value string) error {
	if len(clientID) > MaxRequestID {
		return fmt.Errorf("%w: request id of %d bytes (at most %d)", kvstore.ErrBadRequest, len(clientID), MaxRequestID)
	}
	return w.n.limits.checkWrite(key, value)
}

// appendedWrite is a client write this node appended to its log as
// leader on the goroutine it arrived on (appendNow), to be finished by
// finish on another.
type appendedWrite struct {
	l                 *leader
	a                 appended
	op                kvpb.Op
	key, value, reqID string
	// start is when the write arrived, for its metrics; st and sent are
	// the serving state and the time before the append, which the
	// writer's copy of the value is installed under, as write's attempt
	// takes them before it writes.
	start, sent clock.Instant
	st          *servingState
}

// appendNow is the first part of write for a write that arrived on a
// client stream of the leader: if this node leads and serves, and the
// write passes every check, it is appended now, on the stream's receiver,
// and only its wait goes to a worker (finish), as a forwarded write is
// (forward.go): the write reaches the log a hand-off sooner. nil: write
// takes write's whole path instead (this node does not lead or serve, or
// a check fails, which write then reports).
func (w *writer) appendNow(op kvpb.Op, clientID, key, value string) *appendedWrite {
	n := w.n
	start := n.now()
	if w.check(clientID, key, value) != nil {
		return nil
	}
	st := n.serving.Load()
	if st.ctx.Err() != nil || !n.sessionLive(st) {
		return nil
	}
	v := n.view.Load()
	l := n.lead.Load()
	if v.leader.ID != n.cfg.ID || l == nil || l.epoch != v.leader.Epoch || !l.servesNow() {
		return nil
	}
	reqID := w.requestID(clientID)
	if validateWrite(op, key, value, reqID) != nil {
		return nil
	}
	sent := n.now()
	a, err := l.appendWrite(storeOp(op), key, value, reqID)
	if err != nil {
		return nil // nothing appended: write tries again and reports
	}
	return &appendedWrite{l: l, a: a, op: op, key: key, value: value, reqID: reqID, start: start, sent: sent, st: st}
}

// finish is the rest of write for a write appendNow appended: it waits
// for it under ctx and the serving state it was appended under, and, if
// that attempt fails in a way another may not, goes on as write would.
// Nothing is checked again: write checks the serving state once, before
// its append, too, and an append is always followed by its wait (which
// marks the leader's own entry on disk, even for an operation that is
// over, so that it counts toward the majority).
func (w *writer) finish(ctx context.Context, aw *appendedWrite) (err error) {
	n := w.n
	defer func() { n.met.observe(writeKind(aw.op), aw.start, err) }()
	octx, done := n.bound(ctx, aw.st)
	defer done()
	if err := w.forwardWrite(octx, aw.op, aw.key, aw.value, aw.reqID, aw); err != nil {
		return err
	}
	w.writes.Add(1)
	return nil
}

// requestID is the request id a write travels under: the client's, in a
// namespace of its own ("c."), or a fresh one in the nodes' namespace
// ("n."), made of the node's id, its incarnation and a counter. The two
// namespaces never meet, whatever the node ids and client ids: a client
// id equal to a node-made id's tail would otherwise be taken for that
// write's retry and acknowledged without being applied. The incarnation
// is random rather than the start time, which a clock stepped back (or a
// simulation's virtual time) can repeat.
func (w *writer) requestID(clientID string) string {
	if clientID != "" {
		return clientReqPrefix + clientID
	}
	return nodeReqPrefix + w.n.cfg.ID + "." + w.incarn + "." + strconv.FormatUint(w.reqSeq.Add(1), 36)
}

// The namespaces of request ids: those clients chose and those nodes make.
const (
	clientReqPrefix = "c."
	nodeReqPrefix   = "n."
)

// forwardWrite sends a write to the leader (or applies it as the leader),
// retrying with the same request id until it is acknowledged, fails
// definitely, or ctx ends. A call in flight to a leader this node no longer
// sees as the leader (it learned of a newer one) is dropped at once and the
// write retried at the new leader: the request id makes the retry exact,
// since a leader that serves holds every entry of older epochs that can
// still commit, and applies the write only if the id is not among them. A
// failure is reported as outcome unknown only if an attempt may have been
// applied: one that reached a leader and got no answer that proves it
// applied nothing (definite).
func (w *writer) forwardWrite(ctx context.Context, op kvpb.Op, key, value, reqID string, first *appendedWrite) error {
	n := w.n
	// Every write passes here first, on the node it entered: one the leader
	// would refuse, or that would make an entry no follower can take (or no
	// leader can even send), fails at once.
	if err := validateWrite(op, key, value, reqID); err != nil {
		return fmt.Errorf("node %s: %w", n.cfg.ID, err)
	}
	var lastErr error
	mayApplied := false // some attempt may have been applied
	// Through a follower, ask for a lease on the written value only if
	// this node held a copy of the key (it is read here): a holding makes
	// every later write of the key wait for this node, so a node that
	// only writes a key should not hold it (docs/design.md, Writes and
	// visibility). The leader's own copy costs its writes nothing.
	from := ""
	if n.reader.cache.holds(key) {
		from = n.cfg.ID
	}
	fail := func(err error) error {
		err = joinLast(err, lastErr)
		if mayApplied && !errors.Is(err, kvstore.ErrOutcomeUnknown) {
			return fmt.Errorf("%w: %w", kvstore.ErrOutcomeUnknown, err)
		}
		return err
	}
	for {
		var l *leader
		var addr string
		var target coord.Leader
		var err error
		var st *servingState
		var sent clock.Instant
		if first != nil {
			l, st, sent = first.l, first.st, first.sent
		} else {
			l, addr, target, err = n.leaderTarget(ctx)
			if err != nil {
				return fail(err)
			}
			st, sent = n.serving.Load(), n.now()
		}
		var ver store.Version
		var epoch int64
		var lease time.Duration
		if l != nil {
			var r writeResult
			if first != nil {
				// Appended already (appendNow): this attempt waits for it.
				r, err = l.awaitWrite(ctx, first.a, n.cfg.ID)
				first = nil
			} else {
				r, err = l.write(ctx, storeOp(op), key, value, reqID, n.cfg.ID)
			}
			ver, epoch, lease = r.version, l.epoch, r.lease
			if err != nil && !definite(err) {
				mayApplied = true
			}
		} else {
			var resp *kvpb.WriteResponse
			var reached bool
			resp, reached, err = w.sendWrite(ctx, addr, target, &kvpb.WriteRequest{Cluster: n.cfg.Cluster, Incarnation: n.incarnationSent(), Op: op, Key: key, Value: value, ReqId: reqID, FromId: from})
			if err == nil {
				ver, epoch, lease = fromPos(resp.Version), resp.Epoch, time.Duration(resp.LeaseMs)*time.Millisecond
			} else if reached && !definite(err) {
				mayApplied = true
			}
		}
		if err == nil {
			// The writer's node caches the value it wrote (docs/design.md,
			// Writes and visibility).
			n.reader.install(st, key, value, op == kvpb.Op_OP_SET, ver, epoch, lease, sent, true)
			return nil
		}
		if !retryable(err) {
			return fail(err)
		}
		if l == nil {
			err = n.leaderErr(target, addr, err)
		}
		lastErr = err
		if err := n.retryPause(ctx); err != nil {
			return fail(err)
		}
	}
}

// sendWrite sends one forwarded write to the leader target at addr, on
// the node's Forward stream to addr (forward.go), or in a Write call of
// its own to a leader without Forward. reached reports whether the
// request may have left this node: gRPC reports the peer only for an
// attempt that got a stream on a connection, and without one the request
// never left; a write on a stream may have left once it was handed to the
// stream's sender. The call ends as soon as this node sees
// another leader (toLeader).
func (w *writer) sendWrite(ctx context.Context, addr string, target coord.Leader, req *kvpb.WriteRequest) (resp *kvpb.WriteResponse, reached bool, err error) {
	n := w.n
	c, err := n.pool.Peer(addr)
	if err != nil {
		return nil, false, err
	}
	cctx, done := n.toLeader(ctx, target)
	defer done()
	if cctx.Err() != nil {
		return nil, false, callErr(cctx, ctxErr(cctx))
	}
	resp, reached, err = n.forwarder.write(cctx, c, addr, req)
	if !errors.Is(err, errUseCall) {
		if err != nil {
			return nil, reached, callErr(cctx, rpc.FromStatus(err))
		}
		return resp, true, nil
	}
	var p grpcpeer.Peer
	resp, err = c.Write(cctx, req, grpc.Peer(&p))
	if err != nil {
		return nil, p.Addr != nil, callErr(cctx, rpc.FromStatus(err))
	}
	return resp, true, nil
}

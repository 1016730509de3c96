// Package memtransport is an in-memory node-to-node transport for
// simulations: a Network of Peer services (a node's PeerService) reached
// by address, whose links lose, delay, reorder, duplicate and cut messages
// on demand.
//
// A call from one address to another is a request message and a reply
// message, each going through the faults of its direction's link: the
// request through from->to, the reply through to->from. Messages are copied
// (proto.Clone) both ways, so that neither side shares memory with the
// other, and the caller's context bounds the call as with gRPC: its
// deadline reaches the server, and its end returns at once with the gRPC
// status of a context error.
//
// A lost message (a cut link, a drop) leaves the call waiting until its
// context ends, as over a link that black-holes packets; such a call
// reports the peer (grpc.Peer) as reached, since the request may have
// arrived. A call to an address with no service registered fails at once
// with Unavailable and reports no peer: like a refused connection, the
// request never left.
//
// A stream (Forward) is an ordered connection: its messages keep their
// order, are not duplicated, and a lost one breaks the stream (stream.go).
//
// Everything runs in goroutines and timers, with no real I/O, so a whole
// cluster on a Network runs inside a testing/synctest bubble.
package memtransport

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/kvstore/kvstore/rpc/kvpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpcpeer "google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Faults are what one direction of a link does to the messages it
// carries. The zero value delivers every message at once.
type Faults struct {
	// Cut loses every message: one direction of a partition.
	Cut bool
	// Drop is the probability that a message is lost.
	Drop float64
	// Delay is how long every message takes, plus a uniform random extra
	// of up to Jitter: messages sent close together may overtake each
	// other.
	Delay, Jitter time.Duration
	// Reorder is the probability that a message is held back a further
	// ReorderDelay, so that later messages overtake it.
	Reorder      float64
	ReorderDelay time.Duration
	// Duplicate is the probability that a request is delivered a second
	// time, after the first (its answer is discarded). Replies are not
	// duplicated: a gRPC call has one answer.
	Duplicate float64
}

// Stats count what the network did to messages.
type Stats struct {
	Sent, Delivered, Lost, Duplicated, Refused uint64
}

type link struct{ from, to string }

// Network is a set of Peer services by address and the faults of the links
// between them. It is safe for concurrent use.
type Network struct {
	mu       sync.Mutex
	services map[string]kvpb.PeerServer
	faults   map[link]Faults
	rng      *rand.Rand
	stats    Stats
	closed   bool

	ctx     context.Context // canceled by Close: duplicates on their way are lost, streams end
	cancel  context.CancelFunc
	spawned sync.WaitGroup // duplicates on their way, streams' servers
}

// New returns an empty network whose random faults are drawn from seed.
func New(seed uint64) *Network {
	ctx, cancel := context.WithCancel(context.Background())
	return &Network{
		services: make(map[string]kvpb.PeerServer),
		faults:   make(map[link]Faults),
		rng:      rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		ctx:      ctx,
		cancel:   cancel,
	}
}

// Close loses the duplicated requests still on their way, ends the
// streams, and waits for the duplicates being delivered and the streams'
// servers, so that no goroutine of the network outlives it (a synctest
// bubble ends only when all its goroutines have). Later duplicates are
// not sent and later streams are refused.
func (nw *Network) Close() {
	nw.mu.Lock()
	nw.closed = true
	nw.mu.Unlock()
	nw.cancel()
	nw.spawned.Wait()
}

// spawn runs f (a duplicate's delivery, a stream's server) in a goroutine
// Close waits for, unless the network is closed.
func (nw *Network) spawn(f func()) bool {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	if nw.closed {
		return false
	}
	nw.spawned.Add(1)
	go func() {
		defer nw.spawned.Done()
		f()
	}()
	return true
}

// Register makes srv the service at addr (replacing one registered
// before: a restarted node).
func (nw *Network) Register(addr string, srv kvpb.PeerServer) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	nw.services[addr] = srv
}

// Unregister removes the service at addr: calls to it are refused.
func (nw *Network) Unregister(addr string) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	delete(nw.services, addr)
}

// SetFaults sets the faults of the direction from->to of a link.
func (nw *Network) SetFaults(from, to string, f Faults) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	if f == (Faults{}) {
		delete(nw.faults, link{from, to})
		return
	}
	nw.faults[link{from, to}] = f
}

// Faults returns the faults of the direction from->to.
func (nw *Network) Faults(from, to string) Faults {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	return nw.faults[link{from, to}]
}

// Cut cuts (or, with cut false, restores) the direction from->to, keeping
// its other faults.
func (nw *Network) Cut(from, to string, cut bool) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	f := nw.faults[link{from, to}]
	f.Cut = cut
	if f == (Faults{}) {
		delete(nw.faults, link{from, to})
		return
	}
	nw.faults[link{from, to}] = f
}

// Heal clears every link's faults.
func (nw *Network) Heal() {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	clear(nw.faults)
}

// Stats returns the counts so far.
func (nw *Network) Stats() Stats {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	return nw.stats
}

// fate is what happens to one message: lost, or delivered after delay,
// and (for a request) delivered again after dupDelay.
type fate struct {
	lost     bool
	delay    time.Duration
	dup      bool
	dupDelay time.Duration
}

// fate draws the fate of one message on from->to.
func (nw *Network) fate(from, to string) fate {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	nw.stats.Sent++
	f := nw.faults[link{from, to}]
	if f.Cut || (f.Drop > 0 && nw.rng.Float64() < f.Drop) {
		nw.stats.Lost++
		return fate{lost: true}
	}
	var r fate
	r.delay = nw.delayLocked(f)
	if f.Duplicate > 0 && nw.rng.Float64() < f.Duplicate {
		nw.stats.Duplicated++
		r.dup = true
		r.dupDelay = r.delay + nw.delayLocked(f)
	}
	return r
}

func (nw *Network) delayLocked(f Faults) time.Duration {
	d := f.Delay
	if f.Jitter > 0 {
		d += time.Duration(nw.rng.Int64N(int64(f.Jitter) + 1))
	}
	if f.Reorder > 0 && nw.rng.Float64() < f.Reorder {
		d += f.ReorderDelay
	}
	return d
}

func (nw *Network) service(addr string) kvpb.PeerServer {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	return nw.services[addr]
}

func (nw *Network) count(f func(*Stats)) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	f(&nw.stats)
}

// Endpoint returns a transport (node.Transport) whose calls leave from
// addr: give each node its own, made for its advertised address.
func (nw *Network) Endpoint(addr string) *Endpoint {
	ctx, cancel := context.WithCancel(context.Background())
	return &Endpoint{nw: nw, from: addr, ctx: ctx, cancel: cancel}
}

// Endpoint is one node's side of a Network: it implements node.Transport.
type Endpoint struct {
	nw     *Network
	from   string
	ctx    context.Context // canceled by Close: calls in flight end
	cancel context.CancelFunc
}

// Peer returns a client of the service at addr; it fails once the
// endpoint is closed.
func (e *Endpoint) Peer(addr string) (kvpb.PeerClient, error) {
	if e.ctx.Err() != nil {
		return nil, fmt.Errorf("memtransport: endpoint %s closed", e.from)
	}
	return &client{e: e, to: addr}, nil
}

// Close ends the calls in flight (Canceled) and fails later Peer calls.
func (e *Endpoint) Close() { e.cancel() }

// Addr is the net.Addr a delivered call reports (grpc.Peer).
type Addr string

// Network implements net.Addr.
func (Addr) Network() string { return "memtransport" }

// String implements net.Addr.
func (a Addr) String() string { return string(a) }

// client is a kvpb.PeerClient from one endpoint to one address.
type client struct {
	e  *Endpoint
	to string
}

func (c *client) Prepare(ctx context.Context, in *kvpb.PrepareRequest, opts ...grpc.CallOption) (*kvpb.PrepareResponse, error) {
	return call(ctx, c, in, opts, kvpb.PeerServer.Prepare)
}

func (c *client) Append(ctx context.Context, in *kvpb.AppendRequest, opts ...grpc.CallOption) (*kvpb.AppendResponse, error) {
	return call(ctx, c, in, opts, kvpb.PeerServer.Append)
}

func (c *client) GetSnapshot(ctx context.Context, in *kvpb.GetSnapshotRequest, opts ...grpc.CallOption) (*kvpb.Snapshot, error) {
	return call(ctx, c, in, opts, kvpb.PeerServer.GetSnapshot)
}

func (c *client) InstallSnapshot(ctx context.Context, in *kvpb.SnapshotChunk, opts ...grpc.CallOption) (*kvpb.SnapshotChunkResponse, error) {
	return call(ctx, c, in, opts, kvpb.PeerServer.InstallSnapshot)
}

func (c *client) Fetch(ctx context.Context, in *kvpb.FetchRequest, opts ...grpc.CallOption) (*kvpb.FetchResponse, error) {
	return call(ctx, c, in, opts, kvpb.PeerServer.Fetch)
}

func (c *client) Renew(ctx context.Context, in *kvpb.RenewRequest, opts ...grpc.CallOption) (*kvpb.RenewResponse, error) {
	return call(ctx, c, in, opts, kvpb.PeerServer.Renew)
}

func (c *client) Write(ctx context.Context, in *kvpb.WriteRequest, opts ...grpc.CallOption) (*kvpb.WriteResponse, error) {
	return call(ctx, c, in, opts, kvpb.PeerServer.Write)
}

func (c *client) RemoveVoter(ctx context.Context, in *kvpb.RemoveVoterRequest, opts ...grpc.CallOption) (*kvpb.RemoveVoterResponse, error) {
	return call(ctx, c, in, opts, kvpb.PeerServer.RemoveVoter)
}

func (c *client) Leave(ctx context.Context, in *kvpb.LeaveRequest, opts ...grpc.CallOption) (*kvpb.LeaveResponse, error) {
	return call(ctx, c, in, opts, kvpb.PeerServer.Leave)
}

func (c *client) Probe(ctx context.Context, in *kvpb.ProbeRequest, opts ...grpc.CallOption) (*kvpb.ProbeResponse, error) {
	return call(ctx, c, in, opts, kvpb.PeerServer.Probe)
}

// result is a handler's answer.
type result[Resp proto.Message] struct {
	resp Resp
	err  error
}

// call runs one call of method from c's endpoint to c.to through the
// links' faults.
func call[Req, Resp proto.Message](ctx context.Context, c *client, in Req, opts []grpc.CallOption, method func(kvpb.PeerServer, context.Context, Req) (Resp, error)) (Resp, error) {
	var zero Resp
	nw := c.e.nw
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(c.e.ctx, cancel)
	defer stop()
	if err := ctx.Err(); err != nil {
		return zero, ctxStatus(ctx, c)
	}
	srv := nw.service(c.to)
	if srv == nil {
		nw.count(func(s *Stats) { s.Refused++ })
		return zero, status.Errorf(codes.Unavailable, "memtransport: no service at %s (connection refused)", c.to)
	}
	// The request may leave: from here on the caller cannot know it did
	// not arrive.
	setPeer(opts, c.to)
	req := nw.fate(c.e.from, c.to)
	if req.lost {
		<-ctx.Done()
		return zero, ctxStatus(ctx, c)
	}
	if req.dup {
		// The copy runs on the call's deadline, not its cancellation: it
		// is a message already on its way.
		dup := proto.Clone(in).(Req)
		dctx, dcancel := detached(ctx)
		sent := nw.spawn(func() {
			defer dcancel()
			stop := context.AfterFunc(nw.ctx, dcancel)
			defer stop()
			if wait(dctx, req.dupDelay) {
				_, _ = method(srv, dctx, dup)
			}
		})
		if !sent {
			dcancel()
		}
	}
	if !wait(ctx, req.delay) {
		return zero, ctxStatus(ctx, c)
	}
	out := make(chan result[Resp], 1)
	arg := proto.Clone(in).(Req)
	go func() {
		resp, err := method(srv, ctx, arg)
		out <- result[Resp]{resp, err}
	}()
	var r result[Resp]
	select {
	case r = <-out:
	case <-ctx.Done():
		return zero, ctxStatus(ctx, c)
	}
	nw.count(func(s *Stats) { s.Delivered++ })
	rep := nw.fate(c.to, c.e.from)
	if rep.lost {
		<-ctx.Done()
		return zero, ctxStatus(ctx, c)
	}
	if !wait(ctx, rep.delay) {
		return zero, ctxStatus(ctx, c)
	}
	if r.err != nil {
		if _, ok := status.FromError(r.err); !ok {
			r.err = status.Error(codes.Unknown, r.err.Error())
		}
		return zero, r.err
	}
	return proto.Clone(r.resp).(Resp), nil
}

// ctxStatus is the gRPC status error of a call whose context ended: the
// caller's end (DeadlineExceeded, Canceled), or Canceled for a closed
// endpoint.
func ctxStatus(ctx context.Context, c *client) error {
	if c.e.ctx.Err() != nil {
		return status.Errorf(codes.Canceled, "memtransport: endpoint %s closed", c.e.from)
	}
	return status.FromContextError(ctx.Err()).Err()
}

// setPeer fills the grpc.Peer call options with the address called.
func setPeer(opts []grpc.CallOption, addr string) {
	for _, o := range opts {
		if p, ok := o.(grpc.PeerCallOption); ok && p.PeerAddr != nil {
			*p.PeerAddr = grpcpeer.Peer{Addr: Addr(addr)}
		}
	}
}

// detached is a context with ctx's deadline (or none) that ctx's
// cancellation does not end.
func detached(ctx context.Context) (context.Context, context.CancelFunc) {
	d := context.WithoutCancel(ctx)
	if dl, ok := ctx.Deadline(); ok {
		return context.WithDeadline(d, dl)
	}
	return context.WithTimeout(d, time.Minute)
}

// wait waits d, and reports false if ctx ended first.
func wait(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

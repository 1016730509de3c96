package node

import (
	"context"
	"fmt"
	"sync"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/rpc"
	"github.com/kvstore/kvstore/rpc/kvpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Transport carries a node's outbound node-to-node calls: it hands out a
// client of the Peer service of the node at an address. *rpc.Pool (gRPC
// connections, the default) is one; an in-memory network for simulations
// (rpc/memtransport) is another. Implementations are safe for concurrent
// use.
type Transport interface {
	// Peer returns a client for the Peer service at addr.
	Peer(addr string) (kvpb.PeerClient, error)
	// Close releases the transport; later Peer calls fail.
	Close()
}

// PeerService is the node's node-to-node service (kvpb.PeerServer) for an
// in-memory transport: each call goes through what a call over gRPC goes
// through on arrival (the node's interceptor: rmi-down, the answer margin
// of answerBefore, errors turned into gRPC status errors by rpc.ToStatus)
// into the same handler, and the node waits for the calls in flight before
// Close or Kill returns, as its gRPC server does. A call to a stopped node
// fails with Unavailable; the call's context ends when the node stops.
//
// TLS (Config.ServerTLS) is not applied: an in-memory caller shows no
// certificate, and only code in the same process can call.
func (n *Node) PeerService() kvpb.PeerServer { return &localPeer{n: n} }

// localPeer is PeerService: every method runs the gRPC service
// descriptor's handler of that method with the node's interceptor.
type localPeer struct {
	kvpb.UnimplementedPeerServer
	n *Node
}

func (s *localPeer) Prepare(ctx context.Context, req *kvpb.PrepareRequest) (*kvpb.PrepareResponse, error) {
	return serveLocal[*kvpb.PrepareResponse](ctx, s.n, "Prepare", req)
}

func (s *localPeer) Append(ctx context.Context, req *kvpb.AppendRequest) (*kvpb.AppendResponse, error) {
	return serveLocal[*kvpb.AppendResponse](ctx, s.n, "Append", req)
}

func (s *localPeer) GetSnapshot(ctx context.Context, req *kvpb.GetSnapshotRequest) (*kvpb.Snapshot, error) {
	return serveLocal[*kvpb.Snapshot](ctx, s.n, "GetSnapshot", req)
}

func (s *localPeer) InstallSnapshot(ctx context.Context, req *kvpb.SnapshotChunk) (*kvpb.SnapshotChunkResponse, error) {
	return serveLocal[*kvpb.SnapshotChunkResponse](ctx, s.n, "InstallSnapshot", req)
}

func (s *localPeer) Fetch(ctx context.Context, req *kvpb.FetchRequest) (*kvpb.FetchResponse, error) {
	return serveLocal[*kvpb.FetchResponse](ctx, s.n, "Fetch", req)
}

func (s *localPeer) Renew(ctx context.Context, req *kvpb.RenewRequest) (*kvpb.RenewResponse, error) {
	return serveLocal[*kvpb.RenewResponse](ctx, s.n, "Renew", req)
}

func (s *localPeer) Write(ctx context.Context, req *kvpb.WriteRequest) (*kvpb.WriteResponse, error) {
	return serveLocal[*kvpb.WriteResponse](ctx, s.n, "Write", req)
}

func (s *localPeer) RemoveVoter(ctx context.Context, req *kvpb.RemoveVoterRequest) (*kvpb.RemoveVoterResponse, error) {
	return serveLocal[*kvpb.RemoveVoterResponse](ctx, s.n, "RemoveVoter", req)
}

func (s *localPeer) Leave(ctx context.Context, req *kvpb.LeaveRequest) (*kvpb.LeaveResponse, error) {
	return serveLocal[*kvpb.LeaveResponse](ctx, s.n, "Leave", req)
}

func (s *localPeer) Probe(ctx context.Context, req *kvpb.ProbeRequest) (*kvpb.ProbeResponse, error) {
	return serveLocal[*kvpb.ProbeResponse](ctx, s.n, "Probe", req)
}

// Forward serves an in-memory Forward stream.
func (s *localPeer) Forward(st grpc.BidiStreamingServer[kvpb.ForwardRequest, kvpb.ForwardResponse]) error {
	return serveLocalStream(s.n, "Forward", st)
}

// serveLocalStream serves one in-memory stream of method into the node's
// peerServer as the gRPC server would, without TLS (as serveLocal): rmi-down
// refuses it, errors become gRPC statuses, and a stopping node ends it as
// it ends a stream over gRPC (serveOps sends the last answers, within
// stopFlush).
func serveLocalStream(n *Node, method string, ss grpc.ServerStream) error {
	var desc *grpc.StreamDesc
	for i := range kvpb.Peer_ServiceDesc.Streams {
		if d := &kvpb.Peer_ServiceDesc.Streams[i]; d.StreamName == method {
			desc = d
		}
	}
	if desc == nil {
		return status.Errorf(codes.Unimplemented, "node %s: no peer stream %s", n.cfg.ID, method)
	}
	if !n.local.enter() {
		return rpc.ToStatus(fmt.Errorf("node %s: %w", n.cfg.ID, kvstore.ErrStopped))
	}
	defer n.local.leave()
	if err := n.guard.peerDown(); err != nil {
		return err
	}
	return rpc.ToStatus(desc.Handler(&peerServer{n: n}, ss))
}

// serveLocal serves one in-memory call of method: the request (a copy of
// req) is decoded as gRPC would, and the descriptor's handler runs it
// through n.guard.intercept into the node's peerServer.
func serveLocal[Resp proto.Message](ctx context.Context, n *Node, method string, req proto.Message) (Resp, error) {
	var zero Resp
	h := peerHandler(method)
	if h == nil {
		return zero, status.Errorf(codes.Unimplemented, "node %s: no peer method %s", n.cfg.ID, method)
	}
	if !n.local.enter() {
		return zero, rpc.ToStatus(fmt.Errorf("node %s: %w", n.cfg.ID, kvstore.ErrStopped))
	}
	defer n.local.leave()
	cctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(n.ctx, func() { cancel(context.Cause(n.ctx)) })
	defer stop()
	dec := func(v any) error {
		proto.Merge(v.(proto.Message), req)
		return nil
	}
	resp, err := h(&peerServer{n: n}, cctx, dec, n.guard.intercept)
	if err != nil {
		return zero, err
	}
	return resp.(Resp), nil
}

// peerHandler is the gRPC service descriptor's handler of method.
func peerHandler(method string) grpc.MethodHandler {
	for _, m := range kvpb.Peer_ServiceDesc.Methods {
		if m.MethodName == method {
			return m.Handler
		}
	}
	return nil
}

// localGate admits in-memory calls (PeerService) until the node stops,
// and lets the stop wait for those in flight.
type localGate struct {
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

// enter admits one call, unless the gate is closed.
func (g *localGate) enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.wg.Add(1)
	return true
}

// leave ends a call enter admitted.
func (g *localGate) leave() { g.wg.Done() }

// close refuses further calls and waits for those in flight.
func (g *localGate) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	g.wg.Wait()
}

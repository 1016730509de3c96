package node

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kvstore/kvstore/rpc"
)

// guard is the front of the node's gRPC server: it refuses callers
// without a node certificate to the node-to-node service (tls.go), and
// intercepts every call it serves, in-memory ones too (transport.go).
type guard struct {
	n *Node
}

// intercept is the last unary interceptor: rmi-down refuses node-to-node
// calls, the deadline is pulled in so the answer arrives first
// (answerBefore), the client API runs within its limits (limiter.serve),
// and errors become gRPC statuses.
func (g *guard) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	n := g.n
	if n.rpcDown.Load() && peerMethod(info) {
		return nil, status.Error(codes.Unavailable, "node "+n.cfg.ID+": inbound RPC is down")
	}
	ctx, cancel := answerBefore(ctx, info.FullMethod)
	defer cancel()
	var resp any
	var err error
	if peerMethod(info) {
		resp, err = h(ctx, req)
	} else {
		resp, err = n.limits.serve(ctx, req, h)
	}
	return resp, rpc.ToStatus(err)
}

// interceptStream is the stream interceptor: with TLS on, a node-to-node
// stream opens only for a caller with a node certificate (tap refuses
// others earlier; this is the second line, as authorize is for calls),
// and rmi-down refuses node-to-node streams as it refuses calls. Each
// operation of a stream is answered with its own status (opstream.go).
func (g *guard) interceptStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	n := g.n
	if isPeerMethod(info.FullMethod) {
		if n.cfg.ServerTLS != nil {
			if err := g.checkNodeRole(ss.Context(), info.FullMethod); err != nil {
				return err
			}
		}
		if n.rpcDown.Load() {
			return status.Error(codes.Unavailable, "node "+n.cfg.ID+": inbound RPC is down")
		}
	}
	return rpc.ToStatus(h(srv, ss))
}

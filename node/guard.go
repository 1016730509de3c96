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

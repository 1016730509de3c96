package node

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/kvstore/kvstore"
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
	if peerMethod(info) {
		if err := g.peerDown(); err != nil {
			return nil, err
		}
	}
	ctx, cancel := answerBefore(ctx, info.FullMethod)
	defer cancel()
	var resp any
	var err error
	if peerMethod(info) {
		resp, err = h(ctx, req)
	} else if err = g.checkClientCluster(ctx); err == nil {
		resp, err = n.limits.serve(ctx, req, h)
	}
	return resp, rpc.ToStatus(err)
}

// peerDown is the refusal of a node-to-node call or stream while inbound
// RPC is down (rmi-down), or nil.
func (g *guard) peerDown() error {
	if g.n.rpcDown.Load() {
		return status.Error(codes.Unavailable, "node "+g.n.cfg.ID+": inbound RPC is down")
	}
	return nil
}

// checkClientCluster refuses, with ErrWrongNode, a client call that names
// another cluster than this node's (rpc.ClusterHeader, set by a client
// given its cluster): a client whose endpoints mix up two clusters must
// not read or write the wrong one. A call that names none passes.
func (g *guard) checkClientCluster(ctx context.Context) error {
	// ValueFromIncomingContext copies only this key's values, not the
	// whole metadata, on every client call.
	for _, c := range metadata.ValueFromIncomingContext(ctx, rpc.ClusterHeader) {
		if c != g.n.cfg.Cluster {
			return fmt.Errorf("%w: node %s is of cluster %q, not the client's cluster %q", kvstore.ErrWrongNode, g.n.cfg.ID, g.n.cfg.Cluster, c)
		}
	}
	return nil
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
		if err := g.peerDown(); err != nil {
			return err
		}
	} else if err := g.checkClientCluster(ss.Context()); err != nil {
		return rpc.ToStatus(err)
	}
	return rpc.ToStatus(h(srv, ss))
}

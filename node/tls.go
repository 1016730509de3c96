package node

import (
	"context"
	"crypto/tls"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	grpcpeer "google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/kvstore/kvstore/certs"
)

// serverCreds are the transport credentials of the node's gRPC server:
// mutual TLS with cfg (Config.ServerTLS), or plaintext if it is nil.
func serverCreds(cfg *tls.Config) grpc.ServerOption {
	if cfg == nil {
		return grpc.Creds(insecure.NewCredentials())
	}
	return grpc.Creds(credentials.NewTLS(cfg))
}

// authorize is the first unary interceptor: with TLS on, a node-to-node
// method is served only to a caller whose verified certificate names the
// node role (certs.NodeName); the client service is open to every
// certificate the handshake verified. Without TLS it lets every call
// through.
func (n *Node) authorize(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if n.cfg.ServerTLS == nil || !peerMethod(info) {
		return h(ctx, req)
	}
	name, ok := callerName(ctx)
	if !ok {
		return nil, status.Errorf(codes.PermissionDenied, "node %s: peer RPC %s needs a node certificate (CN=%s); got no verified certificate", n.cfg.ID, info.FullMethod, certs.NodeName)
	}
	if name != certs.NodeName {
		return nil, status.Errorf(codes.PermissionDenied, "node %s: peer RPC %s needs a node certificate (CN=%s); got CN=%s", n.cfg.ID, info.FullMethod, certs.NodeName, name)
	}
	return h(ctx, req)
}

// callerName is the CommonName of the caller's verified TLS certificate.
func callerName(ctx context.Context) (string, bool) {
	p, ok := grpcpeer.FromContext(ctx)
	if !ok {
		return "", false
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return "", false
	}
	return certs.VerifiedName(ti.State)
}

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
	"google.golang.org/grpc/tap"

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

// tap refuses a node-to-node call from a caller without a node
// certificate as soon as its headers arrive, before its message is read:
// a client certificate cannot make the node buffer a Peer message (up to
// rpc.MaxMsgSize). It runs on the connection's reader goroutine, so it
// only looks at the handshake's result.
func (g *guard) tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	if g.n.cfg.ServerTLS == nil || !isPeerMethod(info.FullMethodName) {
		return ctx, nil
	}
	return ctx, g.checkNodeRole(ctx, info.FullMethodName)
}

// authorize is the first unary interceptor: with TLS on, a node-to-node
// method is served only to a caller whose verified certificate names the
// node role (certs.NodeName); the client service is open to every
// certificate the handshake verified. Without TLS it lets every call
// through. (tap refuses the same callers earlier; this is the second
// line.)
func (g *guard) authorize(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if g.n.cfg.ServerTLS == nil || !peerMethod(info) {
		return h(ctx, req)
	}
	if err := g.checkNodeRole(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

// checkNodeRole is nil if the caller's verified certificate names the node
// role, else a PermissionDenied status naming what it showed.
func (g *guard) checkNodeRole(ctx context.Context, method string) error {
	name, ok := callerName(ctx)
	if !ok {
		return status.Errorf(codes.PermissionDenied, "node %s: peer RPC %s needs a node certificate (CN=%s); got no verified certificate", g.n.cfg.ID, method, certs.NodeName)
	}
	if name != certs.NodeName {
		return status.Errorf(codes.PermissionDenied, "node %s: peer RPC %s needs a node certificate (CN=%s); got CN=%s", g.n.cfg.ID, method, certs.NodeName, name)
	}
	return nil
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

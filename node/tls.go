package node

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"sync/atomic"
	"time"

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
	return grpc.Creds(lingeringCreds{credentials.NewTLS(cfg)})
}

// rejectLinger bounds how long a node waits, after refusing a TLS
// handshake, for the client to read the alert and close its end.
const rejectLinger = time.Second

// lingeringCreds are TLS server credentials that make sure a client whose
// handshake the node refused reads the reason. With TLS 1.3 the client's
// handshake ends before the node has checked its certificate, so the
// client at once writes the HTTP/2 preface. Closing the socket with that
// preface unread sends a TCP reset, which can reach the client before it
// reads the node's alert ("unknown certificate authority"): it then sees
// only "broken pipe" or "connection reset". Instead the node shuts its
// side for writing (the alert is followed by a FIN, not a reset), reads
// what the client still sends until it closes or rejectLinger passes,
// and only then closes, as a lingering close in an HTTP server does.
type lingeringCreds struct {
	credentials.TransportCredentials
}

// ServerHandshake runs the TLS handshake over a connection whose Close is
// held back until the handshake's outcome is known: a failed one closes
// lingering, a successful one hands the connection over unchanged.
func (c lingeringCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	lc := &lingerConn{Conn: raw}
	conn, info, err := c.TransportCredentials.ServerHandshake(lc)
	if err != nil {
		lc.lingerClose()
		return nil, nil, err
	}
	lc.handedOver.Store(true)
	if lc.closeWanted.Load() {
		lc.Conn.Close()
	}
	return conn, info, nil
}

// Clone keeps the lingering close in copies of the credentials.
func (c lingeringCreds) Clone() credentials.TransportCredentials {
	return lingeringCreds{c.TransportCredentials.Clone()}
}

// lingerConn is a server connection during its TLS handshake: a Close
// asked for then is only noted, and done by ServerHandshake.
type lingerConn struct {
	net.Conn
	handedOver  atomic.Bool // the handshake succeeded: Close closes
	closeWanted atomic.Bool // Close was called during the handshake
}

// Close closes the connection once the handshake is over; before, it
// notes the wish.
func (c *lingerConn) Close() error {
	if c.handedOver.Load() {
		return c.Conn.Close()
	}
	c.closeWanted.Store(true)
	return nil
}

// lingerClose ends a refused connection: FIN after the alert, read until
// the client closes (or rejectLinger), then close.
func (c *lingerConn) lingerClose() {
	defer c.Conn.Close()
	cw, ok := c.Conn.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	if c.Conn.SetReadDeadline(time.Now().Add(rejectLinger)) != nil {
		return
	}
	io.Copy(io.Discard, io.LimitReader(c.Conn, 1<<20)) //nolint:errcheck // only waiting for the client's close
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

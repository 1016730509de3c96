package rpc

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/kvstore/kvstore/rpc/kvpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
)

// MaxMsgSize bounds one gRPC message a node sends or receives: node-to-node
// messages (Appends of at most node.Config.MaxBatchBytes of entries,
// snapshot chunks of about node.Config.SnapshotChunkBytes) and client
// requests alike, so it is also what one request may cost a node in memory
// before the node checks --max-request-size. Snapshots travel in chunks,
// never whole.
const MaxMsgSize = 16 << 20

// PeerWindow is the gRPC flow-control window of node-to-node streams and
// connections: a snapshot chunk or an Append of up to a few MiB goes out
// without waiting for window updates (gRPC's window starts at 64 KiB).
const PeerWindow = 4 << 20

// Pool keeps one gRPC client connection per peer address. It is safe for
// concurrent use; Close closes every connection.
type Pool struct {
	dial func(ctx context.Context, addr string) (net.Conn, error) // nil: plain TCP
	tls  *tls.Config                                              // nil: plaintext

	mu     sync.Mutex // guards conns and closed
	conns  map[string]*grpc.ClientConn
	closed bool
}

// NewPool returns an empty pool. dial, if not nil, makes every connection
// (tests route it through fault-injecting proxies). tlsConfig, if not nil,
// makes every connection TLS, over what dial returns: the node's
// certificate and the CA it trusts (certs.ClientConfig). Its ServerName
// should be empty: each connection then checks that the peer's certificate
// names the host of the address dialed, not of a proxy in between.
func NewPool(dial func(ctx context.Context, addr string) (net.Conn, error), tlsConfig *tls.Config) *Pool {
	return &Pool{dial: dial, tls: tlsConfig, conns: make(map[string]*grpc.ClientConn)}
}

// Peer returns a client for the Peer service at addr.
func (p *Pool) Peer(addr string) (kvpb.PeerClient, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, fmt.Errorf("rpc: pool closed")
	}
	if cc, ok := p.conns[addr]; ok {
		return kvpb.NewPeerClient(cc), nil
	}
	creds := insecure.NewCredentials()
	if p.tls != nil {
		creds = credentials.NewTLS(p.tls)
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMsgSize), grpc.MaxCallSendMsgSize(MaxMsgSize)),
		grpc.WithInitialWindowSize(PeerWindow), grpc.WithInitialConnWindowSize(PeerWindow),
		// Reconnect fast once a peer is back: the default backoff grows to 2 minutes.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: time.Second,
		}),
		// A connection whose packets were black-holed (a partition that
		// drops rather than refuses) stays wedged after the heal while TCP
		// backs its retransmissions off, for many seconds. The keepalive's
		// Timeout is also set as the socket's TCP_USER_TIMEOUT, so the
		// kernel drops a connection with data unacknowledged that long
		// and the next call dials afresh (PeerKeepalive).
		grpc.WithKeepaliveParams(PeerKeepalive),
	}
	if p.dial != nil {
		opts = append(opts, grpc.WithContextDialer(p.dial))
	}
	cc, err := grpc.NewClient("passthrough:///"+addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("rpc: dial %s: %w", addr, err)
	}
	p.conns[addr] = cc
	return kvpb.NewPeerClient(cc), nil
}

// Forget closes and drops the connection to addr (a peer that moved).
func (p *Pool) Forget(addr string) {
	p.mu.Lock()
	cc := p.conns[addr]
	delete(p.conns, addr)
	p.mu.Unlock()
	if cc != nil {
		_ = cc.Close()
	}
}

// Close closes every connection; later Peer calls fail.
func (p *Pool) Close() {
	p.mu.Lock()
	conns := p.conns
	p.conns = nil
	p.closed = true
	p.mu.Unlock()
	for _, cc := range conns {
		_ = cc.Close()
	}
}

// PeerKeepalive is the node-to-node connections' keepalive: a ping after
// 10 s without traffic (gRPC's minimum), and a connection given up once
// data it sent went unacknowledged for 2 s (TCP_USER_TIMEOUT on Linux).
// A paused peer's kernel still acknowledges, so only a dead path counts.
var PeerKeepalive = keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 2 * time.Second, PermitWithoutStream: true}

// PeerKeepalivePolicy is what a node's server allows its peers: pings as
// often as PeerKeepalive sends them, with or without calls in flight.
var PeerKeepalivePolicy = keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}

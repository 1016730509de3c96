package node

import (
	"errors"
	"testing"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/rpc"
	"github.com/kvstore/kvstore/rpc/kvpb"
	"github.com/kvstore/kvstore/rpc/memtransport"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpcpeer "google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// TestPeerServiceOverMemoryTransport: a node started without a listener
// is reached through PeerService on an in-memory network, and a call there
// meets what a gRPC call meets on arrival: the cluster check of the
// handler, rmi-down (Unavailable), errors as gRPC status that rpc.FromStatus
// turns back into sentinels, and a stopped node refusing (Unavailable).
func TestPeerServiceOverMemoryTransport(t *testing.T) {
	nw := memtransport.New(1)
	cfg := DefaultConfig()
	cfg.ID, cfg.Coordinator = "n1", noCoord{}
	cfg.NoListen, cfg.AdvertiseAddr, cfg.Transport = true, "n1", nw.Endpoint("n1")
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if n.lis != nil || n.Addr() != "n1" {
		t.Fatalf("NoListen: listener %v, Addr %q; want none and the advertised n1", n.lis, n.Addr())
	}
	nw.Register("n1", n.PeerService())
	c, err := nw.Endpoint("n2").Peer("n1")
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()

	var p grpcpeer.Peer
	if _, err := c.Probe(ctx, &kvpb.ProbeRequest{Cluster: cfg.Cluster, From: "n2"}, grpc.Peer(&p)); err != nil {
		t.Fatalf("Probe: %v", err)
	}
	if p.Addr == nil || p.Addr.String() != "n1" {
		t.Fatalf("grpc.Peer after a delivered call = %v, want n1", p.Addr)
	}
	_, err = c.Probe(ctx, &kvpb.ProbeRequest{Cluster: "other", From: "n2"})
	if _, ok := status.FromError(err); !ok || !errors.Is(rpc.FromStatus(err), kvstore.ErrBadRequest) {
		t.Fatalf("Probe for another cluster = %v; want a status carrying ErrBadRequest", err)
	}
	n.SetRPCDown(true)
	if _, err := c.Probe(ctx, &kvpb.ProbeRequest{Cluster: cfg.Cluster, From: "n2"}); status.Code(err) != codes.Unavailable {
		t.Fatalf("Probe with rmi-down = %v, want Unavailable", err)
	}
	n.SetRPCDown(false)
	if err := n.Close(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = c.Probe(ctx, &kvpb.ProbeRequest{Cluster: cfg.Cluster, From: "n2"})
	if status.Code(err) != codes.Unavailable || !errors.Is(rpc.FromStatus(err), kvstore.ErrStopped) {
		t.Fatalf("Probe of a closed node = %v, want Unavailable, ErrStopped", err)
	}
	if _, err := n.pool.Peer("n2"); err == nil {
		t.Fatal("the node's transport still hands out clients after Close")
	}
}

// TestNoListenNeedsTransportAndAddress: a node without a listener must be
// given a transport and the address its peers know it by.
func TestNoListenNeedsTransportAndAddress(t *testing.T) {
	nw := memtransport.New(1)
	for _, tc := range []struct {
		name string
		tr   Transport
		addr string
	}{{"no transport", nil, "n1"}, {"no address", nw.Endpoint("n1"), ""}} {
		cfg := DefaultConfig()
		cfg.ID, cfg.Coordinator, cfg.NoListen = "n1", noCoord{}, true
		cfg.Transport, cfg.AdvertiseAddr = tc.tr, tc.addr
		if err := cfg.Validate(); err == nil {
			t.Errorf("%s: Validate passed", tc.name)
		}
	}
	var _ Transport = (*rpc.Pool)(nil)
	var _ Transport = (*memtransport.Endpoint)(nil)
}

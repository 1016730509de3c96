package node

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/certs"
	"github.com/kvstore/kvstore/internal/testpki"
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

// TestForwardStreamOverMemoryTransport: the in-memory Peer service serves
// Forward streams as the gRPC server does, without TLS (an in-memory
// caller shows no certificate, as for calls): each operation answered by
// id, rmi-down refusing the stream, a stopped node too.
func TestForwardStreamOverMemoryTransport(t *testing.T) {
	nw := memtransport.New(1)
	pki := testpki.New(t, "memory CA")
	serverCert, err := tls.LoadX509KeyPair(pki.ServerCert, pki.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.ID, cfg.Coordinator = "n1", noCoord{}
	cfg.NoListen, cfg.AdvertiseAddr, cfg.Transport = true, "n1", nw.Endpoint("n1")
	cfg.ServerTLS = certs.ServerConfig(serverCert, pki.CA.Pool())
	cfg.PeerTLS = certs.ClientConfig(serverCert, pki.CA.Pool())
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	nw.Register("n1", n.PeerService())
	c, err := nw.Endpoint("n2").Peer("n1")
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	forward := func() error {
		st, err := c.Forward(ctx)
		if err != nil {
			return err
		}
		req := &kvpb.ForwardRequest{Ops: []*kvpb.ForwardedOp{{Id: 7, Op: &kvpb.ForwardedOp_Fetch{Fetch: &kvpb.FetchRequest{Cluster: cfg.Cluster, Key: "k"}}}}}
		if err := st.Send(req); err != nil {
			if errors.Is(err, io.EOF) {
				// The stream ended already: its status comes by Recv,
				// as over gRPC.
				_, err = st.Recv()
			}
			return err
		}
		resp, err := st.Recv()
		if err != nil {
			return err
		}
		if len(resp.Results) != 1 || resp.Results[0].Id != 7 {
			return fmt.Errorf("answers %v, want one for operation 7", resp.Results)
		}
		return nil
	}
	if err := forward(); err != nil {
		t.Fatalf("Forward on a node with ServerTLS, in memory: %v", err)
	}
	n.SetRPCDown(true)
	if err := forward(); status.Code(err) != codes.Unavailable {
		t.Fatalf("Forward with rmi-down = %v, want Unavailable", err)
	}
	n.SetRPCDown(false)
	if err := n.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := forward(); status.Code(err) != codes.Unavailable || !errors.Is(rpc.FromStatus(err), kvstore.ErrStopped) {
		t.Fatalf("Forward to a closed node = %v, want Unavailable, ErrStopped", err)
	}
}

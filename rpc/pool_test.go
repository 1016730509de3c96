package rpc_test

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/kvstore/kvstore/certs"
	"github.com/kvstore/kvstore/rpc"
	"github.com/kvstore/kvstore/rpc/kvpb"
)

type fetchServer struct{ kvpb.UnimplementedPeerServer }

func (fetchServer) Fetch(context.Context, *kvpb.FetchRequest) (*kvpb.FetchResponse, error) {
	return &kvpb.FetchResponse{Value: "ok"}, nil
}

// TestPoolTLSThroughDial: with TLS, the pool speaks TLS over the connection
// its dial function returns (a proxy, in the test cluster) and checks the
// peer's certificate against the host of the peer's address, not of the
// connection dialed.
func TestPoolTLSThroughDial(t *testing.T) {
	ca, err := certs.NewCA("pool CA")
	if err != nil {
		t.Fatal(err)
	}
	kp, err := ca.Node([]string{"peer.example"})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := kp.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(certs.ServerConfig(cert, ca.Pool()))))
	kvpb.RegisterPeerServer(srv, fetchServer{})
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	// Every address leads to the server, as through a proxy.
	var mu sync.Mutex // guards dialed
	var dialed []string
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		mu.Lock()
		dialed = append(dialed, addr)
		mu.Unlock()
		var d net.Dialer
		return d.DialContext(ctx, "tcp", lis.Addr().String())
	}

	fetch := func(p *rpc.Pool, addr string) error {
		pc, err := p.Peer(addr)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := pc.Fetch(ctx, &kvpb.FetchRequest{Key: "k"})
		if err == nil && resp.Value != "ok" {
			t.Fatalf("Fetch: %q", resp.Value)
		}
		return err
	}
	tlsPool := rpc.NewPool(dial, certs.ClientConfig(cert, ca.Pool()))
	defer tlsPool.Close()
	if err := fetch(tlsPool, "peer.example:7000"); err != nil {
		t.Fatalf("Fetch from the peer its certificate names: %v", err)
	}
	mu.Lock()
	first := append([]string(nil), dialed...)
	mu.Unlock()
	if len(first) == 0 || first[0] != "peer.example:7000" {
		t.Fatalf("dial saw %v, want the peer's address", first)
	}
	err = fetch(tlsPool, "other.example:7000")
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "other.example") {
		t.Fatalf("Fetch from a peer its certificate does not name: %v; want Unavailable naming other.example", err)
	}
	plainPool := rpc.NewPool(dial, nil)
	defer plainPool.Close()
	if err := fetch(plainPool, "peer.example:7000"); status.Code(err) != codes.Unavailable {
		t.Fatalf("plaintext Fetch from a TLS peer: %v; want Unavailable", err)
	}
}

package node_test

import (
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/kvstore/kvstore/certs"
	"github.com/kvstore/kvstore/cluster"
	"github.com/kvstore/kvstore/coord"
	"github.com/kvstore/kvstore/node"
	"github.com/kvstore/kvstore/rpc/kvpb"
)

// tlsCaller calls one node's services over a connection of its own.
type tlsCaller struct {
	peer kvpb.PeerClient
	kv   kvpb.KVClient
}

func dialNode(t *testing.T, addr string, creds credentials.TransportCredentials) tlsCaller {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return tlsCaller{peer: kvpb.NewPeerClient(cc), kv: kvpb.NewKVClient(cc)}
}

// tlsWith are client TLS credentials showing the certificate issue makes
// and trusting ca.
func tlsWith(t *testing.T, ca *certs.CA, issue func() (*certs.KeyPair, error)) credentials.TransportCredentials {
	t.Helper()
	kp, err := issue()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := kp.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	return credentials.NewTLS(certs.ClientConfig(cert, ca.Pool()))
}

// TestTLSRoles: a node with TLS on serves its node-to-node service only to
// callers with a node certificate of its CA, and its client service to any
// certificate of its CA. Each refusal comes with a positive control on the
// same node, so that it is the check that refuses, not a broken setup.
func TestTLSRoles(t *testing.T) {
	c, err := cluster.New(ctxT(t, 60*time.Second), cluster.Options{Nodes: 1, TLS: true})
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	nd := nodeOf(t, c, 0)
	if err := nd.Set(ctxT(t, 10*time.Second), "k", "v"); err != nil {
		t.Fatal(err)
	}
	ca := c.CA()
	fetch := func(tc tlsCaller) (*kvpb.FetchResponse, error) {
		return tc.peer.Fetch(ctxT(t, 10*time.Second), &kvpb.FetchRequest{Cluster: "default", Key: "k", FromId: "tls-test"})
	}
	get := func(tc tlsCaller) (*kvpb.GetResponse, error) {
		return tc.kv.Get(ctxT(t, 10*time.Second), &kvpb.GetRequest{Key: "k"})
	}

	// Accepted: a node certificate of the cluster's CA, on both services.
	asNode := dialNode(t, nd.Addr(), tlsWith(t, ca, func() (*certs.KeyPair, error) { return ca.Node([]string{"127.0.0.1"}) }))
	if resp, err := fetch(asNode); err != nil || resp.Value != "v" {
		t.Fatalf("Fetch with a node certificate: %v, %v; want v", resp, err)
	}
	if resp, err := get(asNode); err != nil || resp.Value != "v" {
		t.Fatalf("Get with a node certificate: %v, %v; want v", resp, err)
	}

	// A client certificate of the cluster's CA: the client service yes,
	// the node-to-node service PermissionDenied, naming the caller.
	asAlice := dialNode(t, nd.Addr(), tlsWith(t, ca, func() (*certs.KeyPair, error) { return ca.Client("alice") }))
	if resp, err := get(asAlice); err != nil || resp.Value != "v" {
		t.Fatalf("Get with a client certificate: %v, %v; want v", resp, err)
	}
	_, err = fetch(asAlice)
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "needs a node certificate (CN=node); got CN=alice") {
		t.Fatalf("Fetch with a client certificate: %v; want PermissionDenied naming CN=alice", err)
	}
	for name, call := range map[string]func() error{
		"Prepare": func() error {
			_, err := asAlice.peer.Prepare(ctxT(t, 10*time.Second), &kvpb.PrepareRequest{Cluster: "default"})
			return err
		},
		"Append": func() error {
			_, err := asAlice.peer.Append(ctxT(t, 10*time.Second), &kvpb.AppendRequest{Cluster: "default"})
			return err
		},
		"GetSnapshot": func() error {
			_, err := asAlice.peer.GetSnapshot(ctxT(t, 10*time.Second), &kvpb.GetSnapshotRequest{Cluster: "default"})
			return err
		},
		"Write": func() error {
			_, err := asAlice.peer.Write(ctxT(t, 10*time.Second), &kvpb.WriteRequest{Cluster: "default"})
			return err
		},
	} {
		if err := call(); status.Code(err) != codes.PermissionDenied {
			t.Errorf("%s with a client certificate: %v; want PermissionDenied", name, err)
		}
	}

	// Refused at the handshake: a plaintext caller, and a node
	// certificate (CN=node) of another CA. Neither reaches a service.
	plain := dialNode(t, nd.Addr(), insecure.NewCredentials())
	other, err := certs.NewCA("another CA")
	if err != nil {
		t.Fatal(err)
	}
	stranger := dialNode(t, nd.Addr(), tlsWith(t, ca, func() (*certs.KeyPair, error) { return other.Node([]string{"127.0.0.1"}) }))
	for name, tc := range map[string]tlsCaller{"plaintext": plain, "another CA's node certificate": stranger} {
		if resp, err := fetch(tc); status.Code(err) != codes.Unavailable {
			t.Errorf("Fetch, %s: %v, %v; want Unavailable (refused at the handshake)", name, resp, err)
		}
		if resp, err := get(tc); status.Code(err) != codes.Unavailable {
			t.Errorf("Get, %s: %v, %v; want Unavailable (refused at the handshake)", name, resp, err)
		}
	}
}

// TestTLSConfigValidate: mutual TLS takes both sides, and a server that
// requires and verifies client certificates.
func TestTLSConfigValidate(t *testing.T) {
	cfg := node.DefaultConfig()
	cfg.ID = "n"
	cfg.Coordinator = struct{ coord.Coordinator }{}
	ca, err := certs.NewCA("validate CA")
	if err != nil {
		t.Fatal(err)
	}
	kp, err := ca.Node([]string{"localhost"})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := kp.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	server, client := certs.ServerConfig(cert, ca.Pool()), certs.ClientConfig(cert, ca.Pool())
	weak := server.Clone()
	weak.ClientAuth = tls.VerifyClientCertIfGiven
	noCAs := server.Clone()
	noCAs.ClientCAs = nil
	skip := client.Clone()
	skip.InsecureSkipVerify = true
	noRoots := client.Clone()
	noRoots.RootCAs = nil
	named := client.Clone()
	named.ServerName = "localhost"
	for _, tc := range []struct {
		server, peer *tls.Config
		ok           bool
	}{
		{nil, nil, true},
		{server, client, true},
		{server, nil, false},
		{nil, client, false},
		{weak, client, false},
		{noCAs, client, false},
		{server, skip, false},
		{server, noRoots, false},
		{server, named, false},
	} {
		if err := (func() node.Config { c := cfg; c.ServerTLS, c.PeerTLS = tc.server, tc.peer; return c }()).Validate(); (err == nil) != tc.ok {
			t.Errorf("ServerTLS set %v (ClientAuth %v), PeerTLS set %v: Validate %v", tc.server != nil, clientAuth(tc.server), tc.peer != nil, err)
		}
	}
}

func clientAuth(c *tls.Config) tls.ClientAuthType {
	if c == nil {
		return tls.NoClientCert
	}
	return c.ClientAuth
}

// TestPeerCallRefusedBeforeItsMessage: with TLS on, a client certificate
// that opens a node-to-node call is refused as soon as the call's headers
// arrive, before the node waits for or reads its message, so that it
// cannot make the node buffer a Peer message of up to rpc.MaxMsgSize. The
// call here never sends its message: refused at once, it does not wait
// out its deadline; a node certificate's call, by contrast, is left
// waiting for its message (the control).
func TestPeerCallRefusedBeforeItsMessage(t *testing.T) {
	c, err := cluster.New(ctxT(t, 60*time.Second), cluster.Options{Nodes: 1, TLS: true})
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	nd := nodeOf(t, c, 0)
	ca := c.CA()
	open := func(creds credentials.TransportCredentials, wait time.Duration) error {
		cc, err := grpc.NewClient("passthrough:///"+nd.Addr(), grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		ctx := ctxT(t, wait)
		st, err := cc.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, "/"+kvpb.Peer_ServiceDesc.ServiceName+"/Append")
		if err != nil {
			return err
		}
		return st.RecvMsg(&kvpb.AppendResponse{}) // the message is never sent
	}
	asClient := tlsWith(t, ca, func() (*certs.KeyPair, error) { return ca.Client("alice") })
	start := time.Now()
	err = open(asClient, 20*time.Second)
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "CN=alice") {
		t.Fatalf("client certificate's Append without its message: %v; want PermissionDenied naming CN=alice", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("refused after %v: the node waited for the message", took)
	}
	asNode := tlsWith(t, ca, func() (*certs.KeyPair, error) { return ca.Node([]string{"127.0.0.1"}) })
	if err := open(asNode, time.Second); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("node certificate's Append without its message: %v; want it left waiting until its deadline", err)
	}
}

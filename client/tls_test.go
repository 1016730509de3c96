package client_test

import (
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/kvstore/kvstore/certs"
	"github.com/kvstore/kvstore/client"
	"github.com/kvstore/kvstore/cluster"
)

// clientTLS is a client configuration showing a certificate of ca (named
// name) and trusting roots.
func clientTLS(t *testing.T, ca *certs.CA, name string, roots *certs.CA) *tls.Config {
	t.Helper()
	kp, err := ca.Client(name)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := kp.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	return certs.ClientConfig(cert, roots.Pool())
}

// TestTLS: a client with a certificate of the cluster's CA works; every
// kind of TLS mismatch fails with ErrTLS and ErrUnavailable, saying TLS,
// well before the call's timeout.
func TestTLS(t *testing.T) {
	c, err := cluster.New(ctxT(t, 60*time.Second), cluster.Options{Nodes: 1, TLS: true})
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	ep := addr(t, c, 0)
	ca := c.CA()
	other, err := certs.NewCA("another CA")
	if err != nil {
		t.Fatal(err)
	}

	good := clientTLS(t, ca, "alice", ca)
	cl, err := client.New(client.Config{Endpoints: []string{ep}, TLS: good})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.Put(ctxT(t, 20*time.Second), "k", "v"); err != nil {
		t.Fatalf("put with a client certificate: %v", err)
	}
	if v, found, err := cl.Get(ctxT(t, 20*time.Second), "k"); err != nil || !found || v != "v" {
		t.Fatalf("get with a client certificate: %q %v %v", v, found, err)
	}

	// A node without TLS, for a TLS client.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	plainSrv := grpc.NewServer()
	go func() { _ = plainSrv.Serve(lis) }()
	defer plainSrv.Stop()

	const timeout = 30 * time.Second
	for _, tc := range []struct {
		name     string
		endpoint string
		tls      *tls.Config
		says     string
	}{
		{"plaintext client", ep, nil, "may require TLS"},
		{"client certificate of another CA", ep, clientTLS(t, other, "mallory", ca), "unknown certificate authority"},
		{"client trusting another CA", ep, clientTLS(t, ca, "bob", other), "certificate signed by unknown authority"},
		{"TLS client, plaintext node", lis.Addr().String(), good, "TLS handshake"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl, err := client.New(client.Config{Endpoints: []string{tc.endpoint, tc.endpoint}, TLS: tc.tls, Timeout: timeout})
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			start := time.Now()
			err = cl.Put(ctxT(t, timeout), "k", "w")
			if !errors.Is(err, client.ErrTLS) || !errors.Is(err, client.ErrUnavailable) || errors.Is(err, client.ErrTimeout) ||
				errors.Is(err, client.ErrOutcomeUnknown) || !strings.Contains(err.Error(), tc.says) || !strings.Contains(err.Error(), "TLS") {
				t.Fatalf("put: %v; want ErrTLS and ErrUnavailable (not a timeout, not outcome unknown), saying %q", err, tc.says)
			}
			if took := time.Since(start); took > timeout/3 {
				t.Errorf("put failed after %v; want at once", took)
			}
			t.Logf("%v", err)
		})
	}
	if v, _, err := cl.Get(ctxT(t, 20*time.Second), "k"); err != nil || v != "v" {
		t.Fatalf("after the refused puts: %q, %v; want v", v, err)
	}
}

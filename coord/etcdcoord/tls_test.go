package etcdcoord_test

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/kvstore/kvstore/coord"
	"github.com/kvstore/kvstore/coord/etcdcoord"
	"github.com/kvstore/kvstore/etcdembed"
	"github.com/kvstore/kvstore/internal/testpki"
)

// startTLSEtcd starts an etcd that serves clients over TLS and requires a
// client certificate signed by p's CA.
func startTLSEtcd(t *testing.T, p testpki.PKI) *etcdembed.Server {
	t.Helper()
	cfg := etcdembed.DefaultConfig()
	cfg.ClientTLS = etcdembed.TLSFiles{CertFile: p.ServerCert, KeyFile: p.ServerKey, CAFile: p.CAFile}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv, err := etcdembed.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start etcd with client TLS: %v", err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

// With the right certificates the Coordinator works over TLS; without a
// client certificate, with one of another CA, trusting another CA, or in
// plaintext, New fails within its dial timeout with an error that says
// why.
func TestTLS(t *testing.T) {
	p := testpki.New(t, "etcd test CA")
	srv := startTLSEtcd(t, p)
	if !strings.HasPrefix(srv.ClientURL(), "https://") {
		t.Fatalf("client URL %s, want https", srv.ClientURL())
	}
	other := testpki.New(t, "another CA")

	open := func(tlsCfg *tls.Config, endpoint string) (*etcdcoord.Coordinator, time.Duration, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		start := time.Now()
		c, err := etcdcoord.New(ctx, etcdcoord.Config{
			Endpoints:   []string{endpoint},
			Prefix:      prefixFor(t),
			DialTimeout: 2 * time.Second,
			TLS:         tlsCfg,
		})
		return c, time.Since(start), err
	}

	for _, ep := range []string{srv.ClientURL(), srv.Endpoint()} {
		c, _, err := open(testpki.ClientTLS(p.CA.Pool(), &p.Client), ep)
		if err != nil {
			t.Fatalf("New over TLS at %s: %v", ep, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		s, err := c.NewSession(ctx, 2*time.Second)
		if err != nil {
			t.Fatalf("NewSession over TLS: %v", err)
		}
		if err := s.Register(ctx, coord.Member{ID: "n1", Addr: "a1"}); err != nil {
			t.Fatalf("Register over TLS: %v", err)
		}
		if _, err := c.ClaimCluster(ctx, "a"); err != nil {
			t.Fatalf("ClaimCluster over TLS: %v", err)
		}
		if _, err := c.Voters(ctx); err != nil {
			t.Fatalf("Voters over TLS: %v", err)
		}
		if err := s.Close(ctx); err != nil {
			t.Fatalf("Session.Close: %v", err)
		}
		cancel()
		if err := c.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}

	for _, tc := range []struct {
		name     string
		tls      *tls.Config
		endpoint string
		want     string
	}{
		{"no client certificate", testpki.ClientTLS(p.CA.Pool(), nil), srv.Endpoint(), "certificate required"},
		{"client certificate of another CA", testpki.ClientTLS(p.CA.Pool(), &other.Client), srv.Endpoint(), "unknown certificate authority"},
		{"server of an untrusted CA", testpki.ClientTLS(other.CA.Pool(), &p.Client), srv.Endpoint(), "certificate signed by unknown authority"},
		{"plaintext", nil, srv.Endpoint(), "speaks TLS"},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			t.Parallel()
			c, took, err := open(tc.tls, tc.endpoint)
			if err == nil {
				c.Close()
				t.Fatalf("New succeeded")
			}
			t.Logf("refused after %v: %v", took.Round(time.Millisecond), err)
			if took > 5*time.Second {
				t.Errorf("New took %v to fail, want about its 2 s dial timeout", took)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New = %v, want an error saying %q", err, tc.want)
			}
		})
	}
}

// An http:// endpoint with TLS set is refused: the etcd client would
// silently drop TLS for it.
func TestTLSWithHTTPEndpointIsInvalid(t *testing.T) {
	cfg := etcdcoord.Config{Endpoints: []string{"http://127.0.0.1:2379"}, TLS: &tls.Config{}}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "http://127.0.0.1:2379") {
		t.Fatalf("Validate = %v, want an error naming the http endpoint", err)
	}
	cfg.Endpoints = []string{"https://127.0.0.1:2379", "127.0.0.1:2379"}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate with https and host:port endpoints: %v", err)
	}
}

// An etcd that serves TLS without client certificate authentication takes
// a client that only trusts its CA (--etcd-ca alone).
func TestTLSServerOnly(t *testing.T) {
	p := testpki.New(t, "etcd test CA")
	cfg := etcdembed.DefaultConfig()
	cfg.ClientTLS = etcdembed.TLSFiles{CertFile: p.ServerCert, KeyFile: p.ServerKey}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv, err := etcdembed.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start etcd with server-only TLS: %v", err)
	}
	defer srv.Close()
	c, err := etcdcoord.New(ctx, etcdcoord.Config{Endpoints: []string{srv.Endpoint()}, Prefix: prefixFor(t), TLS: testpki.ClientTLS(p.CA.Pool(), nil)})
	if err != nil {
		t.Fatalf("New with the CA alone: %v", err)
	}
	defer c.Close()
	if _, err := c.ClaimCluster(ctx, "a"); err != nil {
		t.Fatalf("ClaimCluster: %v", err)
	}
}

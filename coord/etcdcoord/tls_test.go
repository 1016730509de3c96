package etcdcoord_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kvstore/kvstore/certs"
	"github.com/kvstore/kvstore/coord"
	"github.com/kvstore/kvstore/coord/etcdcoord"
	"github.com/kvstore/kvstore/etcdembed"
)

// pki is a CA with a server certificate for loopback and a client
// certificate, as PEM files and as TLS material.
type pki struct {
	ca                    *certs.CA
	caFile                string
	serverCert, serverKey string
	client                tls.Certificate
}

func newPKI(t *testing.T, name string) pki {
	t.Helper()
	dir := t.TempDir()
	ca, err := certs.NewCA(name)
	if err != nil {
		t.Fatal(err)
	}
	p := pki{ca: ca, caFile: filepath.Join(dir, "ca.crt"), serverCert: filepath.Join(dir, "server.crt"), serverKey: filepath.Join(dir, "server.key")}
	if err := ca.Write(p.caFile, filepath.Join(dir, "ca.key")); err != nil {
		t.Fatal(err)
	}
	srv, err := ca.Node([]string{"127.0.0.1", "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Write(p.serverCert, p.serverKey); err != nil {
		t.Fatal(err)
	}
	cli, err := ca.Client("kvstore-node")
	if err != nil {
		t.Fatal(err)
	}
	if p.client, err = cli.TLSCertificate(); err != nil {
		t.Fatal(err)
	}
	return p
}

// clientTLS trusts roots and shows cert (if non-nil) whatever CAs the
// server asks for.
func clientTLS(roots *x509.CertPool, cert *tls.Certificate) *tls.Config {
	cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	if cert != nil {
		c := *cert
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }
	}
	return cfg
}

// startTLSEtcd starts an etcd that serves clients over TLS and requires a
// client certificate signed by p's CA.
func startTLSEtcd(t *testing.T, p pki) *etcdembed.Server {
	t.Helper()
	cfg := etcdembed.DefaultConfig()
	cfg.ClientTLS = etcdembed.TLSFiles{CertFile: p.serverCert, KeyFile: p.serverKey, CAFile: p.caFile}
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
	p := newPKI(t, "etcd test CA")
	srv := startTLSEtcd(t, p)
	if !strings.HasPrefix(srv.ClientURL(), "https://") {
		t.Fatalf("client URL %s, want https", srv.ClientURL())
	}
	other := newPKI(t, "another CA")

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
		c, _, err := open(clientTLS(p.ca.Pool(), &p.client), ep)
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
		if err := c.ClaimCluster(ctx, "a"); err != nil {
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
		{"no client certificate", clientTLS(p.ca.Pool(), nil), srv.Endpoint(), "certificate required"},
		{"client certificate of another CA", clientTLS(p.ca.Pool(), &other.client), srv.Endpoint(), "unknown certificate authority"},
		{"server of an untrusted CA", clientTLS(other.ca.Pool(), &p.client), srv.Endpoint(), "certificate signed by unknown authority"},
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
	p := newPKI(t, "etcd test CA")
	cfg := etcdembed.DefaultConfig()
	cfg.ClientTLS = etcdembed.TLSFiles{CertFile: p.serverCert, KeyFile: p.serverKey}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv, err := etcdembed.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start etcd with server-only TLS: %v", err)
	}
	defer srv.Close()
	c, err := etcdcoord.New(ctx, etcdcoord.Config{Endpoints: []string{srv.Endpoint()}, Prefix: prefixFor(t), TLS: clientTLS(p.ca.Pool(), nil)})
	if err != nil {
		t.Fatalf("New with the CA alone: %v", err)
	}
	defer c.Close()
	if err := c.ClaimCluster(ctx, "a"); err != nil {
		t.Fatalf("ClaimCluster: %v", err)
	}
}

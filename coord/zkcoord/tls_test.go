package zkcoord_test

import (
	"context"
	"crypto/tls"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kvstore/kvstore/coord"
	"github.com/kvstore/kvstore/coord/zkcoord"
	"github.com/kvstore/kvstore/internal/testpki"
	"github.com/kvstore/kvstore/zkserver"
)

// startTLSServer starts a standalone ZooKeeper whose secure client port
// requires a client certificate of p's CA.
func startTLSServer(t *testing.T, p testpki.PKI) *zkserver.Ensemble {
	t.Helper()
	zkserver.SkipIfUnavailable(t)
	cfg := zkserver.DefaultConfig()
	cfg.TLS = zkserver.TLSFiles{CertFile: p.ServerCert, KeyFile: p.ServerKey, CAFile: p.CAFile}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv, err := zkserver.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start ZooKeeper with TLS: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			if b, err := os.ReadFile(srv.LogFile(0)); err == nil {
				t.Logf("ZooKeeper log:\n%s", b[max(0, len(b)-6000):])
			}
		}
		if err := srv.Close(); err != nil {
			t.Errorf("close ZooKeeper: %v", err)
		}
	})
	return srv
}

// With the right certificates (and digest credentials) the Coordinator
// works over TLS; without a client certificate, with one of another CA,
// trusting another CA, or in plaintext on the TLS port, New fails within
// its dial timeout, saying why where the handshake tells; a certificate that
// does not verify fails at once, without waiting out the dial timeout.
func TestTLS(t *testing.T) {
	p := testpki.New(t, "ZooKeeper test CA")
	srv := startTLSServer(t, p)
	other := testpki.New(t, "another CA")
	// The first TLS connection waits for the JVM's TLS to warm up.
	open := func(tlsCfg *tls.Config, dialTimeout time.Duration) (*zkcoord.Coordinator, time.Duration, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		start := time.Now()
		c, err := zkcoord.New(ctx, zkcoord.Config{
			Servers:     srv.SecureServers(),
			Prefix:      prefixFor(t),
			DialTimeout: dialTimeout,
			Auth:        testAuth,
			TLS:         tlsCfg,
		})
		return c, time.Since(start), err
	}

	c, _, err := open(testpki.ClientTLS(p.CA.Pool(), &p.Client), 15*time.Second)
	if err != nil {
		t.Fatalf("New over TLS: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s := newSession(t, c)
	if err := s.Register(ctx, coord.Member{ID: "n1", Addr: "a1"}); err != nil {
		t.Fatalf("Register over TLS: %v", err)
	}
	if _, err := s.Campaign(ctx, "n1"); err != nil {
		t.Fatalf("Campaign over TLS: %v", err)
	}
	if _, err := c.ClaimCluster(ctx, "a"); err != nil {
		t.Fatalf("ClaimCluster over TLS: %v", err)
	}
	if err := c.CreateVoters(ctx, []string{"n1"}); err != nil {
		t.Fatalf("CreateVoters over TLS: %v", err)
	}
	if v, err := c.Voters(ctx); err != nil || !v.Contains("n1") {
		t.Fatalf("Voters over TLS = %+v, %v", v, err)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatalf("Session.Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	for _, tc := range []struct {
		name     string
		tls      *tls.Config
		want     string
		definite bool // refused at once: no attempt can succeed
	}{
		{"no client certificate", testpki.ClientTLS(p.CA.Pool(), nil), "TLS handshake", true},
		{"client certificate of another CA", testpki.ClientTLS(p.CA.Pool(), &other.Client), "TLS handshake", true},
		{"server of an untrusted CA", testpki.ClientTLS(other.CA.Pool(), &p.Client), "certificate signed by unknown authority", true},
		{"plaintext", nil, "deadline exceeded", false},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			t.Parallel()
			// A refusal must not wait for the dial timeout: give it one
			// longer than the context, so that waiting shows as a
			// deadline error. Plaintext gets no answer at all and ends
			// with its 2 s dial timeout.
			dialTimeout := 2 * time.Second
			if tc.definite {
				dialTimeout = time.Minute
			}
			c, took, err := open(tc.tls, dialTimeout)
			if err == nil {
				c.Close()
				t.Fatal("New succeeded")
			}
			t.Logf("refused after %v: %v", took.Round(time.Millisecond), err)
			if waited := errors.Is(err, context.DeadlineExceeded); waited == tc.definite {
				t.Errorf("New = %v: waited for its deadline %v, want %v", err, waited, !tc.definite)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New = %v, want an error saying %q", err, tc.want)
			}
		})
	}
}

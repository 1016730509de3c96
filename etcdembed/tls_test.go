package etcdembed

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/kvstore/kvstore/certs"
)

// testPKI writes a CA and a loopback certificate that serves both as server
// and as client certificate (as etcd's peers need), and returns their files
// and a client configuration that trusts the CA and shows the certificate.
func testPKI(t *testing.T) (TLSFiles, *tls.Config) {
	t.Helper()
	dir := t.TempDir()
	ca, err := certs.NewCA("etcdembed test CA")
	if err != nil {
		t.Fatal(err)
	}
	f := TLSFiles{CertFile: filepath.Join(dir, "member.crt"), KeyFile: filepath.Join(dir, "member.key"), CAFile: filepath.Join(dir, "ca.crt")}
	if err := ca.Write(f.CAFile, filepath.Join(dir, "ca.key")); err != nil {
		t.Fatal(err)
	}
	kp, err := ca.Node([]string{"127.0.0.1", "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	if err := kp.Write(f.CertFile, f.KeyFile); err != nil {
		t.Fatal(err)
	}
	cert, err := kp.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	return f, &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}
}

// refusedWithoutCert makes a TLS handshake with addr that trusts the
// server but shows no certificate, and returns the server's verdict.
func refusedWithoutCert(t *testing.T, addr string, trusted *tls.Config) error {
	t.Helper()
	cfg := trusted.Clone()
	cfg.Certificates = nil
	cfg.ServerName = "127.0.0.1"
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = conn.Read(make([]byte, 1))
	return err
}

// A 3-member cluster with TLS and client certificate authentication on its
// client and peer URLs forms, replicates, and refuses a caller without a
// certificate on either.
func TestMemberClusterTLS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	files, clientCfg := testPKI(t)
	https := func(urls []url.URL) []url.URL {
		out := make([]url.URL, len(urls))
		for i, u := range urls {
			u.Scheme = "https"
			out[i] = u
		}
		return out
	}
	srvs := startCluster(ctx, t, 3, func(_ int, cfg *MemberConfig) {
		cfg.ClientTLS, cfg.PeerTLS = files, files
		cfg.ListenClientURLs = https(cfg.ListenClientURLs)
		cfg.ListenPeerURLs = https(cfg.ListenPeerURLs)
		cfg.InitialCluster = strings.ReplaceAll(cfg.InitialCluster, "http://", "https://")
	})

	var clients []*clientv3.Client
	client := func(s *Server) *clientv3.Client {
		if !strings.HasPrefix(s.ClientURL(), "https://") {
			t.Fatalf("client URL %s, want https", s.ClientURL())
		}
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{s.ClientURL()}, DialTimeout: 5 * time.Second, TLS: clientCfg, Logger: zap.NewNop()})
		if err != nil {
			t.Fatalf("client: %v", err)
		}
		clients = append(clients, cli)
		return cli
	}
	if _, err := client(srvs[0]).Put(ctx, "k", "v1"); err != nil {
		t.Fatalf("put via m0 over TLS: %v", err)
	}
	resp, err := client(srvs[2]).Get(ctx, "k")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v1" {
		t.Fatalf("get via m2 over TLS = %v, %v; want k=v1", resp, err)
	}

	for what, addr := range map[string]string{
		"client URL": srvs[1].Endpoint(),
		"peer URL":   srvs[1].etcd.Config().ListenPeerUrls[0].Host,
	} {
		err := refusedWithoutCert(t, addr, clientCfg)
		var netErr net.Error
		if err == nil || (errors.As(err, &netErr) && netErr.Timeout()) || !strings.Contains(err.Error(), "certificate required") {
			t.Errorf("%s %s without a client certificate: %v, want the server to require one", what, addr, err)
		}
	}

	for _, cli := range clients {
		cli.Close()
	}
	for _, s := range srvs {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
	waitGoroutinesGone(t, 10*time.Second)
}

func TestConfigTLSValidate(t *testing.T) {
	for _, f := range []TLSFiles{{CertFile: "c"}, {KeyFile: "k"}, {CAFile: "ca"}, {KeyFile: "k", CAFile: "ca"}} {
		cfg := DefaultConfig()
		cfg.ClientTLS = f
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "ClientTLS") {
			t.Errorf("ClientTLS %+v: Validate = %v, want an error naming ClientTLS", f, err)
		}
		cfg = DefaultConfig()
		cfg.PeerTLS = f
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "PeerTLS") {
			t.Errorf("PeerTLS %+v: Validate = %v, want an error naming PeerTLS", f, err)
		}
	}
	cfg := DefaultConfig()
	cfg.ClientTLS = TLSFiles{CertFile: "c", KeyFile: "k"}
	if err := cfg.Validate(); err != nil {
		t.Errorf("server-only TLS: %v", err)
	}
}

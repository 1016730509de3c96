package certs_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kvstore/kvstore/certs"
	"github.com/kvstore/kvstore/internal/testpki"
)

func newCA(t *testing.T) *certs.CA {
	t.Helper()
	ca, err := certs.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func leaf(t *testing.T, c tls.Certificate) *x509.Certificate {
	t.Helper()
	x, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return x
}

func TestIssuedCertificates(t *testing.T) {
	ca := newCA(t)
	if !ca.Certificate().IsCA || ca.Certificate().Subject.CommonName != "test CA" {
		t.Fatalf("CA certificate: IsCA %v, CN %q", ca.Certificate().IsCA, ca.Certificate().Subject.CommonName)
	}
	nodeKP, err := ca.Node([]string{"127.0.0.1", "localhost", "n1.example", "::1"})
	node := leaf(t, testpki.Certificate(t, nodeKP, err))
	if node.Subject.CommonName != certs.NodeName {
		t.Errorf("node CN %q, want %q", node.Subject.CommonName, certs.NodeName)
	}
	if !slices.Equal(node.DNSNames, []string{"localhost", "n1.example"}) || len(node.IPAddresses) != 2 ||
		!node.IPAddresses[0].Equal(net.IPv4(127, 0, 0, 1)) || !node.IPAddresses[1].Equal(net.IPv6loopback) {
		t.Errorf("node SANs: DNS %v, IP %v", node.DNSNames, node.IPAddresses)
	}
	if !slices.Equal(node.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) {
		t.Errorf("node ExtKeyUsage %v, want server and client auth", node.ExtKeyUsage)
	}
	if pub, ok := node.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Errorf("node key %T, want ECDSA P-256", node.PublicKey)
	}
	for _, host := range []string{"127.0.0.1", "localhost", "n1.example", "::1"} {
		if _, err := node.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: host, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("node certificate for %s: %v", host, err)
		}
	}
	if _, err := node.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: "n2.example"}); err == nil {
		t.Error("node certificate verified for a host it does not name")
	}

	aliceKP, err := ca.Client("alice")
	alice := leaf(t, testpki.Certificate(t, aliceKP, err))
	if alice.Subject.CommonName != "alice" || len(alice.DNSNames)+len(alice.IPAddresses) != 0 {
		t.Errorf("client: CN %q, SANs %v %v", alice.Subject.CommonName, alice.DNSNames, alice.IPAddresses)
	}
	if !slices.Equal(alice.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
		t.Errorf("client ExtKeyUsage %v, want client auth only", alice.ExtKeyUsage)
	}
	if _, err := alice.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client certificate: %v", err)
	}
	if _, err := alice.Verify(x509.VerifyOptions{Roots: newCA(t).Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Error("client certificate verified against another CA")
	}
	if _, err := alice.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Error("client certificate verified for server authentication")
	}
}

func TestIssueRefusals(t *testing.T) {
	ca := newCA(t)
	for _, hosts := range [][]string{nil, {""}, {"127.0.0.1:7000"}, {"n1.example:7000"}, {"http://n1"}} {
		if _, err := ca.Node(hosts); err == nil {
			t.Errorf("Node(%q): no error", hosts)
		}
	}
	for _, name := range []string{"", certs.NodeName, "a/b", "a b"} {
		if _, err := ca.Client(name); err == nil {
			t.Errorf("Client(%q): no error", name)
		}
	}
	if _, err := certs.NewCA(""); err == nil {
		t.Error("NewCA(\"\"): no error")
	}
}

// handshake runs one TLS handshake over a pipe and returns the server's
// view of the connection and each side's error.
func handshake(t *testing.T, server, client *tls.Config, serverName string) (tls.ConnectionState, error, error) {
	t.Helper()
	a, b := net.Pipe()
	deadline := time.Now().Add(10 * time.Second)
	_ = a.SetDeadline(deadline)
	_ = b.SetDeadline(deadline)
	client = client.Clone()
	client.ServerName = serverName
	srv, cli := tls.Server(a, server), tls.Client(b, client)
	srvErr := make(chan error, 1)
	go func() {
		err := srv.Handshake()
		if err == nil {
			// TLS 1.3: the server verifies the client's certificate after
			// the client has finished; read until the client closes.
			_, _ = srv.Read(make([]byte, 1))
		}
		_ = srv.Close()
		srvErr <- err
	}()
	cliErr := cli.Handshake()
	if cliErr == nil {
		// A server that refuses our certificate says so in an alert.
		_ = cli.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, err := cli.Read(make([]byte, 1)); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				cliErr = err
			}
		}
	}
	_ = cli.Close()
	err := <-srvErr
	return srv.ConnectionState(), err, cliErr
}

func TestConfigsHandshake(t *testing.T) {
	ca := newCA(t)
	nodeKP, err := ca.Node([]string{"127.0.0.1", "localhost"})
	nodeCert := testpki.Certificate(t, nodeKP, err)
	aliceKP, err := ca.Client("alice")
	aliceCert := testpki.Certificate(t, aliceKP, err)
	other := newCA(t)
	strangerKP, err := other.Client("mallory")
	strangerCert := testpki.Certificate(t, strangerKP, err)
	otherNodeKP, err := other.Node([]string{"localhost"})
	otherNodeCert := testpki.Certificate(t, otherNodeKP, err)

	server := certs.ServerConfig(nodeCert, ca.Pool())
	if server.ClientAuth != tls.RequireAndVerifyClientCert || server.MinVersion < tls.VersionTLS12 {
		t.Fatalf("server config: ClientAuth %v, MinVersion %x", server.ClientAuth, server.MinVersion)
	}

	// Accepted: a client and a node, by name; the server sees the name.
	for _, tc := range []struct {
		cert     tls.Certificate
		host     string
		wantName string
	}{
		{aliceCert, "localhost", "alice"},
		{nodeCert, "127.0.0.1", certs.NodeName},
	} {
		st, srvErr, cliErr := handshake(t, server, certs.ClientConfig(tc.cert, ca.Pool()), tc.host)
		if srvErr != nil || cliErr != nil {
			t.Fatalf("%s to %s: server %v, client %v", tc.wantName, tc.host, srvErr, cliErr)
		}
		if name, ok := certs.VerifiedName(st); !ok || name != tc.wantName {
			t.Errorf("server sees %q (%v), want %q", name, ok, tc.wantName)
		}
		if st.Version != tls.VersionTLS13 {
			t.Errorf("version %x, want TLS 1.3", st.Version)
		}
	}

	// Refused by the server: another CA's client, no client certificate.
	_, srvErr, cliErr := handshake(t, server, certs.ClientConfig(strangerCert, ca.Pool()), "localhost")
	if srvErr == nil || cliErr == nil || !strings.Contains(srvErr.Error(), "unknown authority") {
		t.Errorf("client of another CA: server %v, client %v; want both to fail, the server on an unknown authority", srvErr, cliErr)
	}
	_, srvErr, _ = handshake(t, server, &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS13}, "localhost")
	if srvErr == nil {
		t.Error("client without a certificate: the server accepted it")
	}
	// Refused by the client: a name the server's certificate lacks, a
	// server of another CA.
	if _, _, cliErr := handshake(t, server, certs.ClientConfig(aliceCert, ca.Pool()), "10.1.2.3"); cliErr == nil {
		t.Error("client accepted a server certificate that does not name the host dialed")
	}
	if _, _, cliErr := handshake(t, certs.ServerConfig(otherNodeCert, ca.Pool()), certs.ClientConfig(aliceCert, ca.Pool()), "localhost"); cliErr == nil {
		t.Error("client accepted a server certificate of another CA")
	}
	if _, ok := certs.VerifiedName(tls.ConnectionState{}); ok {
		t.Error("VerifiedName of a connection without certificates: ok")
	}
}

func TestFiles(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t)
	caCert, caKey := filepath.Join(dir, certs.CACertFile), filepath.Join(dir, certs.CAKeyFile)
	if err := ca.Write(caCert, caKey); err != nil {
		t.Fatal(err)
	}
	loaded, err := certs.LoadCA(caCert, caKey)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Certificate().Equal(ca.Certificate()) {
		t.Fatal("LoadCA: another certificate")
	}
	kp, err := loaded.Client("bob")
	if err != nil {
		t.Fatal(err)
	}
	cf, kf := certs.ClientFiles("bob")
	cf, kf = filepath.Join(dir, "sub", cf), filepath.Join(dir, "sub", kf)
	if err := kp.Write(cf, kf); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{caKey: 0o600, kf: 0o600, caCert: 0o644, cf: 0o644} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got&^want != 0 {
			t.Errorf("%s: mode %v, want at most %v", path, got, want)
		}
	}

	// Never overwritten, and nothing written when one of the pair exists.
	if err := kp.Write(cf, kf); !errors.Is(err, certs.ErrExists) {
		t.Fatalf("second Write: %v, want ErrExists", err)
	}
	fresh := filepath.Join(dir, "fresh.crt")
	if err := kp.Write(fresh, caKey); !errors.Is(err, certs.ErrExists) {
		t.Fatalf("Write over an existing key: %v, want ErrExists", err)
	}
	if _, err := os.Stat(fresh); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Write that failed left %s behind (%v)", fresh, err)
	}
	if err := ca.Write(caCert, filepath.Join(dir, "other.key")); !errors.Is(err, certs.ErrExists) {
		t.Fatalf("CA Write over an existing certificate: %v, want ErrExists", err)
	}

	f := certs.Files{Cert: cf, Key: kf, CA: caCert}
	if on, err := f.Enabled(); !on || err != nil {
		t.Fatalf("Enabled: %v, %v", on, err)
	}
	cfg, err := f.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Certificates) != 1 || cfg.RootCAs == nil || cfg.ServerName != "" {
		t.Errorf("client config: %d certificates, roots %v, ServerName %q", len(cfg.Certificates), cfg.RootCAs != nil, cfg.ServerName)
	}
	scfg, err := f.ServerConfig()
	if err != nil {
		t.Fatal(err)
	}
	if scfg.ClientAuth != tls.RequireAndVerifyClientCert || scfg.ClientCAs == nil {
		t.Errorf("server config: ClientAuth %v", scfg.ClientAuth)
	}

	for _, bad := range []certs.Files{
		{Cert: cf},
		{Cert: cf, Key: kf},
		{Key: kf, CA: caCert},
		{CA: caCert},
	} {
		if _, err := bad.Enabled(); !errors.Is(err, certs.ErrPartial) {
			t.Errorf("Enabled(%+v): %v, want ErrPartial", bad, err)
		}
		if _, err := bad.ClientConfig(); !errors.Is(err, certs.ErrPartial) {
			t.Errorf("ClientConfig(%+v): %v, want ErrPartial", bad, err)
		}
	}
	if on, err := (certs.Files{}).Enabled(); on || err != nil {
		t.Errorf("Enabled of no files: %v, %v", on, err)
	}
	for name, bad := range map[string]certs.Files{
		"missing CA":        {Cert: cf, Key: kf, CA: filepath.Join(dir, "nope.crt")},
		"CA not PEM":        {Cert: cf, Key: kf, CA: kf + "x"},
		"key of another":    {Cert: cf, Key: caKey, CA: caCert},
		"key as CA":         {Cert: cf, Key: kf, CA: kf},
		"missing key":       {Cert: cf, Key: filepath.Join(dir, "nope.key"), CA: caCert},
		"certificate as CA": {Cert: caKey, Key: kf, CA: caCert},
	} {
		if name == "CA not PEM" {
			if err := os.WriteFile(bad.CA, []byte("not a certificate"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := bad.ServerConfig(); err == nil {
			t.Errorf("%s: ServerConfig loaded", name)
		}
	}
	if _, err := certs.LoadCA(cf, kf); err == nil || !strings.Contains(err.Error(), "CA") {
		t.Errorf("LoadCA of a client certificate: %v", err)
	}
}

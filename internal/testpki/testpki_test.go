package testpki_test

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/kvstore/kvstore/certs"
	"github.com/kvstore/kvstore/internal/testpki"
)

// New writes the CA, the loopback server certificate and the client
// certificate, and the client certificate is the CA's, for ClientName.
func TestNew(t *testing.T) {
	p := testpki.New(t, "testpki CA")
	if cn := p.CA.Certificate().Subject.CommonName; cn != "testpki CA" {
		t.Errorf("CA common name %q", cn)
	}
	if filepath.Base(p.CAFile) != "ca.crt" {
		t.Errorf("CA file %s, want ca.crt", p.CAFile)
	}
	ca, err := certs.LoadCA(p.CAFile, filepath.Join(filepath.Dir(p.CAFile), "ca.key"))
	if err != nil || !ca.Certificate().Equal(p.CA.Certificate()) {
		t.Fatalf("LoadCA: %v", err)
	}
	srv, err := tls.LoadX509KeyPair(p.ServerCert, p.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(srv.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(leaf.DNSNames, []string{"localhost"}) || len(leaf.IPAddresses) != 1 || !leaf.IPAddresses[0].Equal(net.IPv4(127, 0, 0, 1)) {
		t.Errorf("server certificate names %v and %v, want localhost and 127.0.0.1", leaf.DNSNames, leaf.IPAddresses)
	}
	for _, host := range testpki.ServerHosts {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: p.CA.Pool()}); err != nil {
			t.Errorf("server certificate for %s: %v", host, err)
		}
	}
	cli, err := tls.LoadX509KeyPair(p.ClientCert, p.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(cli.Certificate, p.Client.Certificate, slices.Equal) {
		t.Error("the client certificate files and Client differ")
	}
	cl, err := x509.ParseCertificate(p.Client.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if cl.Subject.CommonName != testpki.ClientName {
		t.Errorf("client common name %q, want %q", cl.Subject.CommonName, testpki.ClientName)
	}
	if _, err := cl.Verify(x509.VerifyOptions{Roots: p.CA.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client certificate: %v", err)
	}
	if other := testpki.New(t, "another CA"); other.CAFile == p.CAFile {
		t.Error("two PKIs share a directory")
	}
	if fi, err := os.Stat(p.ServerKey); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("server key: %v, %v", fi, err)
	}
}

// ClientTLS trusts the roots, wants TLS 1.2 or later, and shows a copy of
// the certificate whatever the server asks for, or none without one.
func TestClientTLS(t *testing.T) {
	p := testpki.New(t, "testpki CA")
	roots := p.CA.Pool()
	cert := p.Client
	cfg := testpki.ClientTLS(roots, &cert)
	if cfg.RootCAs != roots || cfg.MinVersion != tls.VersionTLS12 || len(cfg.Certificates) != 0 {
		t.Errorf("config: RootCAs %p (want %p), MinVersion %x, %d certificates", cfg.RootCAs, roots, cfg.MinVersion, len(cfg.Certificates))
	}
	cert = tls.Certificate{}
	got, err := cfg.GetClientCertificate(&tls.CertificateRequestInfo{AcceptableCAs: [][]byte{[]byte("another CA")}})
	if err != nil || got == nil || !slices.EqualFunc(got.Certificate, p.Client.Certificate, slices.Equal) {
		t.Errorf("GetClientCertificate = %v, %v; want the client certificate", got, err)
	}
	if cfg := testpki.ClientTLS(roots, nil); cfg.GetClientCertificate != nil || len(cfg.Certificates) != 0 {
		t.Error("ClientTLS without a certificate shows one")
	}
}

// Certificate fails the test on an issuing error and otherwise parses the
// pair.
func TestCertificate(t *testing.T) {
	p := testpki.New(t, "testpki CA")
	kp, err := p.CA.Client("alice")
	c := testpki.Certificate(t, kp, err)
	if len(c.Certificate) != 1 || c.PrivateKey == nil {
		t.Errorf("Certificate = %d certificates, key %v", len(c.Certificate), c.PrivateKey)
	}
}

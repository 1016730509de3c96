// Package testpki makes throwaway public key infrastructure for tests: a CA
// of package certs, a loopback server certificate and a client
// certificate, as PEM files in a temporary directory and as TLS material,
// and a client TLS configuration that trusts given roots.
package testpki

import (
	"crypto/tls"
	"crypto/x509"
	"path/filepath"
	"testing"

	"github.com/kvstore/kvstore/certs"
)

// ClientName is the common name of the client certificate New issues.
const ClientName = "kvstore-node"

// ServerHosts are the hosts the server certificate New issues names.
var ServerHosts = []string{"127.0.0.1", "localhost"}

// PKI is a CA with a server certificate for ServerHosts and a client
// certificate for ClientName, written to files in a temporary directory of
// the test.
type PKI struct {
	// CA is the certificate authority; CA.Pool() trusts it alone.
	CA *certs.CA
	// CAFile is the CA's certificate (ca.crt).
	CAFile string
	// ServerCert and ServerKey are the server certificate (a node
	// certificate of package certs, for ServerHosts) and its key.
	ServerCert, ServerKey string
	// ClientCert and ClientKey are the client certificate's files.
	ClientCert, ClientKey string
	// Client is the client certificate as TLS material.
	Client tls.Certificate
}

// New makes a PKI whose CA has the common name name, failing t if it
// cannot. The files are removed when the test ends.
func New(t testing.TB, name string) PKI {
	t.Helper()
	dir := t.TempDir()
	ca, err := certs.NewCA(name)
	if err != nil {
		t.Fatal(err)
	}
	p := PKI{
		CA:         ca,
		CAFile:     filepath.Join(dir, "ca.crt"),
		ServerCert: filepath.Join(dir, "server.crt"), ServerKey: filepath.Join(dir, "server.key"),
		ClientCert: filepath.Join(dir, "client.crt"), ClientKey: filepath.Join(dir, "client.key"),
	}
	if err := ca.Write(p.CAFile, filepath.Join(dir, "ca.key")); err != nil {
		t.Fatal(err)
	}
	srv, err := ca.Node(ServerHosts)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Write(p.ServerCert, p.ServerKey); err != nil {
		t.Fatal(err)
	}
	cli, err := ca.Client(ClientName)
	if err != nil {
		t.Fatal(err)
	}
	if err := cli.Write(p.ClientCert, p.ClientKey); err != nil {
		t.Fatal(err)
	}
	p.Client = Certificate(t, cli, nil)
	return p
}

// Certificate is kp as TLS material. It fails t if err, the error of
// issuing kp, is not nil, or if kp does not parse, so that a test can
// write kp, err := ca.Client("alice") and then Certificate(t, kp, err).
func Certificate(t testing.TB, kp *certs.KeyPair, err error) tls.Certificate {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	c, err := kp.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// ClientTLS is a client TLS configuration (TLS 1.2 or later) that trusts
// roots and shows cert, if not nil, whatever CAs the server says it
// accepts, so that a server of another CA refuses it as signed by an
// unknown authority rather than as missing. It copies *cert.
func ClientTLS(roots *x509.CertPool, cert *tls.Certificate) *tls.Config {
	cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	if cert != nil {
		c := *cert
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }
	}
	return cfg
}

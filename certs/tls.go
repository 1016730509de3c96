package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// MinVersion is the oldest TLS version either side accepts. Both sides are
// KVStore, so there is no older peer to wait for.
const MinVersion = tls.VersionTLS13

// ServerConfig is the TLS configuration of a node's gRPC server: it shows
// cert and requires every caller to show a certificate signed by a CA in
// roots (tls.RequireAndVerifyClientCert).
func ServerConfig(cert tls.Certificate, roots *x509.CertPool) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientCAs:    roots,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   MinVersion,
	}
}

// ClientConfig is the TLS configuration of a caller, a node dialing its
// peers or a client: it shows cert and trusts servers whose certificate a CA
// in roots signed. ServerName is left empty: gRPC sets it on each connection
// to the host part of the address dialed, which the server's certificate
// must name. The caller shows cert whatever CAs the server says it
// accepts (Go's default would show none to a server of another CA), so
// that such a server refuses it as signed by an unknown authority rather
// than as missing.
func ClientConfig(cert tls.Certificate, roots *x509.CertPool) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &cert, nil
		},
		RootCAs:    roots,
		MinVersion: MinVersion,
	}
}

// Files names one party's PEM files: its certificate, its private key, and
// the certificate of the CA it trusts (the cluster's CA). They go together:
// all three or none.
type Files struct {
	Cert, Key, CA string
}

// ErrPartial: some of the three files are named but not all.
var ErrPartial = errors.New("certs: give a certificate, a key and a CA together, or none")

// Enabled reports whether the files are named (TLS on); it fails with
// ErrPartial if only some are.
func (f Files) Enabled() (bool, error) {
	n := 0
	for _, s := range []string{f.Cert, f.Key, f.CA} {
		if s != "" {
			n++
		}
	}
	switch n {
	case 0:
		return false, nil
	case 3:
		return true, nil
	}
	return false, fmt.Errorf("%w (certificate %q, key %q, CA %q)", ErrPartial, f.Cert, f.Key, f.CA)
}

// load reads the key pair and the CA pool.
func (f Files) load() (tls.Certificate, *x509.CertPool, error) {
	if on, err := f.Enabled(); err != nil || !on {
		if err == nil {
			err = errors.New("certs: no files named")
		}
		return tls.Certificate{}, nil, err
	}
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("certs: key pair %s, %s: %w", f.Cert, f.Key, err)
	}
	pem, err := os.ReadFile(f.CA)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("certs: CA: %w", err)
	}
	cas, err := parseCerts(pem)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("%w (%s)", err, f.CA)
	}
	pool := x509.NewCertPool()
	for _, c := range cas {
		pool.AddCert(c)
	}
	return cert, pool, nil
}

// ServerConfig loads the files into a server configuration (see
// ServerConfig).
func (f Files) ServerConfig() (*tls.Config, error) {
	cert, pool, err := f.load()
	if err != nil {
		return nil, err
	}
	return ServerConfig(cert, pool), nil
}

// ClientConfig loads the files into a client configuration (see
// ClientConfig).
func (f Files) ClientConfig() (*tls.Config, error) {
	cert, pool, err := f.load()
	if err != nil {
		return nil, err
	}
	return ClientConfig(cert, pool), nil
}

// VerifiedName is the CommonName of the certificate the other side of a
// connection showed and the handshake verified against the CA; ok is false
// if there is none (no TLS, or no verified chain).
func VerifiedName(cs tls.ConnectionState) (name string, ok bool) {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return "", false
	}
	return cs.VerifiedChains[0][0].Subject.CommonName, true
}

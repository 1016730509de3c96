// Package certs makes and loads the certificates of KVStore's mutual TLS:
// one certificate authority (CA) per cluster, node certificates that the
// nodes present to each other and to clients, and client certificates.
//
// # Roles
//
// Every connection to a node with TLS on is mutual: the caller shows a
// certificate signed by the cluster's CA, or the handshake fails. The
// certificate's Subject CommonName is the caller's role: NodeName ("node")
// may call the node-to-node service (kvpb.Peer); any other name is a client
// and may call only the client service (kvpb.KV). Whoever holds the CA's key
// therefore decides who is a node: keep it off the nodes.
//
//	ca, err := certs.NewCA("KVStore CA")
//	nodeKP, err := ca.Node([]string{"10.0.0.1", "n1.example"})
//	aliceKP, err := ca.Client("alice")
//
// Node certificates carry the hosts they are given as subject alternative
// names (IP addresses and DNS names) and may authenticate both a server and
// a client (a node dials the others with its own certificate). Nodes check
// each other's names as any TLS client does: the certificate of a node must
// name the host part of the address the others dial (its advertised
// address), and the certificate a client sees must name the host in the
// client's endpoint. Client certificates carry the user name as CommonName
// and may authenticate a client only.
//
// Keys are ECDSA P-256. Files are PEM: a certificate ("CERTIFICATE") and a
// PKCS #8 private key ("PRIVATE KEY"); Write never replaces an existing
// file and writes keys with mode 0600.
package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// NodeName is the CommonName of a node certificate: the role that may call
// the node-to-node service.
const NodeName = "node"

// Lifetimes of the certificates this package makes. NotBefore is set an
// hour in the past, for clocks a little behind.
const (
	CALifetime   = 10 * 365 * 24 * time.Hour
	CertLifetime = 2 * 365 * 24 * time.Hour
)

// The file names `kvstore certs` uses in its directory.
const (
	CACertFile   = "ca.crt"
	CAKeyFile    = "ca.key"
	NodeCertFile = "node.crt"
	NodeKeyFile  = "node.key"
)

// ClientFiles are the file names `kvstore certs client` uses for user name:
// client.<name>.crt and client.<name>.key.
func ClientFiles(name string) (certFile, keyFile string) {
	return "client." + name + ".crt", "client." + name + ".key"
}

// ErrExists is returned by Write when a file it would write exists already.
var ErrExists = errors.New("certs: file exists (refusing to overwrite)")

// CA is a certificate authority: it signs node and client certificates.
type CA struct {
	cert    *x509.Certificate
	certPEM []byte
	key     *ecdsa.PrivateKey
}

// NewCA makes a self-signed CA named commonName (e.g. "KVStore CA"), valid
// for CALifetime.
func NewCA(commonName string) (*CA, error) {
	if commonName == "" {
		return nil, errors.New("certs: CA name is empty")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("certs: CA key: %w", err)
	}
	tmpl, err := template(commonName, CALifetime)
	if err != nil {
		return nil, err
	}
	tmpl.IsCA = true
	tmpl.BasicConstraintsValid = true
	tmpl.MaxPathLenZero = true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("certs: sign CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("certs: parse CA: %w", err)
	}
	return &CA{cert: cert, certPEM: pemBlock("CERTIFICATE", der), key: key}, nil
}

// ParseCA reads a CA from its PEM certificate and key (as CertPEM and
// KeyPEM write them).
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	certs, err := parseCerts(certPEM)
	if err != nil {
		return nil, err
	}
	if len(certs) != 1 || !certs[0].IsCA {
		return nil, errors.New("certs: not one CA certificate")
	}
	kp, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("certs: CA key: %w", err)
	}
	key, ok := kp.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("certs: CA key is %T, want ECDSA", kp.PrivateKey)
	}
	return &CA{cert: certs[0], certPEM: certPEM, key: key}, nil
}

// LoadCA reads a CA from its PEM certificate and key files.
func LoadCA(certFile, keyFile string) (*CA, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("certs: CA certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("certs: CA key: %w", err)
	}
	ca, err := ParseCA(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%w (%s, %s)", err, certFile, keyFile)
	}
	return ca, nil
}

// Certificate is the CA's certificate.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// CertPEM is the CA's certificate in PEM: what nodes and clients trust
// (--ca).
func (ca *CA) CertPEM() []byte { return ca.certPEM }

// KeyPEM is the CA's private key in PEM. Only whoever issues certificates
// needs it.
func (ca *CA) KeyPEM() ([]byte, error) { return keyPEM(ca.key) }

// Pool is a certificate pool holding only this CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// Node issues a node certificate (CommonName NodeName, for server and
// client authentication) naming hosts: IP addresses and DNS names, without
// ports. At least one host is needed: peers and clients check that the
// certificate names the host they dialed.
func (ca *CA) Node(hosts []string) (*KeyPair, error) {
	if len(hosts) == 0 {
		return nil, errors.New("certs: a node certificate needs at least one host (the addresses others dial)")
	}
	tmpl, err := template(NodeName, CertLifetime)
	if err != nil {
		return nil, err
	}
	for _, h := range hosts {
		h = strings.TrimSpace(h)
		switch ip := net.ParseIP(strings.Trim(h, "[]")); {
		case ip != nil:
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		case h == "" || strings.ContainsAny(h, ":/ "):
			return nil, fmt.Errorf("certs: host %q: want an IP address or a DNS name, without port", h)
		default:
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	return ca.issue(tmpl)
}

// Client issues a client certificate for user name (its CommonName), for
// client authentication only. The name may not be NodeName: that is the
// node role.
func (ca *CA) Client(name string) (*KeyPair, error) {
	switch {
	case name == "":
		return nil, errors.New("certs: client name is empty")
	case name == NodeName:
		return nil, fmt.Errorf("certs: client name %q is the node role; choose another", name)
	case strings.ContainsAny(name, "/\\ \t\n"):
		return nil, fmt.Errorf("certs: client name %q: no slashes or spaces", name)
	}
	tmpl, err := template(name, CertLifetime)
	if err != nil {
		return nil, err
	}
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	return ca.issue(tmpl)
}

func (ca *CA) issue(tmpl *x509.Certificate) (*KeyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("certs: key: %w", err)
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("certs: sign %s: %w", tmpl.Subject.CommonName, err)
	}
	kpem, err := keyPEM(key)
	if err != nil {
		return nil, err
	}
	return &KeyPair{CertPEM: pemBlock("CERTIFICATE", der), KeyPEM: kpem}, nil
}

// template is a certificate template with a random serial number.
func template(commonName string, lifetime time.Duration) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("certs: serial: %w", err)
	}
	now := time.Now()
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: commonName, Organization: []string{"KVStore"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(lifetime),
	}, nil
}

// KeyPair is a certificate and its private key, both PEM.
type KeyPair struct {
	CertPEM []byte
	KeyPEM  []byte
}

// TLSCertificate is the pair for a tls.Config.
func (kp *KeyPair) TLSCertificate() (tls.Certificate, error) {
	c, err := tls.X509KeyPair(kp.CertPEM, kp.KeyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("certs: %w", err)
	}
	return c, nil
}

// Write writes the certificate to certFile (mode 0644) and the key to
// keyFile (mode 0600), creating their directories (mode 0700) if needed.
// It fails with ErrExists, writing nothing, if either file exists.
func (kp *KeyPair) Write(certFile, keyFile string) error {
	return writeFiles([]file{{certFile, kp.CertPEM, 0o644}, {keyFile, kp.KeyPEM, 0o600}})
}

// WriteCA writes ca's certificate and key like KeyPair.Write.
func (ca *CA) Write(certFile, keyFile string) error {
	k, err := ca.KeyPEM()
	if err != nil {
		return err
	}
	return writeFiles([]file{{certFile, ca.certPEM, 0o644}, {keyFile, k, 0o600}})
}

type file struct {
	path string
	data []byte
	perm os.FileMode
}

// writeFiles writes every file or none: none may exist beforehand.
func writeFiles(files []file) (err error) {
	for _, f := range files {
		if _, err := os.Lstat(f.path); err == nil {
			return fmt.Errorf("%w: %s", ErrExists, f.path)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("certs: %w", err)
		}
	}
	var written []string
	defer func() {
		if err != nil {
			for _, p := range written {
				_ = os.Remove(p)
			}
		}
	}()
	for _, f := range files {
		if err := os.MkdirAll(filepath.Dir(f.path), 0o700); err != nil {
			return fmt.Errorf("certs: %w", err)
		}
		// O_EXCL: a file that appeared since the check is not replaced.
		w, err := os.OpenFile(f.path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, f.perm)
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%w: %s", ErrExists, f.path)
		}
		if err != nil {
			return fmt.Errorf("certs: %w", err)
		}
		written = append(written, f.path)
		_, werr := w.Write(f.data)
		if cerr := w.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return fmt.Errorf("certs: write %s: %w", f.path, werr)
		}
	}
	return nil
}

func keyPEM(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("certs: marshal key: %w", err)
	}
	return pemBlock("PRIVATE KEY", der), nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// parseCerts reads every CERTIFICATE block of data; there must be one.
func parseCerts(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certs: %w", err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("certs: no PEM certificate found")
	}
	return out, nil
}

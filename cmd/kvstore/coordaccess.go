package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"
)

// coordAccessFlags secure a node's connection to its coordinator: TLS to
// etcd, TLS and digest credentials for ZooKeeper.
type coordAccessFlags struct {
	etcdCert, etcdKey, etcdCA string
	zkCert, zkKey, zkCA       string
	zkAuth                    string
}

// add registers the flags on fl.
func (f *coordAccessFlags) add(fl *pflag.FlagSet) {
	fl.StringVar(&f.etcdCert, "etcd-cert", "", "client certificate (PEM) to show etcd, for its client certificate authentication; needs --etcd-key")
	fl.StringVar(&f.etcdKey, "etcd-key", "", "private key (PEM) of --etcd-cert")
	fl.StringVar(&f.etcdCA, "etcd-ca", "", "CA certificates (PEM) that etcd's server certificate must chain to (default: the system's); any --etcd-cert/--etcd-key/--etcd-ca turns TLS to etcd on")
	fl.StringVar(&f.zkAuth, "zookeeper-auth", "", "user:password: ZooKeeper digest credentials; every znode of the cluster is then created readable and writable only with them")
	fl.StringVar(&f.zkCert, "zookeeper-cert", "", "client certificate (PEM) to show ZooKeeper (ssl.clientAuth); needs --zookeeper-key")
	fl.StringVar(&f.zkKey, "zookeeper-key", "", "private key (PEM) of --zookeeper-cert")
	fl.StringVar(&f.zkCA, "zookeeper-ca", "", "CA certificates (PEM) that ZooKeeper's server certificate must chain to (default: the system's); any --zookeeper-cert/--zookeeper-key/--zookeeper-ca turns TLS on: --zookeeper must then name the secure client ports")
}

// etcdTLSSet reports whether any etcd TLS flag is given.
func (f coordAccessFlags) etcdTLSSet() bool {
	return f.etcdCert != "" || f.etcdKey != "" || f.etcdCA != ""
}

// zkTLSSet reports whether any ZooKeeper TLS flag is given.
func (f coordAccessFlags) zkTLSSet() bool {
	return f.zkCert != "" || f.zkKey != "" || f.zkCA != ""
}

// validate checks the combinations for the chosen coordinator (etcd
// endpoints or a ZooKeeper connect string), without reading any file. Its
// errors are usage errors.
func (f coordAccessFlags) validate(etcd []string, zookeeper bool) error {
	if f.etcdTLSSet() {
		for _, ep := range etcd {
			if strings.HasPrefix(ep, "http://") {
				return fmt.Errorf("--etcd %s is plaintext http, but --etcd-cert, --etcd-key or --etcd-ca asks for TLS: use https:// or host:port", ep)
			}
		}
	}
	switch {
	case (f.etcdCert == "") != (f.etcdKey == ""):
		return errors.New("--etcd-cert and --etcd-key go together: give both or neither")
	case (f.zkCert == "") != (f.zkKey == ""):
		return errors.New("--zookeeper-cert and --zookeeper-key go together: give both or neither")
	case f.etcdTLSSet() && zookeeper:
		return errors.New("--etcd-cert, --etcd-key and --etcd-ca are for etcd: not with --zookeeper")
	case f.zkAuth != "" && len(etcd) > 0:
		return errors.New("--zookeeper-auth is for ZooKeeper: not with --etcd")
	case f.zkTLSSet() && len(etcd) > 0:
		return errors.New("--zookeeper-cert, --zookeeper-key and --zookeeper-ca are for ZooKeeper: not with --etcd")
	}
	if f.zkAuth != "" {
		// The message never quotes the password.
		if user, pass, ok := strings.Cut(f.zkAuth, ":"); !ok || user == "" || pass == "" {
			return errors.New("--zookeeper-auth: want user:password, both non-empty")
		}
	}
	return nil
}

// etcdTLS loads the etcd client's TLS configuration from the files, or
// returns nil if no etcd TLS flag is given.
func (f coordAccessFlags) etcdTLS() (*tls.Config, error) {
	return clientTLS("etcd", f.etcdCert, f.etcdKey, f.etcdCA)
}

// zkTLS loads the ZooKeeper client's TLS configuration from the files, or
// returns nil if no ZooKeeper TLS flag is given.
func (f coordAccessFlags) zkTLS() (*tls.Config, error) {
	return clientTLS("zookeeper", f.zkCert, f.zkKey, f.zkCA)
}

// clientTLS loads the --<coordinator>-cert, -key and -ca files into a
// client TLS configuration, or returns nil if none is named. The client
// certificate is shown whatever CAs the server says it accepts, so that a
// server of another CA refuses it as unknown rather than as missing.
func clientTLS(coordinator, cert, key, ca string) (*tls.Config, error) {
	if cert == "" && key == "" && ca == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if cert != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("--%s-cert %s, --%s-key %s: %w", coordinator, cert, coordinator, key, err)
		}
		cfg.Certificates = []tls.Certificate{pair}
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &pair, nil }
	}
	if ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, fmt.Errorf("--%s-ca: %w", coordinator, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--%s-ca %s: no PEM certificate in it", coordinator, ca)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/kvstore/kvstore/etcdembed"
	"github.com/spf13/cobra"
)

type coordinatorFlags struct {
	name                string
	dataDir             string
	listenClientURLs    string
	advertiseClientURLs string
	listenPeerURLs      string
	advertisePeerURLs   string
	initialCluster      string
	clusterState        string
	clusterToken        string
	heartbeatMs         uint
	electionMs          uint
	logLevel            string

	// TLS of the client and peer URLs, as etcd's flags of the same names.
	certFile, keyFile, trustedCAFile             string
	peerCertFile, peerKeyFile, peerTrustedCAFile string
}

func newCoordinatorCmd() *cobra.Command {
	var f coordinatorFlags
	cmd := &cobra.Command{
		Use:   "coordinator",
		Short: "Run one member of an etcd coordinator cluster",
		Long: `Coordinator runs one embedded etcd member, the coordinator KVStore nodes use
(--etcd endpoints). Its flags mirror etcd's own; with none it runs a
single-member cluster on 127.0.0.1 (clients on port 2379, peers on 2380),
with its data in ./default.etcd. Start every member of a new cluster with the
same --initial-cluster and --initial-cluster-token, e.g. for member n1 of
three:

    kvstore coordinator --name n1 \
      --listen-client-urls http://10.0.0.1:2379 \
      --listen-peer-urls http://10.0.0.1:2380 \
      --initial-cluster n1=http://10.0.0.1:2380,n2=http://10.0.0.2:2380,n3=http://10.0.0.3:2380 \
      --initial-cluster-token kvstore-1

A member is ready once a quorum of the cluster runs; it then prints a line
with its client URLs on standard output. It logs on standard error. SIGTERM
or SIGINT stops it gracefully (a leader first hands leadership on).

With --cert-file and --key-file the member serves its client URLs over TLS
(they must then be https://), and with --trusted-ca-file as well every
client must show a certificate signed by one of those CAs: KVStore nodes
give theirs with --etcd-cert, --etcd-key and --etcd-ca. --peer-cert-file,
--peer-key-file and --peer-trusted-ca-file do the same for the peer URLs;
the peer certificate must allow both server and client authentication.

Every flag can also be set by an environment variable: KVSTORE_ and the flag
name in upper case with underscores, e.g. KVSTORE_INITIAL_CLUSTER. A flag on
the command line wins over its variable. A bad flag exits with status 2.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			from, err := applyEnv(cmd.Flags(), os.LookupEnv)
			if err != nil {
				return &exitError{exitUsage, err}
			}
			cfg, level, err := f.memberConfig(from)
			if err != nil {
				return &exitError{exitUsage, err}
			}
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level}))
			cfg.Logger = log
			if cfg.ClientTLS.Enabled() && cfg.ClientTLS.CAFile == "" {
				log.Warn("the client URLs serve TLS without client certificate authentication (no --trusted-ca-file): anyone who reaches them can read and change the coordinator's data")
			}
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			return runCoordinator(ctx, cfg, log, cmd.OutOrStdout())
		},
	}
	fl := cmd.Flags()
	dflt := etcdembed.DefaultConfig()
	fl.StringVar(&f.name, "name", "default", "member name, unique in the cluster")
	fl.StringVar(&f.dataDir, "data-dir", "", `data directory (default "<name>.etcd")`)
	fl.StringVar(&f.listenClientURLs, "listen-client-urls", "http://127.0.0.1:2379", "URLs to serve clients on, comma-separated")
	fl.StringVar(&f.advertiseClientURLs, "advertise-client-urls", "", "client URLs to tell the cluster and clients (default --listen-client-urls, which then must name a host, not 0.0.0.0)")
	fl.StringVar(&f.listenPeerURLs, "listen-peer-urls", "http://127.0.0.1:2380", "URLs to serve peers on, comma-separated")
	fl.StringVar(&f.advertisePeerURLs, "initial-advertise-peer-urls", "", "peer URLs to tell the cluster (default --listen-peer-urls, which then must name a host, not 0.0.0.0)")
	fl.StringVar(&f.initialCluster, "initial-cluster", "", "every initial member as name=peerURL,... (default <name>=<initial-advertise-peer-urls>: this member alone)")
	fl.StringVar(&f.clusterState, "initial-cluster-state", string(etcdembed.ClusterNew), `"new" to bootstrap a new cluster, "existing" to join a running one (after etcdctl member add)`)
	fl.StringVar(&f.clusterToken, "initial-cluster-token", "etcd-cluster", "initial cluster token, the same for every member of one cluster")
	fl.UintVar(&f.heartbeatMs, "heartbeat-interval", uint(dflt.HeartbeatInterval/time.Millisecond), "raft heartbeat interval in milliseconds")
	fl.UintVar(&f.electionMs, "election-timeout", uint(dflt.ElectionTimeout/time.Millisecond), "raft election timeout in milliseconds (at least 5 heartbeat intervals; the minimum session TTL is 1.5 of it, rounded up to a second)")
	fl.StringVar(&f.logLevel, "log-level", "info", "log level on standard error: debug, info, warn or error")
	fl.StringVar(&f.certFile, "cert-file", "", "certificate (PEM) of the client URLs, which then serve TLS and must be https://; needs --key-file")
	fl.StringVar(&f.keyFile, "key-file", "", "private key (PEM) of --cert-file")
	fl.StringVar(&f.trustedCAFile, "trusted-ca-file", "", "CA certificates (PEM) every client's certificate must chain to: clients must show one (client certificate authentication); needs --cert-file")
	fl.StringVar(&f.peerCertFile, "peer-cert-file", "", "certificate (PEM) of the peer URLs, which then serve TLS and must be https://, shown to peers as a client certificate too; needs --peer-key-file")
	fl.StringVar(&f.peerKeyFile, "peer-key-file", "", "private key (PEM) of --peer-cert-file")
	fl.StringVar(&f.peerTrustedCAFile, "peer-trusted-ca-file", "", "CA certificates (PEM) every peer's certificate must chain to: peers must show one; needs --peer-cert-file")
	documentEnv(cmd)
	return cmd
}

// memberConfig checks the flags and turns them into a member config and a
// log level. from names a flag's source in errors.
func (f coordinatorFlags) memberConfig(from func(string) string) (etcdembed.MemberConfig, slog.Level, error) {
	cfg := etcdembed.DefaultMemberConfig()
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return cfg, level, fmt.Errorf("%s %q: want debug, info, warn or error", from("log-level"), f.logLevel)
	}
	if f.name == "" {
		return cfg, level, fmt.Errorf("%s must not be empty", from("name"))
	}
	cfg.Name = f.name
	cfg.Dir = f.dataDir
	if cfg.Dir == "" {
		cfg.Dir = f.name + ".etcd"
	}
	var err error
	if cfg.ClientTLS, err = tlsFiles(from, "cert-file", f.certFile, "key-file", f.keyFile, "trusted-ca-file", f.trustedCAFile); err != nil {
		return cfg, level, err
	}
	if cfg.PeerTLS, err = tlsFiles(from, "peer-cert-file", f.peerCertFile, "peer-key-file", f.peerKeyFile, "peer-trusted-ca-file", f.peerTrustedCAFile); err != nil {
		return cfg, level, err
	}
	cfg.HeartbeatInterval = time.Duration(f.heartbeatMs) * time.Millisecond
	cfg.ElectionTimeout = time.Duration(f.electionMs) * time.Millisecond
	if err := cfg.Config.Validate(); err != nil {
		return cfg, level, fmt.Errorf("%s %d, %s %d: %w", from("heartbeat-interval"), f.heartbeatMs, from("election-timeout"), f.electionMs, err)
	}

	urls := func(flag, val string) []url.URL {
		if err != nil || val == "" {
			return nil
		}
		var u []url.URL
		if u, err = etcdembed.ParseURLs(val); err != nil {
			err = fmt.Errorf("%s: %w", from(flag), err)
		}
		return u
	}
	cfg.ListenClientURLs = urls("listen-client-urls", f.listenClientURLs)
	cfg.AdvertiseClientURLs = urls("advertise-client-urls", f.advertiseClientURLs)
	cfg.ListenPeerURLs = urls("listen-peer-urls", f.listenPeerURLs)
	cfg.AdvertisePeerURLs = urls("initial-advertise-peer-urls", f.advertisePeerURLs)
	if err != nil {
		return cfg, level, err
	}
	for _, d := range []struct {
		flag    string
		urls    []url.URL
		tls     etcdembed.TLSFiles
		tlsFlag string
	}{
		{"listen-client-urls", cfg.ListenClientURLs, cfg.ClientTLS, "cert-file"},
		{"advertise-client-urls", cfg.AdvertiseClientURLs, cfg.ClientTLS, "cert-file"},
		{"listen-peer-urls", cfg.ListenPeerURLs, cfg.PeerTLS, "peer-cert-file"},
		{"initial-advertise-peer-urls", cfg.AdvertisePeerURLs, cfg.PeerTLS, "peer-cert-file"},
	} {
		for _, u := range d.urls {
			switch {
			case d.tls.Enabled() && u.Scheme != "https":
				return cfg, level, fmt.Errorf("%s %s: want https:// with %s", from(d.flag), u.String(), from(d.tlsFlag))
			case !d.tls.Enabled() && u.Scheme == "https":
				return cfg, level, fmt.Errorf("%s %s is https://: give %s and its key too", from(d.flag), u.String(), from(d.tlsFlag))
			}
		}
	}
	for _, d := range []struct {
		listen, advertise string
		urls              []url.URL
		set               bool
	}{
		{"listen-client-urls", "advertise-client-urls", cfg.ListenClientURLs, len(cfg.AdvertiseClientURLs) > 0},
		{"listen-peer-urls", "initial-advertise-peer-urls", cfg.ListenPeerURLs, len(cfg.AdvertisePeerURLs) > 0},
	} {
		if len(d.urls) == 0 {
			return cfg, level, fmt.Errorf("%s must not be empty", from(d.listen))
		}
		for _, u := range d.urls {
			if !d.set && etcdembed.Unspecified(u) {
				return cfg, level, fmt.Errorf("%s is required when %s names no host (%s)", from(d.advertise), from(d.listen), u.String())
			}
		}
	}
	cfg.InitialCluster = f.initialCluster
	switch s := etcdembed.ClusterState(f.clusterState); s {
	case etcdembed.ClusterNew, etcdembed.ClusterExisting:
		cfg.ClusterState = s
	default:
		return cfg, level, fmt.Errorf("%s %q: want %q or %q", from("initial-cluster-state"), f.clusterState, etcdembed.ClusterNew, etcdembed.ClusterExisting)
	}
	cfg.ClusterToken = f.clusterToken
	if err := cfg.Validate(); err != nil {
		return cfg, level, err // not reached: the flags were checked above
	}
	return cfg, level, nil
}

// tlsFiles checks one set of TLS flags (etcd's rules: certificate and key
// together; a CA only with them) and returns them as etcdembed takes them.
func tlsFiles(from func(string) string, certFlag, cert, keyFlag, key, caFlag, ca string) (etcdembed.TLSFiles, error) {
	switch {
	case (cert == "") != (key == ""):
		return etcdembed.TLSFiles{}, fmt.Errorf("%s and %s go together: give both or neither", from(certFlag), from(keyFlag))
	case ca != "" && cert == "":
		return etcdembed.TLSFiles{}, fmt.Errorf("%s needs %s and %s", from(caFlag), from(certFlag), from(keyFlag))
	}
	return etcdembed.TLSFiles{CertFile: cert, KeyFile: key, CAFile: ca}, nil
}

// runCoordinator runs the member until SIGTERM or SIGINT, then stops it
// gracefully and returns nil. It returns an error if the member cannot start
// or stops on its own.
func runCoordinator(ctx context.Context, cfg etcdembed.MemberConfig, log *slog.Logger, out io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, os.Interrupt)
	defer stop()
	log.Info("starting coordinator", "name", cfg.Name, "data-dir", cfg.Dir,
		"initial-cluster", cfg.InitialCluster, "initial-cluster-state", cfg.ClusterState)
	srv, err := etcdembed.StartMember(ctx, cfg)
	if err != nil {
		if ctx.Err() != nil {
			// Signaled while waiting for a quorum: StartMember stopped etcd.
			log.Info("coordinator stopped before it was ready", "cause", context.Cause(ctx))
			return nil
		}
		return err
	}
	fmt.Fprintf(out, "coordinator %s ready, client URLs: %s\n", cfg.Name, strings.Join(srv.ClientURLs(), ","))
	log.Info("coordinator ready", "name", cfg.Name, "client-urls", strings.Join(srv.ClientURLs(), ","))

	var runErr error
	select {
	case <-ctx.Done():
		stop() // a second signal kills at once
		log.Info("stopping coordinator", "cause", context.Cause(ctx))
	case err := <-srv.Err():
		runErr = fmt.Errorf("etcd failed: %w", err)
	case <-srv.Done():
		runErr = errors.New("etcd stopped on its own (was this member removed from the cluster?)")
	}
	start := time.Now()
	if err := srv.Close(); err != nil && runErr == nil {
		runErr = err
	}
	log.Info("coordinator stopped", "took", time.Since(start).Round(time.Millisecond))
	return runErr
}

package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/kvstore/kvstore/coord"
	"github.com/kvstore/kvstore/coord/etcdcoord"
	"github.com/kvstore/kvstore/coord/zkcoord"
	"github.com/kvstore/kvstore/internal/buildinfo"
	"github.com/kvstore/kvstore/internal/gctune"
	"github.com/kvstore/kvstore/node"
	"github.com/kvstore/kvstore/ops"
)

type nodeFlags struct {
	id        string
	cluster   string
	listen    string
	advertise string
	etcd      []string
	zookeeper string
	ttl       time.Duration
	lease     time.Duration
	drift     float64
	maxReqs   int
	opTimeout time.Duration
	logLevel  string
	logFormat string
	handover  time.Duration
	metrics   string
	dataDir   string
	tls       tlsFlags
	noFsync   bool
	inFlight  int
	limits    limitFlags
	forceNew  string // --force-new-cluster: must repeat --id

	access coordAccessFlags // TLS to etcd, credentials for ZooKeeper
}

func newNodeCmd() *cobra.Command {
	var f nodeFlags
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Run one long-lived KVStore node",
		Long: `Runs one KVStore node: its node-to-node and client gRPC services on
--listen, a session with the coordinator (--etcd endpoints or a --zookeeper
ensemble), its store and cache. Every flag can also be set with an
environment variable KVSTORE_<FLAG> (e.g. KVSTORE_ID, KVSTORE_ETCD); a flag
given on the command line wins.

On SIGTERM or SIGINT a leader first hands leadership over (the others elect
at once, without waiting for its session to expire), then the node leaves:
a rolling restart costs at most one election.

With --metrics-listen (e.g. 127.0.0.1:9100) the node also serves HTTP there:
Prometheus metrics on /metrics, /healthz (200 while the process runs),
/readyz (200 only while the node serves and sees a leader, else 503 and the
reason) and the Go profiler on /debug/pprof/; with --cert, --key and --ca
it serves HTTPS only, to holders of a certificate of the CA.

With --cert, --key and --ca (all three; see kvstore certs) the gRPC port
speaks mutual TLS only: every caller needs a certificate of the CA, the
node-to-node service takes only node certificates (CN=node), and the node
shows --cert to the nodes it dials. Its certificate must name the host of
its advertised address: the others check it.

Disaster recovery: --force-new-cluster=<this node's --id> restarts the
cluster from this node's --data-dir alone, like etcd's --force-new-cluster.
Use it when the coordinator lost its data (a node that holds data then
refuses to start, saying so) or when a majority of the voters is gone for
good, on the most up-to-date surviving node, with every other node stopped.
It writes a voter record naming only this node, raises the coordinator's
epoch base above every epoch this node promised, logs what may be lost
(writes acknowledged only by nodes that are gone), and starts; then start
the other surviving nodes normally, without the flag: they are reconciled
to this node's state and become voters again. It is refused while a
majority of the recorded voters is alive, its value must repeat --id, and
it has no environment variable: it cannot be left on by accident.`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		PreRunE:       func(cmd *cobra.Command, _ []string) error { return bindEnv(cmd) },
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runNode(cmd.Context(), f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.id, "id", "", "node id, stable across restarts (required)")
	fl.StringVar(&f.cluster, "cluster", "default", "cluster name (the cluster lives under /kvstore/<name> in the coordinator)")
	fl.StringVar(&f.listen, "listen", "127.0.0.1:7000", "address of the node's gRPC services (node-to-node and client)")
	fl.StringVar(&f.advertise, "advertise", "", "address other nodes and clients dial (default: the listen address)")
	fl.StringSliceVar(&f.etcd, "etcd", nil, "etcd endpoints (host:port,...)")
	fl.StringVar(&f.zookeeper, "zookeeper", "", "ZooKeeper ensemble, host:port[,host:port...][/chroot], instead of etcd")
	fl.DurationVar(&f.ttl, "session-ttl", 2*time.Second, "coordinator session TTL")
	fl.DurationVar(&f.lease, "lease", 2*time.Second, "read lease of a cached copy; the same on every node of the cluster (see kvstore cluster settings)")
	fl.Float64Var(&f.drift, "clock-drift", node.DefaultConfig().ClockDrift, "bound on the clock rate difference between nodes (0.05: 5%); the same on every node of the cluster")
	fl.IntVar(&f.maxReqs, "max-requests", node.DefaultConfig().MaxRequests, "how many request ids each replica remembers to apply a retried write once; the same on every node of the cluster")
	fl.DurationVar(&f.opTimeout, "op-timeout", 15*time.Second, "how long an operation may wait (e.g. for an election)")
	fl.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fl.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	fl.DurationVar(&f.handover, "handover-timeout", 5*time.Second, "on shutdown, how long a leader waits for a successor")
	fl.StringVar(&f.dataDir, "data-dir", "", "directory of the node's durable state (created if missing); a node restarted with it rejoins with its data and counts toward majorities at once (default: memory only; a voter restarted without data rejoins as recovering)")
	f.limits.add(fl)
	fl.BoolVar(&f.noFsync, "no-fsync", false, "with --data-dir: skip the fsync of each group commit (faster; a machine crash may lose acknowledged writes)")
	fl.IntVar(&f.inFlight, "appends-in-flight", node.DefaultAppendsInFlight, "as leader, how many Appends of entries to keep in flight to each follower (1: one at a time)")
	fl.StringVar(&f.forceNew, "force-new-cluster", "", "DISASTER RECOVERY, see above: restart the cluster from this node's data alone; the value must repeat --id; writes acknowledged only by lost nodes are lost")
	noEnv(fl, "force-new-cluster")
	fl.StringVar(&f.metrics, "metrics-listen", "", "address of the HTTP server for /metrics, /healthz, /readyz and /debug/pprof/ (default: none); HTTPS with mutual TLS under --cert, --key and --ca")
	f.tls.add(fl, "this node (a node certificate, CN=node, naming the host of --advertise)")
	f.access.add(fl)
	documentEnv(cmd)
	return cmd
}

// newLogger builds the process's slog logger on standard error.
func newLogger(level, format string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

// openCoordinator connects to the coordinator named by the flags: etcd
// endpoints or a ZooKeeper connect string (exactly one), secured by access.
// Bad flag combinations are usage errors. The etcd client logs to log.
func openCoordinator(ctx context.Context, etcd []string, zookeeper, cluster string, access coordAccessFlags, log *slog.Logger) (coord.Coordinator, error) {
	usage := func(err error) error { return &exitError{exitUsage, err} }
	switch {
	case len(etcd) > 0 && zookeeper != "":
		return nil, usage(errors.New("--etcd and --zookeeper both given: choose one coordinator"))
	case len(etcd) == 0 && zookeeper == "":
		return nil, usage(errors.New("no coordinator: give --etcd endpoints or --zookeeper servers"))
	}
	if err := access.validate(etcd, zookeeper != ""); err != nil {
		return nil, usage(err)
	}
	if zookeeper != "" {
		servers, chroot, err := zkcoord.ParseConnectString(zookeeper)
		if err != nil {
			return nil, usage(fmt.Errorf("--zookeeper: %w", err))
		}
		tlsCfg, err := access.zkTLS()
		if err != nil {
			return nil, err
		}
		cfg := zkcoord.Config{Servers: servers, Prefix: chroot + "/kvstore/" + cluster, Auth: access.zkAuth, TLS: tlsCfg}
		if deadline, ok := ctx.Deadline(); ok {
			// Keep trying for the caller's whole budget, not zkcoord's
			// default 5 s: a busy ensemble (a TLS handshake on a loaded
			// JVM) may answer only after a few attempts.
			cfg.DialTimeout = time.Until(deadline)
		}
		return zkcoord.New(ctx, cfg)
	}
	tlsCfg, err := access.etcdTLS()
	if err != nil {
		return nil, err
	}
	cfg := etcdcoord.Config{Endpoints: etcd, Prefix: "/kvstore/" + cluster + "/", TLS: tlsCfg, Logger: log}
	if err := cfg.Validate(); err != nil {
		return nil, usage(fmt.Errorf("--etcd: %w", err))
	}
	return etcdcoord.New(ctx, cfg)
}

func runNode(ctx context.Context, f nodeFlags) error {
	if ctx == nil {
		ctx = context.Background()
	}
	log, err := newLogger(f.logLevel, f.logFormat)
	if err != nil {
		return err
	}
	if f.id == "" {
		return &exitError{exitUsage, errors.New("--id is required")}
	}
	if strings.ContainsAny(f.cluster, "/ ") || f.cluster == "" {
		return &exitError{exitUsage, fmt.Errorf("--cluster %q: want a non-empty name without / or spaces", f.cluster)}
	}
	if err := f.limits.validate(); err != nil {
		return &exitError{exitUsage, err}
	}
	switch {
	case f.forceNew != "" && f.forceNew != f.id:
		return &exitError{exitUsage, fmt.Errorf("--force-new-cluster=%s must repeat --id %q: it restarts the whole cluster from this node's data alone", f.forceNew, f.id)}
	case f.forceNew != "" && f.dataDir == "":
		return &exitError{exitUsage, errors.New("--force-new-cluster needs --data-dir: it restarts the cluster from this node's data")}
	}
	if f.inFlight < 1 {
		return &exitError{exitUsage, fmt.Errorf("--appends-in-flight %d: want at least 1", f.inFlight)}
	}
	serverTLS, peerTLS, err := f.tls.nodeConfigs()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// Bound the collector's headroom: a big store would otherwise reside
	// at twice its live heap (internal/gctune; GOGC in the environment
	// turns this off).
	go gctune.Tune(ctx, gctune.DefaultPolicy, 100*time.Millisecond)

	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	co, err := openCoordinator(startCtx, f.etcd, f.zookeeper, f.cluster, f.access, log)
	if err != nil {
		return err
	}
	defer co.Close()
	cfg := node.DefaultConfig()
	cfg.ID = f.id
	cfg.Cluster = f.cluster
	cfg.ListenAddr = f.listen
	cfg.AdvertiseAddr = f.advertise
	cfg.Coordinator = co
	cfg.SessionTTL = f.ttl
	cfg.LeaseDuration = f.lease
	cfg.ClockDrift = f.drift
	cfg.MaxRequests = f.maxReqs
	cfg.OpTimeout = f.opTimeout
	cfg.DataDir = f.dataDir
	cfg.NoFsync = f.noFsync
	cfg.AppendsInFlight = f.inFlight
	cfg.ForceNewCluster = f.forceNew
	cfg.ServerTLS, cfg.PeerTLS = serverTLS, peerTLS
	f.limits.apply(&cfg)
	cfg.Logger = log
	n, err := node.New(cfg)
	if err != nil {
		return err
	}
	opsSrv, err := startOps(f.metrics, n, log, serverTLS)
	if err != nil {
		n.Kill()
		return err
	}
	defer closeOps(opsSrv, log)
	if err := n.Start(startCtx); err != nil {
		n.Kill()
		return err
	}
	bi := buildinfo.Get()
	log.Info("node started", "id", f.id, "cluster", f.cluster, "addr", n.Addr(),
		"version", bi.Version, "commit", bi.Commit, "go_version", bi.GoVersion)

	select {
	case <-ctx.Done():
	case <-n.Done():
		// The node stopped by itself: the leader removed it from the
		// voter record (`kvstore members remove`), or the cluster's
		// settings changed to values it does not run with.
		cause := n.StopCause()
		closeCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := n.Close(closeCtx); err != nil {
			return err
		}
		if errors.Is(cause, coord.ErrSettingsMismatch) {
			return cause
		}
		log.Warn("removed from the cluster: exiting", "id", f.id, "cause", cause)
		return nil
	}
	log.Info("shutting down", "leader", n.IsLeader())
	handOver(n, f.handover, log)
	closeCtx, cancelClose := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelClose()
	if err := n.Close(closeCtx); err != nil {
		return err
	}
	log.Info("node stopped", "id", f.id)
	return nil
}

// startOps starts the operations HTTP server on addr for node n, or returns
// nil if addr is empty. It starts before the node, so that /readyz answers
// 503 while the node is starting.
func startOps(addr string, n *node.Node, log *slog.Logger, tlsConfig *tls.Config) (*ops.Server, error) {
	if addr == "" {
		return nil, nil
	}
	reg, err := ops.NewRegistry(n.Collectors()...)
	if err != nil {
		return nil, err
	}
	srv, err := ops.New(ops.Config{Gatherer: reg, Ready: n.Ready, Logger: log, TLS: tlsConfig})
	if err != nil {
		return nil, err
	}
	if err := srv.Start(addr); err != nil {
		return nil, fmt.Errorf("--metrics-listen: %w", err)
	}
	log.Info("ops server listening", "addr", srv.Addr(), "tls", tlsConfig != nil, "paths", "/metrics /healthz /readyz /debug/pprof/")
	return srv, nil
}

// closeOps stops the operations server, if any: after the node, so that
// /readyz says 503 while the node shuts down.
func closeOps(srv *ops.Server, log *slog.Logger) {
	if srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Close(ctx); err != nil {
		log.Warn("ops server close", "err", err)
	}
}

// handOver makes a leader resign and waits, up to timeout, until another
// node leads and has taken this node's state over (its first entry, in its
// epoch, reached this node), so that writes in flight elsewhere find the
// successor. Leaving only once the successor's takeover counted this node
// spares the successor the wait for every lease granted under the old epoch
// that it must make when a voter does not answer its takeover.
func handOver(n *node.Node, timeout time.Duration, log *slog.Logger) {
	if !n.IsLeader() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := n.Resign(ctx); err != nil {
		log.Warn("resign failed; the others elect once the session ends", "err", err)
		return
	}
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	var to string
	for {
		if l := n.Leader(); l.ID != "" && l.ID != n.ID() {
			if to != l.ID {
				to = l.ID
				log.Info("leadership handed over", "to", l.ID, "epoch", l.Epoch)
			}
			if n.Applied().Epoch >= l.Epoch {
				log.Info("successor took over", "leader", l.ID, "epoch", l.Epoch)
				return
			}
		}
		select {
		case <-ctx.Done():
			if to == "" {
				log.Warn("no successor seen before the handover timeout", "timeout", timeout)
			} else {
				log.Warn("the successor did not take over before the handover timeout", "leader", to, "timeout", timeout)
			}
			return
		case <-t.C:
		}
	}
}

// Command kvstore runs KVStore. With no arguments it starts the interactive
// shell of the original system: an embedded coordinator (etcd) and node 0,
// with commands to add nodes and inject faults (see `help` in the shell).
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kvstore/kvstore/cluster"
	"github.com/kvstore/kvstore/coord/zkcoord"
	"github.com/kvstore/kvstore/internal/buildinfo"
	"github.com/kvstore/kvstore/node"
	"github.com/kvstore/kvstore/shell"
	"github.com/spf13/cobra"
)

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(exitCode(err))
	}
}

type shellFlags struct {
	nodes     int
	etcd      []string
	zookeeper string
	backend   string
	cluster   string
	ttl       time.Duration
	lease     time.Duration
	opTimeout time.Duration
	logLevel  string
	history   string
	dataDir   string
	noFsync   bool
	tls       bool
}

func newRootCmd() *cobra.Command {
	var f shellFlags
	cmd := &cobra.Command{
		Use:   "kvstore",
		Short: "KVStore: a strongly consistent, cache-friendly distributed key-value store",
		Long: `KVStore with no arguments starts the interactive shell: an embedded etcd
coordinator and node 0 in this process. Type 'help' in the shell for its
commands. When standard input is not a terminal, commands are read from it
and no prompt is printed, e.g.:

    printf 'put 0 a 1\nget 0 a\n' | kvstore

With --zookeeper host:port[,host:port...][/chroot] the nodes use that
ZooKeeper ensemble instead of etcd (--etcd names an external etcd); with
--backend zookeeper alone the shell starts a local ZooKeeper server from
Debian's zookeeper package.`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runShell(cmd.Context(), f)
		},
	}
	fl := cmd.Flags()
	fl.IntVar(&f.nodes, "nodes", 1, "nodes to start before the prompt")
	fl.StringSliceVar(&f.etcd, "etcd", nil, "external etcd endpoints (host:port,...); default: an embedded etcd")
	fl.StringVar(&f.zookeeper, "zookeeper", "", "an external ZooKeeper ensemble, host:port[,host:port...][/chroot], instead of etcd")
	fl.StringVar(&f.backend, "backend", "", `coordinator: "etcd" or "zookeeper"; "zookeeper" without --zookeeper starts a local ZooKeeper server (Debian package zookeeper)`)
	fl.StringVar(&f.cluster, "cluster", "default", "cluster name (the cluster lives under /kvstore/<name> in the coordinator)")
	fl.DurationVar(&f.ttl, "session-ttl", 2*time.Second, "coordinator session TTL")
	fl.DurationVar(&f.lease, "lease", 2*time.Second, "read lease of a cached copy")
	fl.DurationVar(&f.opTimeout, "op-timeout", 15*time.Second, "how long get, put, delete and leader may wait (e.g. for an election) before failing; new-client and restart may take up to 60s, or --op-timeout if longer")
	fl.StringVar(&f.logLevel, "log-level", "", "node logs on standard error at this level (debug, info, warn, error); default none")
	fl.StringVar(&f.history, "history", "", "shell history file (interactive only)")
	fl.StringVar(&f.dataDir, "data-dir", "", "make the nodes durable: node n<i> keeps its state in DIR/n<i> (restart keeps it) and an embedded coordinator in DIR/coordinator; kept on exit, so the next shell with the same DIR and --nodes finds the same data (default: memory only)")
	fl.BoolVar(&f.noFsync, "no-fsync", false, "with --data-dir: skip the fsync of each group commit (faster; a machine crash may lose acknowledged writes)")
	fl.BoolVar(&f.tls, "tls", false, "the nodes speak mutual TLS to each other, with certificates of a throwaway CA made in memory (default: plaintext on loopback)")
	cmd.AddCommand(newNodeCmd())
	cmd.AddCommand(newCoordinatorCmd())
	cmd.AddCommand(newClusterCmd())
	cmd.AddCommand(ctlCommands()...)
	cmd.AddCommand(newBenchCmd())
	cmd.AddCommand(newCertsCmd())
	cmd.AddCommand(newVersionCmd())
	cmd.AddCommand(newHealthcheckCmd())
	// --version prints what `kvstore version` prints.
	cmd.Version = buildinfo.Get().Version
	cmd.SetVersionTemplate(buildinfo.Get().String() + "\n")
	usageErrors(cmd)
	return cmd
}

// usageErrors makes every command line error of cmd and its subcommands
// (unknown flag, bad flag value, unexpected arguments, unknown command)
// exit with exitUsage.
func usageErrors(cmd *cobra.Command) {
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &exitError{exitUsage, err} })
	if args := cmd.Args; args != nil {
		cmd.Args = func(c *cobra.Command, a []string) error {
			if err := args(c, a); err != nil {
				return &exitError{exitUsage, err}
			}
			return nil
		}
	}
	for _, sub := range cmd.Commands() {
		usageErrors(sub)
	}
}

func runShell(ctx context.Context, f shellFlags) error {
	if ctx == nil {
		ctx = context.Background()
	}
	interactive := shell.IsTerminal(os.Stdin)
	ctx, interrupts, prompting, stop := shellSignals(ctx, interactive)
	defer stop()
	logger := slog.New(slog.DiscardHandler)
	if f.logLevel != "" {
		var lvl slog.Level
		if err := lvl.UnmarshalText([]byte(f.logLevel)); err != nil {
			return fmt.Errorf("--log-level: %w", err)
		}
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	}
	coordOpts, err := coordinatorOptions(f)
	if err != nil {
		return err
	}
	opts := cluster.Options{
		Nodes:     f.nodes,
		Backend:   coordOpts.Backend,
		Etcd:      coordOpts.Etcd,
		ZooKeeper: coordOpts.ZooKeeper,
		Prefix:    coordOpts.Prefix,
		Logger:    logger,
		DataDir:   f.dataDir,
		NoFsync:   f.noFsync,
		TLS:       f.tls,
		Node: func(c *node.Config) {
			c.Cluster = f.cluster
			c.SessionTTL = f.ttl
			c.LeaseDuration = f.lease
			c.OpTimeout = f.opTimeout
		},
	}
	if f.nodes < 1 {
		return errors.New("--nodes must be at least 1")
	}
	startCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	c, err := cluster.New(startCtx, opts)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		return err
	}
	defer c.Close()
	prompting()
	return shell.Run(ctx, backend{c}, shell.Config{
		In:             os.Stdin,
		Out:            os.Stdout,
		Err:            os.Stderr,
		Interactive:    interactive,
		CommandTimeout: f.opTimeout, // the nodes' own bound: see shell.Config
		HistoryFile:    f.history,
		Interrupt:      interrupts,
	})
}

// shellSignals makes SIGTERM and SIGINT stop the shell cleanly: they end
// the returned context, and the shell then closes every node and the
// coordinator and removes the temporary data. Once prompting is called on
// a terminal (interactive), SIGINT goes to interrupts instead, for the
// shell to cancel the running command (Ctrl-C at the prompt itself is read
// by the line editor, which clears the line). stop restores the default
// handling; until then a signal during the cleanup is ignored.
func shellSignals(ctx context.Context, interactive bool) (_ context.Context, interrupts chan os.Signal, prompting func(), stop func()) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	ctx, cancel := context.WithCancelCause(ctx)
	var toShell atomic.Bool
	if interactive {
		interrupts = make(chan os.Signal, 1)
	}
	go func() {
		for {
			select {
			case s := <-sig:
				if s == syscall.SIGINT && toShell.Load() {
					select {
					case interrupts <- s:
					default: // one pending interrupt is enough
					}
					continue
				}
				cancel(fmt.Errorf("stopped by signal: %v", s))
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	return ctx, interrupts, func() { toShell.Store(interactive) }, func() {
		signal.Stop(sig)
		cancel(nil)
	}
}

// coordinatorOptions turns the coordinator flags into cluster options:
// backend, servers and, for ZooKeeper, the prefix under the chroot.
func coordinatorOptions(f shellFlags) (cluster.Options, error) {
	var o cluster.Options
	switch f.backend {
	case "", string(cluster.Etcd), string(cluster.ZooKeeper):
		o.Backend = cluster.Backend(f.backend)
	default:
		return o, fmt.Errorf("--backend %q: want %q or %q", f.backend, cluster.Etcd, cluster.ZooKeeper)
	}
	if f.zookeeper == "" {
		o.Etcd = f.etcd
		if o.Backend == cluster.ZooKeeper && len(f.etcd) > 0 {
			return o, errors.New("--etcd given with --backend zookeeper")
		}
		return o, nil
	}
	if len(f.etcd) > 0 {
		return o, errors.New("--etcd and --zookeeper both given: choose one coordinator")
	}
	if o.Backend == cluster.Etcd {
		return o, errors.New("--zookeeper given with --backend etcd")
	}
	servers, chroot, err := zkcoord.ParseConnectString(f.zookeeper)
	if err != nil {
		return o, fmt.Errorf("--zookeeper: %w", err)
	}
	o.Backend, o.ZooKeeper = cluster.ZooKeeper, servers
	o.Prefix = chroot + "/kvstore/" + f.cluster
	return o, nil
}

// backend adapts a cluster to the shell.
type backend struct{ *cluster.Cluster }

func (b backend) List() []shell.NodeInfo {
	var out []shell.NodeInfo
	for _, n := range b.Cluster.List() {
		out = append(out, shell.NodeInfo{Num: n.Num, ID: n.ID, Addr: n.Addr, Role: n.Role, State: n.State})
	}
	return out
}

var _ shell.Backend = backend{}

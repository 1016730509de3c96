package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/kvstore/kvstore/bench"
	"github.com/kvstore/kvstore/cluster"
)

type benchFlags struct {
	durability   []string
	workloads    []string
	distribution string
	keys         int
	valueSize    int
	clients      int
	duration     time.Duration
	warmup       time.Duration
	nodes        int
	backend      string
	endpoints    []string
	compare      []string
	peerMembers  int
	peerFsync    bool
	json         bool
	seed         uint64
	cpuProfile   string
	failover     int
	tls          tlsFlags
}

func newBenchCmd() *cobra.Command {
	var f benchFlags
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Benchmark KVStore (YCSB-style workloads), optionally against etcd and ZooKeeper",
		Long: `Runs YCSB-style workloads against KVStore and prints throughput and latency:
A (50% reads, 50% updates), B (95/5), C (reads only), W (updates only), over
--keys keys of --value-size bytes chosen uniformly or by a scrambled Zipfian
distribution (theta 0.99), with --clients concurrent clients. Each workload
first writes every key once (the load, on each target's first workload),
then runs --warmup unrecorded and --duration recorded.

By default KVStore runs in this process: a --nodes node cluster with an
embedded etcd coordinator, client i calling node i % nodes through its Go
API (node.Get/node.Set, as a program embedding a node does). With
--endpoints (or KVSTORE_ENDPOINTS) it benchmarks a running cluster through
the Go client instead, labelled with the storage and voters its nodes
report in Status. --compare etcd,zookeeper also starts those systems
(--peer-members servers each, fsync per --peer-fsync) and runs every
workload against them with the same parameters and seed, then prints the
ratios of KVStore's throughput to theirs.

A progress line goes to standard error every second; the table (or, with
--json, a JSON array of results) to standard output. Every flag can also be
set with KVSTORE_<FLAG>.`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		PreRunE:       func(cmd *cobra.Command, _ []string) error { return bindEnv(cmd) },
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runBench(cmd.Context(), f, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	fl := cmd.Flags()
	fl.StringSliceVar(&f.workloads, "workload", bench.Workloads, "workloads to run, in order: A (50% read, 50% update), B (95/5), C (read only), W (update only)")
	fl.StringVar(&f.distribution, "distribution", bench.Zipf, "key distribution: uniform or zipfian (scrambled, theta 0.99)")
	fl.IntVar(&f.keys, "keys", bench.DefaultKeys, "number of distinct keys")
	fl.IntVar(&f.valueSize, "value-size", bench.DefaultValueSize, "bytes per written value")
	fl.IntVar(&f.clients, "clients", bench.DefaultClients, "concurrent clients")
	fl.DurationVar(&f.duration, "duration", bench.DefaultDuration, "measured time per workload and target")
	fl.DurationVar(&f.warmup, "warmup", bench.DefaultWarmup, "unrecorded time before each measurement")
	fl.IntVar(&f.nodes, "nodes", 3, "nodes of the in-process cluster (without --endpoints)")
	fl.StringSliceVar(&f.durability, "durability", []string{bench.Memory}, `durability of the in-process cluster: "memory", "fsync" (a data directory per node, fsync per group commit), "nofsync" (a data directory without fsync); several give one target each, side by side`)
	fl.StringVar(&f.backend, "backend", string(cluster.Etcd), `coordinator of the in-process cluster: "etcd" (embedded) or "zookeeper" (a local server from Debian's package)`)
	fl.StringSliceVar(&f.endpoints, "endpoints", nil, "benchmark the running cluster at these node addresses (host:port,...) through the Go client instead of an in-process cluster")
	fl.StringSliceVar(&f.compare, "compare", nil, `peer systems to run the same workloads against: "etcd", "zookeeper" (comma list)`)
	fl.IntVar(&f.peerMembers, "peer-members", 3, "servers of each --compare system")
	fl.BoolVar(&f.peerFsync, "peer-fsync", true, "--compare systems fsync each write before acknowledging it (their default); false disables it")
	fl.BoolVar(&f.json, "json", false, "print the results as a JSON array instead of tables")
	fl.Uint64Var(&f.seed, "seed", 1, "seed of the clients' random operation and key sequences (the same for every target)")
	fl.StringVar(&f.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run to this file")
	f.tls.add(fl, "the benchmark's clients, with --endpoints (a client certificate of the nodes' CA)")
	fl.IntVar(&f.failover, "failover", 0, "instead of the workloads, measure failover this many times on an in-process 3-node cluster: leader killed to first acknowledged write, and a write while a holder of the key is rmi-down")
	documentEnv(cmd)
	return cmd
}

// benchWorkloads turns the flags into the workloads to run, in order.
func benchWorkloads(f benchFlags) ([]bench.Workload, error) {
	if len(f.workloads) == 0 {
		return nil, errors.New("--workload: none given")
	}
	var ws []bench.Workload
	for _, name := range f.workloads {
		name = strings.ToUpper(strings.TrimSpace(name))
		if _, err := bench.ReadProportion(name); err != nil {
			return nil, fmt.Errorf("--workload %q: want A, B, C or W", name)
		}
		ws = append(ws, bench.Workload{
			Name:         name,
			Distribution: f.distribution,
			Keys:         f.keys,
			ValueSize:    f.valueSize,
			Clients:      f.clients,
			Duration:     f.duration,
			Warmup:       f.warmup,
			Seed:         f.seed,
		})
	}
	switch {
	case f.distribution != bench.Uniform && f.distribution != bench.Zipf:
		return nil, fmt.Errorf("--distribution %q: want %s or %s", f.distribution, bench.Uniform, bench.Zipf)
	case f.keys < 1:
		return nil, fmt.Errorf("--keys %d: want at least 1", f.keys)
	case f.valueSize < 1:
		return nil, fmt.Errorf("--value-size %d: want at least 1", f.valueSize)
	case f.clients < 1:
		return nil, fmt.Errorf("--clients %d: want at least 1", f.clients)
	case f.duration <= 0:
		return nil, fmt.Errorf("--duration %v: want more than 0", f.duration)
	case f.warmup < 0:
		return nil, fmt.Errorf("--warmup %v: want 0 or more", f.warmup)
	case f.nodes < 1:
		return nil, fmt.Errorf("--nodes %d: want at least 1", f.nodes)
	}
	return ws, nil
}

// benchPeerNames checks the --compare list.
func benchPeerNames(names []string) ([]string, error) {
	var out []string
	for _, n := range names {
		n = strings.ToLower(strings.TrimSpace(n))
		switch n {
		case "":
			continue
		case "etcd", "zookeeper":
		default:
			return nil, fmt.Errorf("--compare %q: want etcd or zookeeper", n)
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out, nil
}

func runBench(ctx context.Context, f benchFlags, stdout, stderr io.Writer) (err error) {
	if ctx == nil {
		ctx = context.Background()
	}
	workloads, err := benchWorkloads(f)
	if err != nil {
		return &exitError{exitUsage, err}
	}
	peerNames, err := benchPeerNames(f.compare)
	if err != nil {
		return &exitError{exitUsage, err}
	}
	if len(f.durability) == 0 {
		f.durability = []string{bench.Memory}
	}
	for _, d := range f.durability {
		if !slices.Contains(bench.Durabilities, d) {
			return &exitError{exitUsage, fmt.Errorf("--durability %q: want one of %v", d, bench.Durabilities)}
		}
	}
	if len(f.endpoints) > 0 && (len(f.durability) > 1 || f.durability[0] != bench.Memory) {
		return &exitError{exitUsage, errors.New("--durability is for the in-process cluster; a running cluster's nodes have their own --data-dir")}
	}
	if f.backend != string(cluster.Etcd) && f.backend != string(cluster.ZooKeeper) {
		return &exitError{exitUsage, fmt.Errorf("--backend %q: want %s or %s", f.backend, cluster.Etcd, cluster.ZooKeeper)}
	}
	if _, on, err := f.tls.files(); err != nil {
		return err
	} else if on && len(f.endpoints) == 0 {
		return &exitError{exitUsage, errors.New("--cert, --key and --ca are for --endpoints (the in-process cluster needs none)")}
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if f.failover > 0 {
		return runFailover(ctx, f, stdout, stderr)
	}

	if f.cpuProfile != "" {
		pf, err := os.Create(f.cpuProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(pf); err != nil {
			pf.Close()
			return err
		}
		defer func() {
			pprof.StopCPUProfile()
			if cerr := pf.Close(); err == nil {
				err = cerr
			}
		}()
	}

	// The targets: KVStore first (one per durability mode), then the peers.
	var targets []bench.Target
	ours := map[bench.Target]bool{}
	defer func() {
		for _, t := range targets {
			if cerr := t.Close(); cerr != nil && err == nil {
				err = fmt.Errorf("close %s: %w", t.Name(), cerr)
			}
		}
	}()
	if len(f.endpoints) > 0 {
		tlsConfig, err := f.tls.clientConfig()
		if err != nil {
			return err
		}
		t, err := bench.NewEndpoints(f.endpoints, tlsConfig)
		if err != nil {
			return err
		}
		targets = append(targets, t)
		ours[t] = true
	} else {
		for _, mode := range f.durability {
			startCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
			t, err := bench.NewInProcess(startCtx, f.nodes, cluster.Backend(f.backend), mode)
			cancel()
			if err != nil {
				return err
			}
			targets = append(targets, t)
			ours[t] = true
		}
	}
	if len(peerNames) > 0 {
		peers, err := startPeers(ctx, peerNames, bench.PeerOptions{Members: f.peerMembers, Fsync: f.peerFsync})
		if err != nil {
			return err
		}
		targets = append(targets, peers...)
	}

	var oursRes, peerRes []bench.Result
	loaded := map[bench.Target]bool{}
	for _, w := range workloads {
		for _, t := range targets {
			w := w
			// Every workload writes the same keys with values of the same
			// size: one load per target is enough.
			w.SkipLoad = loaded[t]
			res, err := bench.Run(ctx, t, w, stderr)
			if err != nil {
				return err
			}
			loaded[t] = true
			if ours[t] {
				oursRes = append(oursRes, res)
			} else {
				peerRes = append(peerRes, res)
			}
		}
	}
	all := append(append([]bench.Result(nil), oursRes...), peerRes...)
	if f.json {
		return printJSON(stdout, all)
	}
	if err := bench.WriteTable(stdout, all); err != nil {
		return err
	}
	if len(peerRes) > 0 {
		fmt.Fprintln(stdout)
		return bench.WriteRatios(stdout, oursRes, peerRes)
	}
	return nil
}

// startPeers starts the --compare systems (bench.NewPeers, in
// bench/peers.go).
func startPeers(ctx context.Context, names []string, opts bench.PeerOptions) ([]bench.Target, error) {
	startCtx, cancel := context.WithTimeout(ctx, 120*time.Second)
	defer cancel()
	return bench.NewPeers(startCtx, names, opts)
}

// runFailover prints the failover figures over f.failover runs.
func runFailover(ctx context.Context, f benchFlags, stdout, stderr io.Writer) error {
	res, err := bench.Failover(ctx, f.failover, cluster.Backend(f.backend), stderr)
	if err != nil {
		return err
	}
	if f.json {
		return printJSON(stdout, res)
	}
	_, err = fmt.Fprintf(stdout, "failover over %d runs (%s coordinator, session TTL and lease 2s):\n  leader killed -> first acknowledged write: %v\n  write while a holder is rmi-down:          %v\n",
		res.Runs, res.Backend, res.KillToWrite, res.HolderDownWrite)
	return err
}

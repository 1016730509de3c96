package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
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
	valueSizes   []int
	clients      []int
	duration     time.Duration
	warmup       time.Duration
	nodes        []int
	targets      []string
	memory       bool
	backend      string
	endpoints    []string
	compare      []string
	peerMembers  int
	peerFsync    bool
	json         bool
	seed         uint64
	cpuProfile   string
	memProfile   string
	trace        string
	failover     int
	rounds       int
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
	fl.IntSliceVar(&f.valueSizes, "value-size", []int{bench.DefaultValueSize}, "bytes per written value; several (comma list) give one table each")
	fl.IntSliceVar(&f.clients, "clients", []int{bench.DefaultClients}, "concurrent clients; several (comma list) give one table each")
	fl.DurationVar(&f.duration, "duration", bench.DefaultDuration, "measured time per workload and target")
	fl.IntVar(&f.rounds, "rounds", 1, "run each workload this many times on every target, the targets taking turns (their order reversed every other round); report each target's median round and the median of the rounds' ratios, which hold on a machine whose speed drifts")
	fl.DurationVar(&f.warmup, "warmup", bench.DefaultWarmup, "unrecorded time before each measurement")
	fl.IntSliceVar(&f.nodes, "nodes", []int{3}, "nodes of the started KVStore cluster (without --endpoints), and members of each --compare system unless --peer-members is set; several (comma list) give one table each")
	fl.StringSliceVar(&f.targets, "targets", []string{targetInProcess}, `how KVStore runs (without --endpoints): "inprocess" (nodes in this process, called through their Go API) and "network" (a coordinator and --nodes `+"`kvstore node`"+` processes on loopback, called through the Go client over gRPC); both give one target each per --durability`)
	fl.BoolVar(&f.memory, "memory", false, "instead of the workloads, measure memory: load --keys keys into the network target (and --compare etcd, run as processes), read every key through every node, and print the largest node's resident memory and bytes per key")
	fl.StringSliceVar(&f.durability, "durability", []string{bench.Memory}, `durability of the in-process cluster: "memory", "fsync" (a data directory per node, fsync per group commit), "nofsync" (a data directory without fsync); several give one target each, side by side`)
	fl.StringVar(&f.backend, "backend", string(cluster.Etcd), `coordinator of the in-process cluster: "etcd" (embedded) or "zookeeper" (a local server from Debian's package)`)
	fl.StringSliceVar(&f.endpoints, "endpoints", nil, "benchmark the running cluster at these node addresses (host:port,...) through the Go client instead of an in-process cluster")
	fl.StringSliceVar(&f.compare, "compare", nil, `peer systems to run the same workloads against: "etcd", "zookeeper" (comma list)`)
	fl.IntVar(&f.peerMembers, "peer-members", 0, "servers of each --compare system (default: as many as --nodes)")
	fl.BoolVar(&f.peerFsync, "peer-fsync", true, "--compare systems fsync each write before acknowledging it (their default); false disables it")
	fl.BoolVar(&f.json, "json", false, "print the results as a JSON array instead of tables")
	fl.Uint64Var(&f.seed, "seed", 1, "seed of the clients' random operation and key sequences (the same for every target)")
	fl.StringVar(&f.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run to this file")
	fl.StringVar(&f.memProfile, "memprofile", "", "write a profile of the whole run's allocations to this file (`go tool pprof -sample_index=alloc_space`)")
	fl.StringVar(&f.trace, "trace", "", "write an execution trace of the whole run to this file (`go tool trace`; `go tool trace -pprof=sched` shows where goroutines waited to run)")
	f.tls.add(fl, "the benchmark's clients, with --endpoints (a client certificate of the nodes' CA)")
	fl.IntVar(&f.failover, "failover", 0, "instead of the workloads, measure failover this many times on an in-process 3-node cluster: leader killed to first acknowledged write, and a write while a holder of the key is rmi-down")
	documentEnv(cmd)
	return cmd
}

// The --targets values.
const (
	targetInProcess = "inprocess"
	targetNetwork   = "network"
)

// benchWorkloads turns the flags into the workloads to run, in order, for
// one cell of the matrix: clients clients writing values of valueSize
// bytes.
func benchWorkloads(f benchFlags, clients, valueSize int) []bench.Workload {
	var ws []bench.Workload
	for _, name := range f.workloads {
		ws = append(ws, bench.Workload{
			Name:         strings.ToUpper(strings.TrimSpace(name)),
			Distribution: f.distribution,
			Keys:         f.keys,
			ValueSize:    valueSize,
			Clients:      clients,
			Duration:     f.duration,
			Warmup:       f.warmup,
			Seed:         f.seed,
		})
	}
	return ws
}

// checkBenchFlags checks the flags that shape the workloads and the
// matrix, and normalises the --targets list.
func checkBenchFlags(f *benchFlags) error {
	if len(f.workloads) == 0 {
		return errors.New("--workload: none given")
	}
	for _, name := range f.workloads {
		name = strings.ToUpper(strings.TrimSpace(name))
		if _, err := bench.ReadProportion(name); err != nil {
			return fmt.Errorf("--workload %q: want A, B, C or W", name)
		}
	}
	positive := func(flag string, vs []int) error {
		if len(vs) == 0 {
			return fmt.Errorf("--%s: none given", flag)
		}
		for _, v := range vs {
			if v < 1 {
				return fmt.Errorf("--%s %d: want at least 1", flag, v)
			}
		}
		return nil
	}
	var targets []string
	for _, t := range f.targets {
		t = strings.ToLower(strings.TrimSpace(t))
		if t != targetInProcess && t != targetNetwork {
			return fmt.Errorf("--targets %q: want %s or %s", t, targetInProcess, targetNetwork)
		}
		if !slices.Contains(targets, t) {
			targets = append(targets, t)
		}
	}
	f.targets = targets
	switch {
	case f.distribution != bench.Uniform && f.distribution != bench.Zipf:
		return fmt.Errorf("--distribution %q: want %s or %s", f.distribution, bench.Uniform, bench.Zipf)
	case f.keys < 1:
		return fmt.Errorf("--keys %d: want at least 1", f.keys)
	case f.duration <= 0:
		return fmt.Errorf("--duration %v: want more than 0", f.duration)
	case f.rounds < 1:
		return fmt.Errorf("--rounds %d: want at least 1", f.rounds)
	case f.warmup < 0:
		return fmt.Errorf("--warmup %v: want 0 or more", f.warmup)
	case f.peerMembers < 0:
		return fmt.Errorf("--peer-members %d: want 0 (as many as --nodes) or more", f.peerMembers)
	case len(f.targets) == 0 && len(f.endpoints) == 0:
		return errors.New("--targets: none given")
	}
	for _, c := range []struct {
		flag string
		vs   []int
	}{{"value-size", f.valueSizes}, {"clients", f.clients}, {"nodes", f.nodes}} {
		if err := positive(c.flag, c.vs); err != nil {
			return err
		}
	}
	return nil
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
	if len(f.nodes) == 0 {
		f.nodes = []int{3}
	}
	if len(f.clients) == 0 {
		f.clients = []int{bench.DefaultClients}
	}
	if len(f.valueSizes) == 0 {
		f.valueSizes = []int{bench.DefaultValueSize}
	}
	if len(f.targets) == 0 {
		f.targets = []string{targetInProcess}
	}
	if f.distribution == "" {
		f.distribution = bench.Zipf
	}
	if f.keys == 0 {
		f.keys = bench.DefaultKeys
	}
	if f.duration == 0 {
		f.duration = bench.DefaultDuration
	}
	if err := checkBenchFlags(&f); err != nil {
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
		return &exitError{exitUsage, errors.New("--durability is for the started cluster; a running cluster's nodes have their own --data-dir")}
	}
	if len(f.endpoints) > 0 && len(f.nodes) > 1 {
		return &exitError{exitUsage, errors.New("--nodes is for the started cluster; a running cluster has the nodes it has")}
	}
	if f.backend != string(cluster.Etcd) && f.backend != string(cluster.ZooKeeper) {
		return &exitError{exitUsage, fmt.Errorf("--backend %q: want %s or %s", f.backend, cluster.Etcd, cluster.ZooKeeper)}
	}
	if _, on, err := f.tls.files(); err != nil {
		return err
	} else if on && len(f.endpoints) == 0 {
		return &exitError{exitUsage, errors.New("--cert, --key and --ca are for --endpoints (the started cluster needs none)")}
	}
	if f.memory {
		switch {
		case len(f.endpoints) > 0:
			return &exitError{exitUsage, errors.New("--memory measures the nodes it starts itself, not --endpoints")}
		case slices.Contains(peerNames, "zookeeper"):
			return &exitError{exitUsage, errors.New("--memory compares with etcd only (ZooKeeper's memory is the JVM's heap setting)")}
		case len(peerNames) > 0 && !f.peerFsync:
			return &exitError{exitUsage, errors.New("--memory runs etcd as processes, always with fsync: drop --peer-fsync=false")}
		}
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if f.failover > 0 {
		return runFailover(ctx, f, stdout, stderr)
	}

	for _, rec := range []struct {
		path  string
		start func(io.Writer) error
		stop  func()
	}{{f.cpuProfile, pprof.StartCPUProfile, pprof.StopCPUProfile}, {f.memProfile, startAllocs, stopAllocs}, {f.trace, trace.Start, trace.Stop}} {
		if rec.path == "" {
			continue
		}
		done, rerr := record(rec.path, rec.start, rec.stop)
		if rerr != nil {
			return rerr
		}
		defer func() {
			if derr := done(); err == nil {
				err = derr
			}
		}()
	}
	var binary string
	if f.memory || slices.Contains(f.targets, targetNetwork) {
		if binary, err = os.Executable(); err != nil {
			return fmt.Errorf("the network target runs this binary: %w", err)
		}
	}
	if f.memory {
		return runMemory(ctx, f, binary, peerNames, stdout, stderr)
	}

	matrix := len(f.nodes) > 1 || len(f.clients) > 1 || len(f.valueSizes) > 1
	var all []bench.Result
	for _, nodes := range f.nodes {
		res, err := benchNodes(ctx, f, nodes, binary, peerNames, matrix, stdout, stderr)
		all = append(all, res...)
		if err != nil {
			return err
		}
	}
	if f.json {
		return printJSON(stdout, all)
	}
	return nil
}

// startOurs starts KVStore's targets for one --nodes value: the running
// cluster at --endpoints, or one target per --targets and --durability.
func startOurs(ctx context.Context, f benchFlags, nodes int, binary string) ([]bench.Target, error) {
	if len(f.endpoints) > 0 {
		tlsConfig, err := f.tls.clientConfig()
		if err != nil {
			return nil, err
		}
		t, err := bench.NewEndpoints(f.endpoints, tlsConfig)
		if err != nil {
			return nil, err
		}
		return []bench.Target{t}, nil
	}
	var out []bench.Target
	for _, kind := range f.targets {
		for _, mode := range f.durability {
			startCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
			var t bench.Target
			var err error
			if kind == targetNetwork {
				t, err = bench.NewProcesses(startCtx, bench.ProcessOptions{Binary: binary, Nodes: nodes, Durability: mode})
			} else {
				t, err = bench.NewInProcess(startCtx, nodes, cluster.Backend(f.backend), mode)
			}
			cancel()
			if err != nil {
				for _, o := range out {
					_ = o.Close()
				}
				return nil, err
			}
			out = append(out, t)
		}
	}
	return out, nil
}

// peerMembers is the size of each --compare system for a cluster of nodes.
func (f benchFlags) peerMembersFor(nodes int) int {
	if f.peerMembers > 0 {
		return f.peerMembers
	}
	return nodes
}

// benchNodes runs every cell of the matrix with nodes nodes: it starts the
// targets once, runs the workloads for every --clients and --value-size,
// prints each cell's tables (unless --json) and returns the results.
func benchNodes(ctx context.Context, f benchFlags, nodes int, binary string, peerNames []string, matrix bool, stdout, stderr io.Writer) (all []bench.Result, err error) {
	ours, err := startOurs(ctx, f, nodes, binary)
	if err != nil {
		return nil, err
	}
	targets := ours
	defer func() {
		for _, t := range targets {
			if cerr := t.Close(); cerr != nil && err == nil {
				err = fmt.Errorf("close %s: %w", t.Name(), cerr)
			}
		}
	}()
	if len(peerNames) > 0 {
		peers, err := startPeers(ctx, peerNames, bench.PeerOptions{Members: f.peerMembersFor(nodes), Fsync: f.peerFsync})
		if err != nil {
			return nil, err
		}
		targets = append(targets, peers...)
	}
	isOurs := func(t bench.Target) bool { return slices.Contains(ours, t) }
	loaded := map[bench.Target]int{} // the value size each target holds
	for _, clients := range f.clients {
		for _, valueSize := range f.valueSizes {
			var oursRes, peerRes []bench.Result
			for _, w := range benchWorkloads(f, clients, valueSize) {
				rounds := map[bench.Target][]bench.Result{}
				for r := range f.rounds {
					order := slices.Clone(targets)
					if r%2 == 1 {
						// The targets take turns in both orders, so
						// that none always runs first or last.
						slices.Reverse(order)
					}
					if f.rounds > 1 {
						fmt.Fprintf(stderr, "workload %s: round %d of %d\n", w.Name, r+1, f.rounds)
					}
					for _, t := range order {
						// Every workload writes the same keys with
						// values of the same size: one load per target
						// and size.
						w.SkipLoad = loaded[t] == valueSize
						res, err := bench.Run(ctx, t, w, stderr)
						if err != nil {
							return all, err
						}
						loaded[t] = valueSize
						rounds[t] = append(rounds[t], res)
					}
				}
				for _, t := range targets {
					if res := bench.Median(rounds[t]); isOurs(t) {
						oursRes = append(oursRes, res)
					} else {
						peerRes = append(peerRes, res)
					}
				}
			}
			all = append(all, oursRes...)
			all = append(all, peerRes...)
			if f.json {
				continue
			}
			if matrix {
				fmt.Fprintf(stdout, "\n## %d nodes (peers: %d members), %d clients, %d-byte values\n\n", nodes, f.peerMembersFor(nodes), clients, valueSize)
			}
			if err := bench.WriteTable(stdout, append(append([]bench.Result(nil), oursRes...), peerRes...)); err != nil {
				return all, err
			}
			if len(peerRes) > 0 {
				fmt.Fprintln(stdout)
				if err := bench.WriteRatios(stdout, oursRes, peerRes); err != nil {
					return all, err
				}
			}
		}
	}
	return all, nil
}

// runMemory is --memory: for every --nodes and --value-size, the network
// target (one per --durability) and etcd (with --compare etcd, as
// processes) load --keys keys and read them all back; it prints the
// resident memory table.
func runMemory(ctx context.Context, f benchFlags, binary string, peerNames []string, stdout, stderr io.Writer) error {
	var all []bench.MemoryResult
	for _, nodes := range f.nodes {
		for _, valueSize := range f.valueSizes {
			w := benchWorkloads(f, f.clients[0], valueSize)[0]
			res, err := measureMemory(ctx, f, nodes, w, binary, peerNames, stderr)
			all = append(all, res...)
			if err != nil {
				return err
			}
		}
	}
	if f.json {
		return printJSON(stdout, all)
	}
	return bench.WriteMemory(stdout, all)
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

// measureMemory is one --memory cell: it starts the targets, measures
// each and stops it.
func measureMemory(ctx context.Context, f benchFlags, nodes int, w bench.Workload, binary string, peerNames []string, stderr io.Writer) (all []bench.MemoryResult, err error) {
	var targets, extra []bench.Target
	defer func() {
		for _, t := range append(targets, extra...) {
			if cerr := t.Close(); cerr != nil && err == nil {
				err = cerr
			}
		}
	}()
	for _, mode := range f.durability {
		startCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
		t, err := bench.NewProcesses(startCtx, bench.ProcessOptions{Binary: binary, Nodes: nodes, Durability: mode})
		cancel()
		if err != nil {
			return nil, err
		}
		targets = append(targets, t)
	}
	if slices.Contains(peerNames, "etcd") {
		peers, err := startPeers(ctx, []string{"etcd"}, bench.PeerOptions{Members: f.peerMembersFor(nodes), Fsync: true, Binary: binary})
		if err != nil {
			return nil, err
		}
		// One etcd target is enough: both share the members.
		targets, extra = append(targets, peers[0]), peers[1:]
	}
	for _, t := range targets {
		res, err := bench.MeasureMemory(ctx, t, w, stderr)
		if err != nil {
			return all, err
		}
		all = append(all, res)
	}
	return all, nil
}

// allocsTo is where stopAllocs writes the allocation profile that
// startAllocs asked for (one --memprofile a process).
var allocsTo io.Writer

// startAllocs and stopAllocs record the allocation profile for --memprofile.
// Go samples allocations from the process's start, so the profile covers
// everything up to the end of the run (starting the clusters and loading
// the keys too); its alloc_space is what the process made the collector
// chase.
func startAllocs(w io.Writer) error {
	allocsTo = w
	return nil
}

func stopAllocs() {
	runtime.GC() // the profile is as of the last collection
	if err := pprof.Lookup("allocs").WriteTo(allocsTo, 0); err != nil {
		fmt.Fprintf(os.Stderr, "kvstore bench: writing the allocation profile: %v\n", err)
	}
}

// record starts a recording of the run (a CPU profile, an execution
// trace, the allocations) into a new file at path; done stops it and
// closes the file.
func record(path string, start func(io.Writer) error, stop func()) (done func() error, err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := start(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() error {
		stop()
		return f.Close()
	}, nil
}

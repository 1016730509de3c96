package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kvstore/kvstore/bench"
)

// TestBenchCommand runs `kvstore bench` on a short read-only workload
// against its in-process cluster and checks the JSON it prints.
func TestBenchCommand(t *testing.T) {
	bin := buildBinary(t)
	var results []bench.Result
	dir := t.TempDir()
	cpu, mem, tr := filepath.Join(dir, "cpu.pprof"), filepath.Join(dir, "mem.pprof"), filepath.Join(dir, "run.trace")
	stderr := benchJSON(t, bin, &results, "--workload", "C", "--duration", "1s", "--warmup", "200ms", "--clients", "4", "--keys", "100", "--cpuprofile", cpu, "--memprofile", mem, "--trace", tr)
	for _, f := range []struct{ path, head string }{{cpu, "\x1f\x8b"}, {mem, "\x1f\x8b"}, {tr, "go 1."}} {
		// A profile is gzipped; a trace starts with its format's version.
		b, err := os.ReadFile(f.path)
		if err != nil || !bytes.HasPrefix(b, []byte(f.head)) {
			t.Errorf("%s: %d bytes, err %v: not a profile or trace", f.path, len(b), err)
		}
	}
	if len(results) != 1 {
		t.Fatalf("%d results, want 1: %+v", len(results), results)
	}
	r := results[0]
	if r.Ops == 0 || r.Errors != 0 || r.Workload != "C" || r.Clients != 4 || r.Keys != 100 || r.Distribution != "zipfian" || !strings.HasPrefix(r.Target, "kvstore") {
		t.Fatalf("result %+v", r)
	}
	if !strings.Contains(stderr, "loaded 100 keys") {
		t.Errorf("no load progress on stderr:\n%s", stderr)
	}
}

// benchJSON runs `kvstore bench args... --json` and decodes its output
// into out.
func benchJSON(t *testing.T, bin string, out any, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, append(append([]string{"bench"}, args...), "--json")...)
	cmd.Env = coordEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("kvstore bench %v: %v\nstdout:\n%s\nstderr:\n%s", args, err, stdout.String(), stderr.String())
		}
	case <-time.After(3 * time.Minute):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("kvstore bench %v did not exit\nstdout:\n%s\nstderr:\n%s", args, stdout.String(), stderr.String())
	}
	if err := json.Unmarshal(stdout.Bytes(), out); err != nil {
		t.Fatalf("kvstore bench %v: stdout is not the JSON wanted: %v\n%s", args, err, stdout.String())
	}
	return stderr.String()
}

// TestBenchNetworkTarget: --targets network starts a coordinator and node
// processes with the asked durability and drives them over gRPC; the
// result says what the nodes reported of themselves.
func TestBenchNetworkTarget(t *testing.T) {
	bin := buildBinary(t)
	var results []bench.Result
	benchJSON(t, bin, &results, "--targets", "network", "--durability", "fsync", "--workload", "W,C", "--duration", "1s", "--warmup", "200ms", "--clients", "4", "--keys", "50")
	if len(results) != 2 {
		t.Fatalf("%d results, want 2: %+v", len(results), results)
	}
	for _, r := range results {
		if r.Target != "kvstore (network, fsync)" || r.Ops == 0 || r.Errors != 0 || r.Durability != "fsync, 3 replicas (majority acknowledged)" {
			t.Fatalf("result %+v", r)
		}
	}
	// The nodes' cache counters, from their Status, give C a hit ratio.
	if c := results[1]; c.CacheHitRatio == nil || c.CacheHits+c.CacheMisses == 0 {
		t.Fatalf("C: hit ratio %v from %d hits and %d misses for %d reads", c.CacheHitRatio, c.CacheHits, c.CacheMisses, c.Reads)
	}
}

// TestBenchRounds: --rounds runs every workload that many times on every
// target and reports the median round with every round's ops/s.
func TestBenchRounds(t *testing.T) {
	bin := buildBinary(t)
	var results []bench.Result
	stderr := benchJSON(t, bin, &results, "--rounds", "3", "--workload", "C", "--duration", "300ms", "--warmup", "0s", "--clients", "2", "--keys", "20")
	if len(results) != 1 {
		t.Fatalf("%d results, want 1: %+v", len(results), results)
	}
	r := results[0]
	if len(r.RoundOpsPerSec) != 3 || r.Ops == 0 || r.Errors != 0 {
		t.Fatalf("result %+v, want 3 rounds", r)
	}
	if !slices.Contains(r.RoundOpsPerSec, r.OpsPerSec) {
		t.Errorf("ops/s %v is none of the rounds' %v", r.OpsPerSec, r.RoundOpsPerSec)
	}
	if !strings.Contains(stderr, "round 3 of 3") {
		t.Errorf("no round progress on stderr:\n%s", stderr)
	}
}

// TestBenchMatrix: lists of --nodes, --clients and --value-size run every
// combination, each against a cluster of that many nodes.
func TestBenchMatrix(t *testing.T) {
	bin := buildBinary(t)
	var results []bench.Result
	benchJSON(t, bin, &results, "--nodes", "1,3", "--clients", "2,5", "--value-size", "16,64", "--workload", "C", "--duration", "300ms", "--warmup", "0s", "--keys", "20")
	type cell struct{ clients, size int }
	want := map[string][]cell{}
	for _, d := range []string{"memory, 1 replicas (majority acknowledged)", "memory, 3 replicas (majority acknowledged)"} {
		want[d] = []cell{{2, 16}, {2, 64}, {5, 16}, {5, 64}}
	}
	got := map[string][]cell{}
	for _, r := range results {
		if r.Ops == 0 || r.Errors != 0 {
			t.Errorf("result %+v", r)
		}
		got[r.Durability] = append(got[r.Durability], cell{r.Clients, r.ValueSize})
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("cells %v, want %v", got, want)
	}
}

// TestBenchMemory: --memory loads the keys into node processes and etcd
// processes, reads them all back, and reports each one's resident memory
// growing with the data.
func TestBenchMemory(t *testing.T) {
	bin := buildBinary(t)
	var results []bench.MemoryResult
	stderr := benchJSON(t, bin, &results, "--memory", "--keys", "3000", "--value-size", "1024", "--compare", "etcd", "--clients", "8")
	if len(results) != 2 || results[0].Target != "kvstore (network)" || !strings.HasPrefix(results[1].Target, "etcd") {
		t.Fatalf("results %+v, want kvstore (network) and etcd", results)
	}
	for _, r := range results {
		// 3,000 values of 1 KiB: about 3 MiB of data on every server.
		if r.Servers != 3 || r.Keys != 3000 || r.Empty == 0 || r.Loaded < r.Empty+2<<20 || r.Read == 0 || r.PerKey() < 512 {
			t.Errorf("%+v (%.0f bytes/key)", r, r.PerKey())
		}
	}
	for i := range 3 {
		if !strings.Contains(stderr, fmt.Sprintf("kvstore (network): server %d read every key", i)) {
			t.Errorf("no read pass through node %d:\n%s", i, stderr)
		}
	}
}

// TestBenchFlags checks the command line's validation (exit code 2) and the
// environment binding, without running anything.
func TestBenchFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  []string
		want string
	}{
		{[]string{"--workload", "A,X"}, nil, `--workload "X"`},
		{[]string{"--distribution", "latest"}, nil, "--distribution"},
		{[]string{"--clients", "0"}, nil, "--clients"},
		{[]string{"--rounds", "0"}, nil, "--rounds 0"},
		{[]string{"--nodes", "3,0"}, nil, "--nodes 0"},
		{[]string{"--value-size", "x"}, nil, "--value-size"},
		{[]string{"--targets", "cloud"}, nil, `--targets "cloud"`},
		{[]string{"--memory", "--endpoints", "127.0.0.1:1"}, nil, "--memory"},
		{[]string{"--memory", "--compare", "zookeeper"}, nil, "etcd only"},
		{[]string{"--endpoints", "127.0.0.1:1", "--nodes", "3,5"}, nil, "--nodes is for the started cluster"},
		{[]string{"--compare", "consul"}, nil, "--compare"},
		{nil, []string{"KVSTORE_KEYS=many"}, "KVSTORE_KEYS"},
		{nil, []string{"KVSTORE_WORKLOAD=Q"}, `--workload "Q"`},
	} {
		t.Run(strings.Join(append(tc.args, tc.env...), " "), func(t *testing.T) {
			for _, kv := range tc.env {
				k, v, _ := strings.Cut(kv, "=")
				t.Setenv(k, v)
			}
			cmd := newRootCmd()
			var out, errOut bytes.Buffer
			cmd.SetOut(&out)
			cmd.SetErr(&errOut)
			cmd.SetArgs(append([]string{"bench"}, tc.args...))
			err := cmd.Execute()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one naming %s", err, tc.want)
			}
		})
	}
	if code := exitCode(runBench(t.Context(), benchFlags{workloads: []string{"Z"}}, nil, nil)); code != exitUsage {
		t.Errorf("bad workload: exit code %d, want %d", code, exitUsage)
	}
}

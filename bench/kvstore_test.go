package bench

import (
	"bytes"
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/kvstore/kvstore/client"
	"github.com/kvstore/kvstore/cluster"
)

// TestKVStoreTargets runs short workloads against an in-process 3-node
// cluster, through the nodes' Go API and through the Go client.
func TestKVStoreTargets(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tgt, err := NewInProcess(ctx, 3, "", "")
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			_ = tgt.Close()
		}
	}()
	if want := "memory, 3 replicas (majority acknowledged)"; tgt.Durability() != want {
		t.Errorf("durability %q, want %q", tgt.Durability(), want)
	}
	w := Workload{Name: "C", Distribution: Zipf, Keys: 100, Clients: 8, Duration: time.Second, Warmup: 200 * time.Millisecond, Seed: 1}
	var progress bytes.Buffer
	res, err := Run(ctx, tgt, w, &progress)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("C in-process: %.0f ops/s, p50 %v p99 %v, hit ratio %.3f (hits %d, misses %d)", res.OpsPerSec, res.Latency.P50, res.Latency.P99, deref(res.CacheHitRatio), res.CacheHits, res.CacheMisses)
	if res.Ops == 0 || res.Errors != 0 || res.Updates != 0 {
		t.Fatalf("C: ops %d, updates %d, errors %d (first: %s)", res.Ops, res.Updates, res.Errors, res.FirstError)
	}
	if res.CacheHitRatio == nil || *res.CacheHitRatio <= 0 {
		t.Fatalf("C: hit ratio %v (hits %d, misses %d), want > 0", res.CacheHitRatio, res.CacheHits, res.CacheMisses)
	}

	w.Name, w.Duration, w.Warmup, w.SkipLoad = "A", 500*time.Millisecond, 100*time.Millisecond, true
	res, err = Run(ctx, tgt, w, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("A in-process: %.0f ops/s, read p50 %v, update p50 %v", res.OpsPerSec, res.ReadLatency.P50, res.UpdateLatency.P50)
	if res.Reads == 0 || res.Updates == 0 || res.Errors != 0 {
		t.Fatalf("A: reads %d, updates %d, errors %d (first: %s)", res.Reads, res.Updates, res.Errors, res.FirstError)
	}

	// The same cluster through the Go client.
	c := tgt.(*inProcess).c
	var eps []string
	for _, n := range c.List() {
		eps = append(eps, n.Addr)
	}
	remote, err := NewEndpoints(eps, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := "memory, 3 replicas (majority acknowledged)"; remote.Durability() != want {
		t.Errorf("endpoints durability %q, want %q", remote.Durability(), want)
	}
	w.Name, w.Clients, w.Duration = "B", 6, 500*time.Millisecond
	res, err = Run(ctx, remote, w, nil)
	if cerr := remote.Close(); cerr != nil {
		t.Errorf("close endpoints: %v", cerr)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("B endpoints: %.0f ops/s, read p50 %v, update p50 %v", res.OpsPerSec, res.ReadLatency.P50, res.UpdateLatency.P50)
	// The hit ratio comes from the nodes' Status.
	if res.Ops == 0 || res.Errors != 0 || res.CacheHitRatio == nil || res.CacheHits+res.CacheMisses == 0 {
		t.Fatalf("B through the client: ops %d, errors %d (first: %s), hits %d, misses %d", res.Ops, res.Errors, res.FirstError, res.CacheHits, res.CacheMisses)
	}

	closed = true
	if err := tgt.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestNewInProcessBadBackend(t *testing.T) {
	if _, err := NewInProcess(context.Background(), 1, cluster.Backend("consul"), ""); err == nil {
		t.Fatal("an unknown backend was accepted")
	}
}

func deref(f *float64) float64 {
	if f == nil {
		return -1
	}
	return *f
}

// TestEndpointsLabelFromStatus: `kvstore bench --endpoints` labels a
// running cluster from what its nodes report in Status, not as memory
// (FINDINGS): a cluster with data directories and fsync is "fsync", one
// without fsync says so, each with its number of voters.
func TestEndpointsLabelFromStatus(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	for mode, want := range map[string]string{
		Fsync:   "fsync, 3 replicas (majority acknowledged)",
		NoFsync: "disk without fsync, 3 replicas (majority acknowledged)",
	} {
		t.Run(mode, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			tgt, err := NewInProcess(ctx, 3, "", mode)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = tgt.Close() }()
			var eps []string
			for _, n := range tgt.(*inProcess).c.List() {
				eps = append(eps, n.Addr)
			}
			remote, err := NewEndpoints(eps, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = remote.Close() }()
			if got := remote.Durability(); got != want {
				t.Errorf("endpoints of a %s cluster: durability %q, want %q", mode, got, want)
			}
		})
	}
}

func TestDescribeNodes(t *testing.T) {
	voters := []string{"n0", "n1", "n2"}
	fsync, disk, mem := &client.Storage{DataDir: true, Fsync: true}, &client.Storage{DataDir: true}, &client.Storage{}
	for _, tc := range []struct {
		sts  []client.Status
		want string
	}{
		{[]client.Status{{ID: "n0", Voters: voters, Storage: fsync}, {ID: "n1", Voters: voters, Storage: fsync}, {ID: "n2", Voters: voters, Storage: fsync}},
			"fsync, 3 replicas (majority acknowledged)"},
		{[]client.Status{{ID: "n0", Voters: voters, Storage: mem}, {ID: "n0", Voters: voters, Storage: mem}},
			"memory (1 of 3 voters reported), 3 replicas (majority acknowledged)"},
		{[]client.Status{{ID: "n0", Voters: voters, Storage: fsync}, {ID: "n1", Voters: voters, Storage: disk}, {ID: "n2", Voters: voters}},
			"mixed storage (n0 fsync, n1 disk without fsync, n2 storage unknown), 3 replicas (majority acknowledged)"},
		{[]client.Status{{ID: "n0", Storage: mem}},
			"memory, majority of replicas acknowledged"},
	} {
		if got := describeNodes(tc.sts); got != tc.want {
			t.Errorf("describeNodes(%+v) = %q, want %q", tc.sts, got, tc.want)
		}
	}
}

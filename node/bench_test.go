package node_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kvstore/kvstore/cluster"
	"github.com/kvstore/kvstore/node"
	"github.com/kvstore/kvstore/rpc/kvpb"
)

// The hot paths, on a real in-process cluster (embedded etcd, gRPC on
// loopback). Run with:
//
//	go test ./node -run '^$' -bench . -benchmem
//
// Each benchmark starts its own cluster; the setup is not timed.

func benchCluster(b *testing.B, n int) *cluster.Cluster {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := cluster.New(ctx, cluster.Options{Nodes: n})
	if err != nil {
		b.Fatalf("start cluster: %v", err)
	}
	b.Cleanup(func() { c.Close() })
	if err := c.WaitHealthy(ctx); err != nil {
		b.Fatal(err)
	}
	return c
}

// benchRoles returns the leader and the followers of c.
func benchRoles(b *testing.B, c *cluster.Cluster) (*node.Node, []*node.Node) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ld, _, err := c.Leader(ctx)
	if err != nil {
		b.Fatal(err)
	}
	var leader *node.Node
	var followers []*node.Node
	for i := 0; i < c.Size(); i++ {
		nd, err := c.Node(i)
		if err != nil {
			b.Fatal(err)
		}
		if i == ld {
			leader = nd
		} else {
			followers = append(followers, nd)
		}
	}
	return leader, followers
}

var value256 = strings.Repeat("v", 256)

// BenchmarkCachedRead reads a key a follower holds in its cache: answered
// from memory, no network round trip. It must not allocate.
func BenchmarkCachedRead(b *testing.B) {
	c := benchCluster(b, 3)
	leader, followers := benchRoles(b, c)
	ctx := context.Background()
	if err := leader.Set(ctx, "k", value256); err != nil {
		b.Fatal(err)
	}
	f := followers[0]
	if _, _, err := f.Get(ctx, "k"); err != nil { // now cached
		b.Fatal(err)
	}
	before := f.Stats()
	start := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := f.Get(ctx, "k"); err != nil {
			b.Fatal(err)
		}
	}
	// The copy is fetched again once per lease (2 s by default).
	after := f.Stats()
	if misses, most := after.CacheMisses-before.CacheMisses, uint64(time.Since(start)/(2*time.Second))+1; misses > most {
		b.Fatalf("%d misses in %v of cached reads; want at most one per lease (%d)", misses, time.Since(start), most)
	}
}

// BenchmarkCachedReadParallel is BenchmarkCachedRead from GOMAXPROCS
// goroutines on one follower.
func BenchmarkCachedReadParallel(b *testing.B) {
	c := benchCluster(b, 3)
	leader, followers := benchRoles(b, c)
	ctx := context.Background()
	if err := leader.Set(ctx, "k", value256); err != nil {
		b.Fatal(err)
	}
	f := followers[0]
	if _, _, err := f.Get(ctx, "k"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, _, err := f.Get(ctx, "k"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkCacheMissToLeader reads keys a follower does not hold: each read
// is one fetch from the leader (which also grants the lease).
func BenchmarkCacheMissToLeader(b *testing.B) {
	c := benchCluster(b, 3)
	_, followers := benchRoles(b, c)
	ctx := context.Background()
	f := followers[0]
	misses := f.Stats().CacheMisses
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, _, err := f.Get(ctx, fmt.Sprint("miss-", i)); err != nil {
			b.Fatal(err)
		}
		i++
	}
	if got := f.Stats().CacheMisses - misses; got < uint64(b.N) {
		b.Fatalf("%d of %d reads went to the leader", got, b.N)
	}
}

// BenchmarkWriteTwoFollowers writes through the leader of a 3-node
// cluster, one write at a time: append, replicate to both followers, commit
// on a majority.
func BenchmarkWriteTwoFollowers(b *testing.B) {
	c := benchCluster(b, 3)
	leader, _ := benchRoles(b, c)
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := leader.Set(ctx, fmt.Sprint("w", i%1024), value256); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkInvalidationFanout10 writes a key that 10 followers hold in
// their caches: the write is acknowledged only once every holder dropped
// its copy. Re-caching the key on the 10 holders is not timed.
func BenchmarkInvalidationFanout10(b *testing.B) {
	c := benchCluster(b, 11)
	leader, followers := benchRoles(b, c)
	ctx := context.Background()
	if err := leader.Set(ctx, "hot", value256); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		for _, f := range followers {
			if _, _, err := f.Get(ctx, "hot"); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		if err := leader.Set(ctx, "hot", value256); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBatchOfCachedReads sends a follower, over gRPC, batches of 16
// reads of keys it holds in its cache, as the Go client does under load:
// ns/op and allocs/op are per batch.
func BenchmarkBatchOfCachedReads(b *testing.B) {
	c := benchCluster(b, 3)
	leader, followers := benchRoles(b, c)
	ctx := context.Background()
	f := followers[0]
	req := &kvpb.BatchRequest{}
	for i := range 16 {
		k := fmt.Sprintf("k%d", i)
		if err := leader.Set(ctx, k, value256); err != nil {
			b.Fatal(err)
		}
		if _, _, err := f.Get(ctx, k); err != nil { // now cached
			b.Fatal(err)
		}
		req.Ops = append(req.Ops, &kvpb.BatchOp{Op: &kvpb.BatchOp_Get{Get: &kvpb.GetRequest{Key: k}}})
	}
	cc, err := grpc.NewClient("passthrough:///"+f.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Close()
	kv := kvpb.NewKVClient(cc)
	before := f.Stats()
	b.ReportAllocs()
	for b.Loop() {
		resp, err := kv.Batch(ctx, req)
		if err != nil {
			b.Fatal(err)
		}
		if r := resp.Results[15].GetGet(); r.GetValue() != value256 {
			b.Fatalf("read %q", r.GetValue())
		}
	}
	after := f.Stats()
	b.ReportMetric(float64(after.CacheHits-before.CacheHits)/float64(16*b.N), "hits/read")
}

// BenchmarkWriteOfAHeldKey writes, at the leader, keys that both
// followers hold a cached copy of, on nodes with data directories (fsync
// on): each write waits until a majority has it on disk and both holders
// dropped their copies. early: the holders say so as soon as they applied
// the write (an early answer); no-early (Faults.NoEarlyAnswers): only once
// it is on their disks, so each write waits for the slower follower's
// disk. even: the disks as they are; slow-follower: one follower's disk
// takes 20 ms more per write (as a failing or overloaded disk would).
// write-ms is the write alone; the holders read each key again (untimed)
// before it is written.
func BenchmarkWriteOfAHeldKey(b *testing.B) {
	for _, slow := range []bool{false, true} {
		for _, noEarly := range []bool{false, true} {
			name := map[bool]string{false: "even", true: "slow-follower"}[slow] + "/" + map[bool]string{false: "early", true: "no-early"}[noEarly]
			b.Run(name, func(b *testing.B) { benchWriteOfAHeldKey(b, noEarly, slow) })
		}
	}
}

func benchWriteOfAHeldKey(b *testing.B, noEarly, slow bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := cluster.New(ctx, cluster.Options{Nodes: 3, DataDir: b.TempDir(), DirectLinks: true, Node: func(cfg *node.Config) {
		cfg.Faults.NoEarlyAnswers = noEarly
	}})
	if err != nil {
		b.Fatalf("start cluster: %v", err)
	}
	b.Cleanup(func() { c.Close() })
	if err := c.WaitHealthy(ctx); err != nil {
		b.Fatal(err)
	}
	leader, followers := benchRoles(b, c)
	if slow {
		followers[0].SetDiskDelay(20 * time.Millisecond)
	}
	bg := context.Background()
	keys := make([]string, 64)
	for i := range keys {
		keys[i] = fmt.Sprint("k", i)
		if err := leader.Set(bg, keys[i], value256); err != nil {
			b.Fatal(err)
		}
	}
	var writes time.Duration
	b.ResetTimer()
	for i := range b.N {
		k := keys[i%len(keys)]
		b.StopTimer()
		for _, f := range followers {
			if _, _, err := f.Get(bg, k); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		start := time.Now()
		if err := leader.Set(bg, k, value256); err != nil {
			b.Fatal(err)
		}
		writes += time.Since(start)
	}
	b.ReportMetric(float64(writes.Microseconds())/1e3/float64(b.N), "write-ms")
}

// BenchmarkConcurrentWrites is 64 writers at once through the leader of a
// 3-node cluster whose nodes fsync (as workload W of kvstore bench, in
// process), with 1, 2 and 4 Appends in flight to each follower
// (docs/design.md, Replication: Pipelining). loopback: the nodes dial each
// other directly; link-1ms: through the cluster's proxies, each adding 1
// ms of latency each way (as between zones of one region).
func BenchmarkConcurrentWrites(b *testing.B) {
	for _, delay := range []time.Duration{0, time.Millisecond} {
		for _, inFlight := range []int{1, 2, 4} {
			link := "loopback"
			if delay > 0 {
				link = fmt.Sprintf("link-%v", delay)
			}
			b.Run(fmt.Sprintf("%s/appends-in-flight=%d", link, inFlight), func(b *testing.B) {
				benchConcurrentWrites(b, delay, inFlight)
			})
		}
	}
}

func benchConcurrentWrites(b *testing.B, delay time.Duration, inFlight int) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := cluster.New(ctx, cluster.Options{Nodes: 3, DataDir: b.TempDir(), DirectLinks: delay == 0, Node: func(cfg *node.Config) {
		cfg.AppendsInFlight = inFlight
	}})
	if err != nil {
		b.Fatalf("start cluster: %v", err)
	}
	b.Cleanup(func() { c.Close() })
	if err := c.WaitHealthy(ctx); err != nil {
		b.Fatal(err)
	}
	c.SetLinkDelay(delay)
	leader, _ := benchRoles(b, c)
	var next atomic.Int64
	b.SetParallelism(64 / runtime.GOMAXPROCS(0))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := leader.Set(context.Background(), fmt.Sprint("w", next.Add(1)%10000), value256); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

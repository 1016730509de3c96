package client_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvstore/kvstore/client"
	"github.com/kvstore/kvstore/cluster"
)

// BenchmarkStream is 64 goroutines sharing one Go client, each operation
// on the client's streams to one node of a 3-node cluster in this process
// whose nodes fsync: write (to the leader, as workload W of kvstore bench
// through the network) and read (cached reads of 1,000 keys through a
// follower, as C). allocs/op counts the client's and the nodes'.
func BenchmarkStream(b *testing.B) {
	for _, kind := range []string{"write", "read"} {
		b.Run(kind, func(b *testing.B) { benchStream(b, kind) })
	}
}

func benchStream(b *testing.B, kind string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := cluster.New(ctx, cluster.Options{Nodes: 3, DataDir: b.TempDir(), DirectLinks: true})
	if err != nil {
		b.Fatalf("start cluster: %v", err)
	}
	b.Cleanup(func() { c.Close() })
	if err := c.WaitHealthy(ctx); err != nil {
		b.Fatal(err)
	}
	ld, _, err := c.Leader(ctx)
	if err != nil {
		b.Fatal(err)
	}
	target := ld
	if kind == "read" {
		target = (ld + 1) % 3
	}
	nd, err := c.Node(target)
	if err != nil {
		b.Fatal(err)
	}
	cl, err := client.New(client.Config{Endpoints: []string{nd.Addr()}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cl.Close() })
	const keys = 1000
	value := strings.Repeat("v", 256)
	for i := range keys {
		if err := cl.Put(ctx, fmt.Sprint("k", i), value); err != nil {
			b.Fatal(err)
		}
		if _, _, err := cl.Get(ctx, fmt.Sprint("k", i)); err != nil {
			b.Fatal(err)
		}
	}
	var next atomic.Int64
	b.SetParallelism(64 / runtime.GOMAXPROCS(0))
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			k := fmt.Sprint("k", next.Add(1)%keys)
			var err error
			if kind == "write" {
				err = cl.Put(context.Background(), k, value)
			} else {
				_, _, err = cl.Get(context.Background(), k)
			}
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
}

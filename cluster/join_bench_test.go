package cluster_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvstore/kvstore/node"
)

// BenchmarkJoin measures how long a node takes to join a store (receive
// the leader's snapshot and serve), against the time to copy the same
// bytes over a loopback TCP connection (to a receiver that discards them,
// and to one that keeps them in fresh memory), and the process's heap
// during the join. The store is KVSTORE_JOIN_KEYS keys (default 1,000,000) of
// KVSTORE_JOIN_VALUE bytes (default 2048): 2 GB by default. Run with
//
//	KVSTORE_JOIN_KEYS=100000 go test ./cluster -run '^$' -bench Join -benchtime 1x
//
// The leader and the new node share the process: the heap's growth during
// the join is the new node's copy plus what the leader adds; a leader that
// copied its state to send it would double it.
func BenchmarkJoin(b *testing.B) {
	keys := envInt(b, "KVSTORE_JOIN_KEYS", 1_000_000)
	size := envInt(b, "KVSTORE_JOIN_VALUE", 2048)
	for range b.N {
		runJoin(b, keys, size)
	}
}

func envInt(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}

func runJoin(b *testing.B, keys, size int) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	b.StopTimer()
	c := joinCluster(b, node.DefaultSnapshotChunkBytes, &chunkFaults{}, false)
	leader, err := c.Node(0)
	if err != nil {
		b.Fatal(err)
	}
	tail := strings.Repeat("v", size-16)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < keys; i += 8 {
				if err := leader.Set(ctx, fmt.Sprintf("key-%09d", i), fmt.Sprintf("%016d", i)+tail); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	bytes := int64(keys) * int64(size+13)
	copyTime := loopbackCopy(b, bytes, false)
	keptTime := loopbackCopy(b, bytes, true)
	waitTrimmed(b, c, 2)
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	before := ms.HeapInuse
	peak := sampleHeap()
	b.StartTimer()
	start := time.Now()
	n, err := c.NewNode(ctx)
	if err != nil {
		b.Fatal(err)
	}
	nd, _ := c.Node(n)
	last := fmt.Sprintf("key-%09d", keys-1)
	for {
		if _, ok, _ := nd.LocalItem(last); ok && nd.Applied() == leader.Applied() {
			break
		}
		if ctx.Err() != nil {
			b.Fatalf("node %d never caught up", n)
		}
		time.Sleep(time.Millisecond)
	}
	join := time.Since(start)
	b.StopTimer()
	max := peak()
	b.ReportMetric(join.Seconds(), "join-s")
	b.ReportMetric(copyTime.Seconds(), "copy-s")
	b.ReportMetric(join.Seconds()/copyTime.Seconds(), "join/copy")
	b.ReportMetric(keptTime.Seconds(), "copy-kept-s")
	b.ReportMetric(join.Seconds()/keptTime.Seconds(), "join/copy-kept")
	b.ReportMetric(float64(before)/(1<<20), "heap-before-MiB")
	b.ReportMetric(float64(max)/(1<<20), "heap-peak-MiB")
	b.Logf("%d keys of %d bytes (%d MiB): join %v, loopback copy %v (%.2fx), loopback copy into kept memory %v (%.2fx); heap %d MiB before the join, peak %d MiB during it (%d chunks)",
		keys, size, bytes>>20, join, copyTime, join.Seconds()/copyTime.Seconds(), keptTime, join.Seconds()/keptTime.Seconds(), before>>20, max>>20, nd.Stats().SnapshotChunksTaken)
}

// sampleHeap samples the heap in use every 10 ms until the returned
// function is called, which returns the peak.
func sampleHeap() func() uint64 {
	stop := make(chan struct{})
	done := make(chan uint64)
	go func() {
		var peak uint64
		var ms runtime.MemStats
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
			select {
			case <-stop:
				done <- peak
				return
			case <-t.C:
			}
		}
	}()
	return func() uint64 { close(stop); return <-done }
}

// loopbackCopy times sending n bytes over a loopback TCP connection. With
// keep the receiver keeps every byte, in memory it allocates as they
// arrive (as a joining node must: the first touch of each new page costs
// a page fault, which on a virtual machine is most of a copy's time);
// without it, it reads them into one buffer, over and over.
func loopbackCopy(b *testing.B, n int64, keep bool) time.Duration {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer lis.Close()
	got := make(chan int64, 1)
	go func() {
		conn, err := lis.Accept()
		if err != nil {
			got <- 0
			return
		}
		defer conn.Close()
		if !keep {
			k, _ := io.Copy(io.Discard, conn)
			got <- k
			return
		}
		var kept [][]byte
		var k int64
		for {
			buf := make([]byte, 4<<20)
			m, err := io.ReadFull(conn, buf)
			kept = append(kept, buf[:m])
			k += int64(m)
			if err != nil {
				break
			}
		}
		runtime.KeepAlive(kept)
		got <- k
	}()
	conn, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	start := time.Now()
	for sent := int64(0); sent < n; {
		k, err := conn.Write(buf[:min(int64(len(buf)), n-sent)])
		if err != nil {
			b.Fatal(err)
		}
		sent += int64(k)
	}
	conn.Close()
	if k := <-got; k != n {
		b.Fatalf("copied %d bytes of %d", k, n)
	}
	return time.Since(start)
}

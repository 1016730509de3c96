package bench

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
)

// MemoryReporter is implemented by targets whose servers run as processes
// of their own: the network KVStore target and etcd started with
// PeerOptions.Binary.
type MemoryReporter interface {
	// NodeRSS is each server process's resident set size, in bytes.
	NodeRSS() ([]uint64, error)
}

// MultiServer is implemented by targets that route client i to server i % n:
// a read pass through clients 0..n-1 reads from every server.
type MultiServer interface {
	Servers() int
}

// MemoryResult is what MeasureMemory saw of one target, per server
// process: the largest resident set of any server before the load, after
// it, and after every server read every key (which fills KVStore's
// caches).
type MemoryResult struct {
	Target    string `json:"target"`
	Keys      int    `json:"keys"`
	ValueSize int    `json:"value_size"`
	Servers   int    `json:"servers"`
	Empty     uint64 `json:"rss_empty"`
	Loaded    uint64 `json:"rss_loaded"`
	Read      uint64 `json:"rss_read"`
}

// PerKey is what the keys cost the largest server: its resident set
// after the read pass less its resident set when empty, divided by the
// number of keys.
func (m MemoryResult) PerKey() float64 {
	if m.Read < m.Empty {
		return 0
	}
	return float64(m.Read-m.Empty) / float64(m.Keys)
}

// MeasureMemory loads w's keys into target (which must implement
// MemoryReporter), then reads every key through every server, and reports
// the servers' resident memory at each step.
func MeasureMemory(ctx context.Context, target Target, w Workload, progress io.Writer) (MemoryResult, error) {
	mr, ok := target.(MemoryReporter)
	if !ok {
		return MemoryResult{}, fmt.Errorf("bench: %s: no memory to report (its servers run in this process)", target.Name())
	}
	w, err := w.normalize()
	if err != nil {
		return MemoryResult{}, err
	}
	res := MemoryResult{Target: target.Name(), Keys: w.Keys, ValueSize: w.ValueSize}
	largest := func() (uint64, error) {
		rss, err := mr.NodeRSS()
		if err != nil {
			return 0, err
		}
		res.Servers = len(rss)
		return slices.Max(rss), nil
	}
	if res.Empty, err = largest(); err != nil {
		return res, err
	}
	ks := newKeySpace(w)
	if err := load(ctx, target, w, ks, progress); err != nil {
		return res, err
	}
	if res.Loaded, err = largest(); err != nil {
		return res, err
	}
	servers := 1
	if s, ok := target.(MultiServer); ok {
		servers = s.Servers()
	}
	for srv := range servers {
		if err := readAll(ctx, target, w.Clients, srv, servers, ks.names); err != nil {
			return res, err
		}
		if progress != nil {
			fmt.Fprintf(progress, "%s: server %d read every key\n", target.Name(), srv)
		}
	}
	res.Read, err = largest()
	return res, err
}

// readAll reads every key once through clients that the target routes to
// server srv of servers (client numbers srv, srv+servers, ...), with
// parallel readers.
func readAll(ctx context.Context, target Target, parallel, srv, servers int, keys []string) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := range max(1, parallel) {
		wg.Go(func() {
			for ctx.Err() == nil {
				k := next.Add(1) - 1
				if k >= int64(len(keys)) {
					return
				}
				if err := target.Get(ctx, srv+servers*w, keys[k]); err != nil {
					cancel(fmt.Errorf("bench: read pass %s: get %s: %w", target.Name(), keys[k], err))
					return
				}
			}
		})
	}
	wg.Wait()
	return context.Cause(ctx)
}

// WriteMemory writes the memory results as a table: resident set of the
// largest server when empty, loaded, and after the read pass, and
// PerKey.
func WriteMemory(w io.Writer, results []MemoryResult) error {
	t := table{header: []string{"target", "servers", "keys", "value", "RSS empty", "RSS loaded", "RSS after reads", "bytes/key"},
		right: []bool{false, true, true, true, true, true, true, true}}
	for _, r := range results {
		t.rows = append(t.rows, []string{r.Target, strconv.Itoa(r.Servers), strconv.Itoa(r.Keys), strconv.Itoa(r.ValueSize),
			fmtBytes(r.Empty), fmtBytes(r.Loaded), fmtBytes(r.Read), fmt.Sprintf("%.0f", r.PerKey())})
	}
	return t.write(w)
}

// fmtBytes is n in MiB with one decimal.
func fmtBytes(n uint64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

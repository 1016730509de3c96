// Package workload drives concurrent clients against a cluster and records
// every operation, with its call and return times, for the linearizability
// and durability checks (robustness/linearizability): clients spread over
// every node read, write and delete a small key space, so that their
// operations overlap. The robustness suite and the container test
// (deploy/) both run it.
package workload

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/robustness/linearizability"
)

// Client is what the workload drives; *cluster.Cluster implements it.
type Client interface {
	Size() int
	Get(ctx context.Context, n int, key string) (string, bool, error)
	Put(ctx context.Context, n int, key, value string) error
	Delete(ctx context.Context, n int, key string) error
}

// Workload configures the clients.
type Workload struct {
	Clients   int           // concurrent clients, spread over the nodes
	Readers   int           // how many of them only read (the last ones)
	Keys      int           // size of the key space (small, so operations overlap)
	OpTimeout time.Duration // per write
	// ReadTimeout bounds a read (default OpTimeout). Reads have no effect,
	// so a short one keeps clients sampling while a fetch is stuck.
	ReadTimeout time.Duration
	Pause       time.Duration // mean think time between a client's operations
	// ReaderPause, if set, is the read-only clients' mean think time
	// instead of Pause: slow writers and fast readers keep cached copies
	// alive long enough for their leases to be renewed.
	ReaderPause time.Duration
	Seed        uint64
}

// Stats count what the workload did.
type Stats struct {
	Ops, Failed, Unknown int64
}

// Run drives the clients until ctx ends, recording into rec.
func (w Workload) Run(ctx context.Context, c Client, rec *linearizability.Recorder) Stats {
	var st struct{ ops, failed, unknown atomic.Int64 }
	var wg sync.WaitGroup
	for i := 0; i < w.Clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(w.Seed, uint64(i)))
			node := i % c.Size()
			if i >= w.Clients-w.Readers {
				node = (i - (w.Clients - w.Readers)) % c.Size()
			}
			for seq := 0; ctx.Err() == nil; seq++ {
				at := nodeAt(c, node)
				key := fmt.Sprint("k", r.IntN(w.Keys))
				var in linearizability.Input
				switch x := r.IntN(10); {
				case x < 5 || i >= w.Clients-w.Readers:
					in = linearizability.Input{Kind: linearizability.Get, Key: key}
				case x < 9:
					in = linearizability.Input{Kind: linearizability.Put, Key: key, Value: fmt.Sprintf("c%d-%d", i, seq)}
				default:
					in = linearizability.Input{Kind: linearizability.Delete, Key: key}
				}
				st.ops.Add(1)
				switch w.do(c, rec, i, at, in) {
				case outcomeFailed:
					st.failed.Add(1)
				case outcomeUnknown:
					st.unknown.Add(1)
				}
				pause := w.Pause
				if w.ReaderPause > 0 && i >= w.Clients-w.Readers {
					pause = w.ReaderPause
				}
				if pause > 0 {
					t := time.NewTimer(time.Duration(r.Int64N(int64(2 * pause))))
					select {
					case <-ctx.Done():
					case <-t.C:
					}
					t.Stop()
				}
			}
		}()
	}
	wg.Wait()
	return Stats{Ops: st.ops.Load(), Failed: st.failed.Load(), Unknown: st.unknown.Load()}
}

// nodeAt is the node number of a client's position i: with a cluster
// whose membership changes (a node retired, a new one in its place), the
// i-th of its active nodes, so that the new node takes the retired one's
// clients; else node i.
func nodeAt(c Client, i int) int {
	a, ok := c.(interface{ Active() []int })
	if !ok {
		return i
	}
	if active := a.Active(); len(active) > 0 {
		return active[i%len(active)]
	}
	return i
}

type outcome int

const (
	outcomeOK outcome = iota
	outcomeFailed
	outcomeUnknown
)

func (w Workload) do(c Client, rec *linearizability.Recorder, client, node int, in linearizability.Input) outcome {
	timeout := w.OpTimeout
	if in.Kind == linearizability.Get && w.ReadTimeout > 0 {
		timeout = w.ReadTimeout
	}
	octx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	p := rec.Begin(client, in)
	var err error
	var out linearizability.Output
	switch in.Kind {
	case linearizability.Get:
		out.Value, out.Found, err = c.Get(octx, node, in.Key)
	case linearizability.Put:
		err = c.Put(octx, node, in.Key, in.Value)
	case linearizability.Delete:
		err = c.Delete(octx, node, in.Key)
	}
	switch {
	case err == nil:
		p.End(out)
		return outcomeOK
	case in.Kind != linearizability.Get && errors.Is(err, kvstore.ErrOutcomeUnknown):
		out.Unknown, out.Err = true, err.Error()
		p.End(out)
		return outcomeUnknown
	default:
		// A read has no effect; a write that failed definitely was not
		// applied.
		p.Drop()
		return outcomeFailed
	}
}

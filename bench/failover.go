package bench

import (
	"context"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/kvstore/kvstore/cluster"
)

// FailoverResult holds the failover figures over several runs.
type FailoverResult struct {
	Runs int `json:"runs"`
	// KillToWrite: from killing the leader to the first write acknowledged
	// through another node.
	KillToWrite Spread `json:"kill_to_write"`
	// HolderDownWrite: the latency of a write of a key whose cached copy
	// is held by a node whose inbound RPC is down (bounded by the lease).
	HolderDownWrite Spread `json:"holder_down_write"`
	Backend         string `json:"backend"`
}

// Spread is the minimum, median and maximum of a set of durations.
type Spread struct {
	Min    time.Duration `json:"min_ns"`
	Median time.Duration `json:"median_ns"`
	Max    time.Duration `json:"max_ns"`
}

func spread(ds []time.Duration) Spread {
	if len(ds) == 0 {
		return Spread{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return Spread{Min: s[0], Median: s[len(s)/2], Max: s[len(s)-1]}
}

func (s Spread) String() string {
	r := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	return fmt.Sprintf("min %v, median %v, max %v", r(s.Min), r(s.Median), r(s.Max))
}

// Failover measures, runs times on one 3-node in-process cluster with
// default timeouts (session TTL and lease 2 s): the time from killing the
// leader to the first acknowledged write (the killed node is restarted and
// caught up before the next run), and the latency of a write while a
// holder of the key's cached copy is rmi-down. Progress goes to progress
// if it is not nil.
func Failover(ctx context.Context, runs int, backend cluster.Backend, progress io.Writer) (FailoverResult, error) {
	res := FailoverResult{Runs: runs, Backend: string(backend)}
	c, err := cluster.New(ctx, cluster.Options{Nodes: 3, Backend: backend})
	if err != nil {
		return res, err
	}
	defer c.Close()
	var kill, holder []time.Duration
	for run := 0; run < runs; run++ {
		if err := c.WaitHealthy(ctx); err != nil {
			return res, err
		}
		ld, _, err := c.Leader(ctx)
		if err != nil {
			return res, err
		}
		other := (ld + 1) % 3
		if err := c.Kill(ld); err != nil {
			return res, err
		}
		start := time.Now()
		if err := c.Put(ctx, other, "failover", fmt.Sprint(run)); err != nil {
			return res, fmt.Errorf("run %d: first write after killing the leader: %w", run, err)
		}
		kill = append(kill, time.Since(start))
		if err := c.Restart(ctx, ld); err != nil {
			return res, err
		}
		if err := c.WaitHealthy(ctx); err != nil {
			return res, err
		}

		// A holder that cannot be reached: the write waits out its lease.
		ld, _, err = c.Leader(ctx)
		if err != nil {
			return res, err
		}
		h, w := (ld+1)%3, (ld+2)%3
		key := fmt.Sprint("held-", run)
		if err := c.Put(ctx, ld, key, "old"); err != nil {
			return res, err
		}
		if _, _, err := c.Get(ctx, h, key); err != nil { // h now holds a copy
			return res, err
		}
		if err := c.RmiDown(h); err != nil {
			return res, err
		}
		start = time.Now()
		err = c.Put(ctx, w, key, "new")
		holder = append(holder, time.Since(start))
		if uerr := c.RmiUp(h); err == nil {
			err = uerr
		}
		if err != nil {
			return res, fmt.Errorf("run %d: write with a holder rmi-down: %w", run, err)
		}
		if progress != nil {
			fmt.Fprintf(progress, "failover run %d/%d: kill->write %v, holder-down write %v\n",
				run+1, runs, kill[run].Round(time.Millisecond), holder[run].Round(time.Millisecond))
		}
	}
	res.KillToWrite, res.HolderDownWrite = spread(kill), spread(holder)
	return res, nil
}

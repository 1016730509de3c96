// Package gctune bounds the Go collector's headroom in a long-running
// process whose live heap can be large (a node holding a big store).
//
// With the default GOGC=100 the heap may grow to twice what is live before
// a collection: a node with 500 MiB of keys and values resides at about
// 1 GiB. Tune lowers GOGC as the live heap grows, so that the headroom is
// at most a quarter of the live heap, but never below a fixed floor
// (64 MiB by default): small heaps keep GOGC=100 and collect no more often
// than before; large ones trade some collector CPU (a collection every
// quarter of the live heap allocated, instead of every whole one) for
// about a third less memory. The same idea as a "GC tuner" in other Go
// servers; Go's own memory limit (GOMEMLIMIT) needs a fixed figure, which
// a node does not know in advance.
//
// An operator who sets GOGC in the environment keeps it: Tune does nothing.
package gctune

import (
	"context"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Policy is the headroom rule: after a collection, the heap may grow by
// max(Floor, live*Percent/100) before the next, with GOGC at most 100.
type Policy struct {
	Floor   uint64 // bytes of headroom at least
	Percent int    // headroom as a percentage of the live heap, 1 to 100
}

// DefaultPolicy is a quarter of the live heap, at least 64 MiB.
var DefaultPolicy = Policy{Floor: 64 << 20, Percent: 25}

// GOGC is the GOGC value the policy gives for a live heap of live bytes:
// 100 while Floor is at least the live heap, down to Percent.
func (p Policy) GOGC(live uint64) int {
	if live == 0 {
		return 100
	}
	headroom := max(p.Floor, live/100*uint64(p.Percent))
	if headroom >= live {
		return 100
	}
	return max(p.Percent, int(headroom*100/live))
}

// Tune applies p until ctx ends, looking at the live heap every interval
// and setting GOGC when the policy's value changes. It returns at once,
// doing nothing, if the environment sets GOGC.
func Tune(ctx context.Context, p Policy, interval time.Duration) {
	if _, set := os.LookupEnv("GOGC"); set {
		return
	}
	samples := []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/gc/cycles/total:gc-cycles"}}
	t := time.NewTicker(interval)
	defer t.Stop()
	var cycles uint64
	current := -1
	for {
		metrics.Read(samples)
		if c := samples[1].Value.Uint64(); c != cycles {
			cycles = c // the live heap is measured at each collection
			if g := p.GOGC(samples[0].Value.Uint64()); g != current {
				debug.SetGCPercent(g)
				current = g
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

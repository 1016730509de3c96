package node_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/kvstore/kvstore/cluster"
	"github.com/kvstore/kvstore/internal/soon"
	"github.com/kvstore/kvstore/node"
)

// keepForwards switches Faults.KeepForwardsOnLeaderChange on in
// TestInFlightOpsFollowTheNewLeader: set it to see the test fail without
// the failover of operations in flight.
const keepForwards = false

// TestInFlightOpsFollowTheNewLeader: writes and reads that a follower sent
// to a leader which then stopped answering (as a paused process does: its
// connections stay open and swallow every byte) do not wait for it. Once
// the follower sees the new leader, it drops those calls and sends them
// there: each operation succeeds soon after the new leader serves, not at
// its deadline, and each write is applied once.
func TestInFlightOpsFollowTheNewLeader(t *testing.T) {
	c := cluster.StartTest(t, cluster.Options{Nodes: 3, Node: func(cfg *node.Config) {
		cfg.Faults.KeepForwardsOnLeaderChange = keepForwards
	}})
	old, fs := roles(t, c)
	f := nodeOf(t, c, fs[0])
	const ops = 4
	// The follower's connection to the leader is up, as in a cluster that
	// has been running: a paused process keeps its connections.
	if err := f.Set(ctxT(t, 10*time.Second), "warm", "up"); err != nil {
		t.Fatal(err)
	}
	// Keys the follower never read: its reads of them go to the leader.
	for i := range ops {
		if err := c.Put(ctxT(t, 10*time.Second), old, fmt.Sprint("r", i), fmt.Sprint("before ", i)); err != nil {
			t.Fatal(err)
		}
	}

	// The leader stops answering, closing nothing: its links to and from
	// the other nodes and its coordinator connection swallow every byte.
	if err := c.Partition(true, []int{old}); err != nil {
		t.Fatal(err)
	}
	if err := c.ZkStall(old); err != nil {
		t.Fatal(err)
	}
	paused := time.Now()

	// Operations through the follower, sent to the paused leader: the
	// follower still sees it as the leader until its session expires.
	const deadline = 15 * time.Second
	type result struct {
		what     string
		took     time.Duration
		end      time.Time
		err      error
		value    string
		wantRead string
	}
	results := make(chan result, 2*ops)
	for i := range ops {
		go func() {
			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			err := f.Set(ctx, fmt.Sprint("w", i), fmt.Sprint("during ", i))
			results <- result{what: fmt.Sprint("set w", i), took: time.Since(start), end: time.Now(), err: err}
		}()
		go func() {
			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			v, _, err := f.Get(ctx, fmt.Sprint("r", i))
			results <- result{what: fmt.Sprint("get r", i), took: time.Since(start), end: time.Now(), err: err, value: v, wantRead: fmt.Sprint("before ", i)}
		}()
	}

	// When the new leader serves.
	var served time.Time
	next := -1
	soon.Succeeds(t, 30*time.Second, func() error {
		for _, i := range fs {
			if nd, err := c.Node(i); err == nil && nd.IsLeader() {
				served, next = time.Now(), i
				return nil
			}
		}
		return fmt.Errorf("no new leader %v after pausing the leader n%d", time.Since(paused), old)
	})
	t.Logf("the leader n%d paused; n%d serves %v later", old, next, served.Sub(paused).Round(time.Millisecond))

	// Each operation ends soon after that, successful: the follower sent
	// it to the new leader as soon as it saw it. (Without that, each waits
	// for the old leader until its own deadline, 15 s.)
	const slack = 3 * time.Second
	for range 2 * ops {
		r := <-results
		t.Logf("%s: %v after it began, %v after the new leader served: %v", r.what, r.took.Round(time.Millisecond), r.end.Sub(served).Round(time.Millisecond), r.err)
		switch {
		case r.took > deadline+time.Second:
			t.Errorf("%s took %v, over its deadline %v plus 1 s", r.what, r.took, deadline)
		case r.err != nil:
			t.Errorf("%s failed: %v", r.what, r.err)
		case r.end.After(served.Add(slack)):
			t.Errorf("%s ended %v after the new leader served (more than %v): it waited for the paused leader", r.what, r.end.Sub(served), slack)
		case r.value != r.wantRead:
			t.Errorf("%s = %q, want %q", r.what, r.value, r.wantRead)
		}
	}
	// Each write took effect, once, whichever leader applied it.
	other := fs[1]
	for i := range ops {
		if v, found, err := c.Get(ctxT(t, 10*time.Second), other, fmt.Sprint("w", i)); err != nil || !found || v != fmt.Sprint("during ", i) {
			t.Errorf("w%d through n%d = %q %v %v, want %q", i, other, v, found, err, fmt.Sprint("during ", i))
		}
	}
	if err := c.Heal(ctxT(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
}

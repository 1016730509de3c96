package cluster

import (
	"errors"
	"testing"
	"time"

	"github.com/kvstore/kvstore/internal/soon"
	"github.com/kvstore/kvstore/node"
)

// TestReadDuringAWriteAnswersTheVisibleValue: while a write of a key waits
// to become visible (here for a holder of a cached copy that cannot be
// reached, under a lease long enough that the wait cannot end by itself
// during the test), reads of the key through the leader and through
// another follower answer at once with the latest visible value instead
// of waiting for the write; once the write is visible and acknowledged
// they answer the new value. Reads waiting for the write, as before the
// leader kept that value (prior.go), would block until the lease ends and
// then answer the new value: this test fails.
func TestReadDuringAWriteAnswersTheVisibleValue(t *testing.T) {
	c := newCluster(t, Etcd, 3, func(o *Options) {
		o.Node = func(cfg *node.Config) { cfg.LeaseDuration = 8 * time.Second }
	})
	ld := leaderOf(t, c)
	fs := followers(t, c)
	holder, reader := fs[0], fs[1]
	mustPut(t, c, ld, "k", "old")
	expectGet(t, c, holder, "k", "old")
	if err := c.RmiDown(holder); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Put(ctxT(t, 60*time.Second), ld, "k", "new") }()
	leader, err := c.Node(ld)
	if err != nil {
		t.Fatal(err)
	}
	soon.Succeeds(t, 10*time.Second, func() error {
		if v, _, _ := leader.LocalItem("k"); v != "new" {
			return errors.New("the write is not appended yet")
		}
		return nil
	})
	for i := range 3 {
		for _, n := range []int{ld, reader} {
			got, found, err := c.Get(ctxT(t, 5*time.Second), n, "k")
			if err != nil || !found || got != "old" {
				t.Fatalf("read %d through node %d while the write waits: %q %v %v, want \"old\" at once", i, n, got, found, err)
			}
		}
	}
	select {
	case err := <-done:
		t.Fatalf("the write ended (%v) while its holder was unreachable within its lease: the reads proved nothing", err)
	default:
	}
	if err := c.RmiUp(holder); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("put once the holder is back: %v", err)
	}
	for _, n := range []int{ld, reader, holder} {
		expectGet(t, c, n, "k", "new")
	}
	if leader.Stats().PriorReads == 0 {
		t.Fatalf("the leader counted no read answered with the visible value")
	}
}

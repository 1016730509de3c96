package client_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/kvstore/kvstore/internal/soon"
)

// TestStatusAnswersWithinItsDeadline: a node cut off from the coordinator
// answers Status at once with what it knows (its state, the leader it saw,
// the voter and settings records it read last) instead of waiting on the
// coordinator: before it notices the cut (its connection swallows every
// byte) and after (suspended). A Status with a short deadline still
// succeeds.
func TestStatusAnswersWithinItsDeadline(t *testing.T) {
	c := newCluster(t, 3)
	ld, _, err := c.Leader(ctxT(t, 30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	f := (ld + 1) % 3
	cl := newClient(t, addr(t, c, f))
	if st, err := cl.Status(ctxT(t, 10*time.Second)); err != nil || len(st.Voters) != 3 || st.Settings == nil {
		t.Fatalf("status: %+v, %v", st, err)
	}
	if err := c.ZkStall(f); err != nil {
		t.Fatal(err)
	}
	check := func(when string, within, deadline time.Duration) {
		t.Helper()
		start := time.Now()
		st, err := cl.Status(ctxT(t, deadline))
		took := time.Since(start)
		t.Logf("status %s: %v (state %q, %d voters)", when, took.Round(time.Millisecond), st.State, len(st.Voters))
		if err != nil || len(st.Voters) != 3 || st.Settings == nil || st.ID != fmt.Sprint("n", f) {
			t.Fatalf("status %s: %+v, %v; want the node's own, with the voters and settings it read before", when, st, err)
		}
		if took > within {
			t.Fatalf("status %s took %v, more than %v", when, took, within)
		}
	}
	check("with the coordinator's connection stalled", 700*time.Millisecond, 5*time.Second)
	check("with a 400 ms deadline", 400*time.Millisecond, 400*time.Millisecond)
	soon.Succeeds(t, 10*time.Second, func() error {
		nd, err := c.Node(f)
		if err != nil {
			return err
		}
		if nd.State() == "ok" {
			return errors.New("the node has not noticed the stall yet")
		}
		return nil
	})
	check("suspended", 300*time.Millisecond, 5*time.Second)
	if err := c.ZkUp(f); err != nil {
		t.Fatal(err)
	}
}

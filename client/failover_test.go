package client_test

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/kvstore/kvstore/client"
	"github.com/kvstore/kvstore/internal/soon"
)

// TestWriteNeverAppliedIsNotOutcomeUnknown: a write that no leader applied
// is a definite failure, not "outcome unknown". Three of five voters are
// killed, the leader among them: one of the two left is elected but cannot
// take over without a majority, so a write through it (the leader itself)
// or through the other (forwarded to it) waits until its deadline and
// fails. Neither was appended anywhere: the error says it timed out, and
// does not say the write may have been applied.
func TestWriteNeverAppliedIsNotOutcomeUnknown(t *testing.T) {
	c := newCluster(t, 5)
	ld, _, err := c.Leader(ctxT(t, 30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var left []int
	for i := range 5 {
		if i != ld && len(left) < 2 {
			left = append(left, i)
		} else if err := c.Kill(i); err != nil {
			t.Fatal(err)
		}
	}
	// Both nodes left see one of them elected.
	soon.Succeeds(t, 30*time.Second, func() error {
		var seen []string
		for _, i := range left {
			nd, err := c.Node(i)
			if err != nil {
				return err
			}
			seen = append(seen, nd.Leader().ID)
		}
		if seen[0] != seen[1] || !slices.Contains([]string{fmt.Sprint("n", left[0]), fmt.Sprint("n", left[1])}, seen[0]) {
			return fmt.Errorf("nodes %v see leaders %v", left, seen)
		}
		return nil
	})
	// The node answers a little before the caller's deadline; on a
	// loaded machine that answer can still arrive too late, and then the
	// client rightly cannot know. So each node gets three tries, and one
	// definite answer is required: with the fix off every answer is
	// outcome unknown.
	for _, i := range left {
		cl := newClient(t, addr(t, c, i))
		var errs []error
		for range 3 {
			start := time.Now()
			err := cl.Put(ctxT(t, 2*time.Second), "k", "v")
			t.Logf("put through n%d: %v after %v", i, err, time.Since(start).Round(time.Millisecond))
			if err == nil {
				t.Fatalf("put through n%d succeeded, but no leader can serve", i)
			}
			if !errors.Is(err, client.ErrOutcomeUnknown) && errors.Is(err, client.ErrTimeout) {
				errs = nil
				break
			}
			errs = append(errs, err)
		}
		if errs != nil {
			t.Errorf("put through n%d, no leader able to serve: %v; want ErrTimeout, not ErrOutcomeUnknown", i, errs)
		}
	}
}

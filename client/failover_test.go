package client_test

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/kvstore/kvstore/client"
	"github.com/kvstore/kvstore/cluster"
	"github.com/kvstore/kvstore/internal/soon"
	"github.com/kvstore/kvstore/node"
)

// TestWriteNeverAppliedIsNotOutcomeUnknown: a write that no leader applied
// is a definite failure, not "outcome unknown". Three of five voters are
// killed, the leader among them. With pre-vote (the default) neither of the
// two left stands for election once its probes show no majority, and a
// write through either fails with ErrNoQuorum; without it (NoPreVote) one of
// them is elected but cannot take over without a majority, so a write
// through it (the leader itself) or through the other (forwarded to it)
// waits until its deadline and fails with ErrTimeout. Neither was appended
// anywhere: the error does not say the write may have been applied.
func TestWriteNeverAppliedIsNotOutcomeUnknown(t *testing.T) {
	for _, preVote := range []bool{true, false} {
		t.Run(fmt.Sprintf("pre-vote=%v", preVote), func(t *testing.T) {
			c := cluster.StartTest(t, cluster.Options{Nodes: 5, Node: func(cfg *node.Config) { cfg.Faults.NoPreVote = !preVote }})
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
			if !preVote {
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
			}
			// The node answers a little before the caller's deadline; on a
			// loaded machine that answer can still arrive too late, and then
			// the client rightly cannot know. So each node gets three tries,
			// and one definite answer is required: with the fix off every
			// answer is outcome unknown.
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
					if !errors.Is(err, client.ErrOutcomeUnknown) && (errors.Is(err, client.ErrTimeout) || errors.Is(err, client.ErrNoQuorum)) {
						errs = nil
						break
					}
					errs = append(errs, err)
				}
				if errs != nil {
					t.Errorf("put through n%d, no leader able to serve: %v; want ErrTimeout or ErrNoQuorum, not ErrOutcomeUnknown", i, errs)
				}
			}
		})
	}
}

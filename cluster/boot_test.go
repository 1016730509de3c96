package cluster

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvstore/kvstore/coord"
	"github.com/kvstore/kvstore/node"
)

// errAnswerLost is what lossyCreate's CreateVoters returns after writing.
var errAnswerLost = errors.New("test: the answer to CreateVoters was lost")

// lossyCreate is a coordinator whose CreateVoters, once lose is set, is
// applied but fails with errAnswerLost, as when the connection breaks
// after the write reached the coordinator and before its answer came back.
type lossyCreate struct {
	coord.Coordinator
	lose *atomic.Bool
}

func (c lossyCreate) CreateVoters(ctx context.Context, ids []string) error {
	if err := c.Coordinator.CreateVoters(ctx, ids); err != nil {
		return err
	}
	if c.lose.CompareAndSwap(true, false) {
		return errAnswerLost
	}
	return nil
}

// voterRecord reads the voter record of c's current namespace through a
// coordinator connection of its own.
func voterRecord(t *testing.T, c *Cluster) coord.Voters {
	t.Helper()
	s, err := c.slot(0)
	if err != nil {
		t.Fatal(err)
	}
	co, err := c.dialCoordinator(ctxT(t, 10*time.Second), s, c.prefix(c.nodeConfig(s)))
	if err != nil {
		t.Fatal(err)
	}
	defer co.Close()
	v, err := co.Voters(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestLostAnswerToTheFirstVoterRecordWrite is issue 17's item 2: the
// first node of a new in-memory cluster creates the voter record, the
// coordinator applies it, but the answer is lost and the start fails.
// Started again, the node finds itself the only voter with no data: the
// record is unsealed (no leader ever served), so it knows it lost nothing,
// leads and serves. With the seal mark ignored (Faults.IgnoreVoterSeal) it
// is recovering, the only voter, and no takeover can ever complete.
func TestLostAnswerToTheFirstVoterRecordWrite(t *testing.T) {
	eachBackend(t, func(t *testing.T, b Backend) {
		lose := new(atomic.Bool)
		c := newCluster(t, b, 1, func(o *Options) {
			o.WrapCoordinator = func(co coord.Coordinator) coord.Coordinator { return lossyCreate{co, lose} }
		})
		// A new cluster: a fresh namespace, node 0 with no data.
		if err := c.Kill(0); err != nil {
			t.Fatal(err)
		}
		if err := c.LoseCoordinatorData(); err != nil {
			t.Fatal(err)
		}
		lose.Store(true)
		if err := c.Restart(ctxT(t, 30*time.Second), 0); !errors.Is(err, errAnswerLost) {
			t.Fatalf("first start with the answer to CreateVoters lost = %v, want %v", err, errAnswerLost)
		}
		if v := voterRecord(t, c); !slices.Equal(v.IDs, []string{"n0"}) || !v.Unsealed {
			t.Fatalf("voter record after the lost answer: %+v; want [n0], unsealed", v)
		}

		// The bug: with the mark ignored the node is recovering, and
		// being the only voter it never serves (the short wait is only
		// the harness's; Recovering is the proof).
		ignore := func(cfg *node.Config) { cfg.Faults.IgnoreVoterSeal = true }
		if err := c.RestartWith(ctxT(t, 3*time.Second), 0, ignore); err == nil {
			t.Fatal("with the seal mark ignored the restarted node served")
		}
		if rec, err := c.Recovering(0); err != nil || !rec {
			t.Fatalf("with the seal mark ignored: recovering %v (%v), want true", rec, err)
		}
		if err := c.Kill(0); err != nil {
			t.Fatal(err)
		}

		// The fix: started again, in memory, it serves.
		if err := c.Restart(ctxT(t, 60*time.Second), 0); err != nil {
			t.Fatalf("restart after the lost answer: %v", err)
		}
		if rec, _ := c.Recovering(0); rec {
			t.Fatal("the restarted node is recovering, though no leader ever served")
		}
		mustPut(t, c, 0, "k", "v")
		expectGet(t, c, 0, "k", "v")
		if v := voterRecord(t, c); !slices.Equal(v.IDs, []string{"n0"}) || v.Unsealed {
			t.Fatalf("voter record once the node serves: %+v; want [n0], sealed", v)
		}
	})
}

// TestVoterRecordSealedBeforeTheFirstWrite: the first leader seals the
// voter record before it acknowledges anything, so a voter that loses its
// memory after a write was acknowledged is recovering: the one-node
// in-memory cluster that lost its only copy does not come back empty as
// if nothing had been written. With Faults.SkipVoterSeal it does, and the
// acknowledged write is silently gone.
func TestVoterRecordSealedBeforeTheFirstWrite(t *testing.T) {
	eachBackend(t, func(t *testing.T, b Backend) {
		for _, skip := range []bool{false, true} {
			c := newCluster(t, b, 1, func(o *Options) {
				o.Node = func(cfg *node.Config) { cfg.Faults.SkipVoterSeal = skip }
			})
			mustPut(t, c, 0, "k", "acknowledged")
			if v := voterRecord(t, c); v.Unsealed != skip {
				t.Fatalf("skip the seal %v: the record after an acknowledged write is %+v", skip, v)
			}
			if err := c.Kill(0); err != nil {
				t.Fatal(err)
			}
			err := c.Restart(ctxT(t, 3*time.Second), 0)
			rec, _ := c.Recovering(0)
			if !skip {
				// The only copy is gone: the node must not serve, and
				// says why. (The short wait is only the harness's.)
				if err == nil || !rec {
					t.Fatalf("restarted without the only copy of an acknowledged write: start %v, recovering %v; want not serving, recovering", err, rec)
				}
				continue
			}
			if err != nil {
				t.Fatalf("without the seal: restart: %v", err)
			}
			expectGet(t, c, 0, "k", "") // the bug: the write is gone, no error
		}
	})
}

package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvstore/kvstore/coord"
	"github.com/kvstore/kvstore/internal/soon"
	"github.com/kvstore/kvstore/node"
)

// rawShift is a coordinator whose raw epochs are shift above the
// backend's: a coordinator that has run for long (high revisions or
// zxids). Sessions opened after shift changes use the new value; setting
// it to 0 then makes the epochs drop, as a rebuilt coordinator's do.
type rawShift struct {
	coord.Coordinator
	shift *atomic.Int64
}

func (c rawShift) NewSession(ctx context.Context, ttl time.Duration) (coord.Session, error) {
	s, err := c.Coordinator.NewSession(ctx, ttl)
	if err != nil {
		return nil, err
	}
	return &shiftSession{Session: s, shift: c.shift.Load()}, nil
}

type shiftSession struct {
	coord.Session
	shift int64
}

func (s *shiftSession) Campaign(ctx context.Context, id string) (int64, error) {
	e, err := s.Session.Campaign(ctx, id)
	return e + s.shift, err
}

func (s *shiftSession) SetVoters(ctx context.Context, epoch int64, prev coord.Voters, ids []string) error {
	return s.Session.SetVoters(ctx, epoch-s.shift, prev, ids)
}

func (s *shiftSession) Watch(ctx context.Context) <-chan coord.View {
	in := s.Session.Watch(ctx)
	out := make(chan coord.View, 1)
	go func() {
		defer close(out)
		for v := range in {
			if v.Leader.ID != "" {
				v.Leader.Epoch += s.shift
			}
			coord.SendLatest(out, v)
		}
	}()
	return out
}

// staleNodeAndLostCoordinator runs the scenario up to the
// coordinator's loss: "k" is "v1" on every node, then node 0 is killed
// and "k" = "v2" is acknowledged by nodes 1 and 2, which are then killed
// too; the coordinator loses its data. It returns the last leader's epoch.
func staleNodeAndLostCoordinator(t *testing.T, c *Cluster) int64 {
	t.Helper()
	mustPut(t, c, 0, "k", "v1")
	for i := 0; i < 3; i++ {
		nd, _ := c.Node(i)
		soon.Succeeds(t, 10*time.Second, func() error {
			if v, _, _ := nd.LocalItem("k"); v != "v1" {
				return fmt.Errorf("node %d holds %q", i, v)
			}
			return nil
		})
	}
	if err := c.Kill(0); err != nil {
		t.Fatal(err)
	}
	mustPut(t, c, 1, "k", "v2") // acknowledged by nodes 1 and 2
	_, epoch, err := c.Leader(ctxT(t, 20*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{1, 2} {
		if err := c.Kill(i); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.LoseCoordinatorData(); err != nil {
		t.Fatal(err)
	}
	return epoch
}

func TestRebuiltCoordinatorStaleNodeRefusesAndForceNewClusterRecovers(t *testing.T) {
	eachBackend(t, func(t *testing.T, b Backend) {
		shift := new(atomic.Int64)
		shift.Store(1 << 40)
		dir := t.TempDir()
		c := newCluster(t, b, 3, func(o *Options) {
			o.DataDir = dir
			o.WrapCoordinator = func(co coord.Coordinator) coord.Coordinator { return rawShift{co, shift} }
		})
		before := staleNodeAndLostCoordinator(t, c)
		// The rebuilt coordinator's raw epochs start low again: far below
		// every epoch the nodes promised.
		shift.Store(0)

		// The stale node starts first: it must refuse, not bootstrap. The
		// rebuilt coordinator's cluster record is a new incarnation, so
		// the fence refuses it (ErrCoordinatorLost is the refusal of
		// directories from before incarnations:
		// TestRebuiltCoordinatorBootstrapFromStaleNodeLosesAWrite).
		err := c.Restart(ctxT(t, 30*time.Second), 0)
		if !errors.Is(err, node.ErrOtherIncarnation) {
			t.Fatalf("restart of a node with data on a rebuilt coordinator = %v, want ErrOtherIncarnation", err)
		}
		if err := c.Restart(ctxT(t, 30*time.Second), 2); !errors.Is(err, node.ErrOtherIncarnation) {
			t.Fatalf("restart of node 2 = %v, want ErrOtherIncarnation", err)
		}
		// The refusals wrote no voter record.
		s0, _ := c.slot(0)
		co, err := c.dialCoordinator(ctxT(t, 10*time.Second), s0, c.prefix(c.nodeConfig(s0)))
		if err != nil {
			t.Fatal(err)
		}
		v, err := co.Voters(ctxT(t, 10*time.Second))
		_ = co.Close()
		if err != nil || v.Version != 0 {
			t.Fatalf("voter record after the refusals: %+v, %v; want none", v, err)
		}

		// The operator restarts the cluster from an up-to-date survivor.
		err = c.RestartWith(ctxT(t, 60*time.Second), 1, func(cfg *node.Config) { cfg.ForceNewCluster = cfg.ID })
		if err != nil {
			t.Fatalf("force-new-cluster on node 1: %v", err)
		}
		// The other survivors' directories belong to the lost incarnation:
		// they stay fenced off, and join as new nodes once the operator
		// moves their data aside.
		for _, i := range []int{0, 2} {
			if err := c.Restart(ctxT(t, 30*time.Second), i); !errors.Is(err, node.ErrOtherIncarnation) {
				t.Fatalf("restart of node %d after the recovery = %v, want ErrOtherIncarnation", i, err)
			}
			moveDataAside(t, dir, i)
			if err := c.Restart(ctxT(t, 60*time.Second), i); err != nil {
				t.Fatalf("restart node %d after the recovery, its data moved aside: %v", i, err)
			}
		}
		for i := 0; i < 3; i++ {
			expectGet(t, c, i, "k", "v2")
		}
		_, after, err := c.Leader(ctxT(t, 20*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if after <= before {
			t.Fatalf("epoch after the recovery %d, not above the epoch %d before", after, before)
		}
		// Every node is reconciled to the survivor's state and becomes a
		// voter again; writes go on.
		mustPut(t, c, 0, "k", "v3")
		for i := 0; i < 3; i++ {
			nd, _ := c.Node(i)
			soon.Succeeds(t, 20*time.Second, func() error {
				if v, _, _ := nd.LocalItem("k"); v != "v3" {
					return fmt.Errorf("node %d holds %q", i, v)
				}
				return nil
			})
		}
	})
}

// With the refusals switched off (Faults.BootstrapWithData, and the
// incarnation fence: Faults.SkipIncarnationCheck, which also stands for
// directories from before incarnations), the bug happens: the
// stale node bootstraps, leads with its old state, and the acknowledged
// write is lost. This is why the refusals exist.
func TestRebuiltCoordinatorBootstrapFromStaleNodeLosesAWrite(t *testing.T) {
	eachBackend(t, func(t *testing.T, b Backend) {
		c, _ := durableCluster(t, b, 3)
		staleNodeAndLostCoordinator(t, c)
		noFence := func(cfg *node.Config) { cfg.Faults.SkipIncarnationCheck = true }
		bootstrap := func(cfg *node.Config) { cfg.Faults.BootstrapWithData, cfg.Faults.SkipIncarnationCheck = true, true }
		// With only the fence off, the voter record check still refuses.
		if err := c.RestartWith(ctxT(t, 30*time.Second), 0, noFence); !errors.Is(err, node.ErrCoordinatorLost) {
			t.Fatalf("restart of the stale node with the fence off = %v, want ErrCoordinatorLost", err)
		}
		if err := c.RestartWith(ctxT(t, 60*time.Second), 0, bootstrap); err != nil {
			t.Fatalf("restart the stale node with the check off: %v", err)
		}
		for _, i := range []int{1, 2} {
			if err := c.RestartWith(ctxT(t, 60*time.Second), i, noFence); err != nil {
				t.Fatalf("restart node %d: %v", i, err)
			}
		}
		for i := 0; i < 3; i++ {
			expectGet(t, c, i, "k", "v1") // v2 was acknowledged, and is gone
		}
	})
}

func TestForceNewClusterRefusedWhileAMajorityOfVotersIsAlive(t *testing.T) {
	eachBackend(t, func(t *testing.T, b Backend) {
		c, dir := durableCluster(t, b, 3)
		mustPut(t, c, 0, "k", "v1")
		// Stop, not Kill: its session ends at once.
		if err := c.Stop(0); err != nil {
			t.Fatal(err)
		}
		force := func(cfg *node.Config) { cfg.ForceNewCluster = cfg.ID }
		err := c.RestartWith(ctxT(t, 30*time.Second), 0, force)
		if !errors.Is(err, node.ErrForceRefused) {
			t.Fatalf("force-new-cluster with nodes 1 and 2 alive = %v, want ErrForceRefused", err)
		}
		// Nothing changed: the voter record still names all three, and
		// the node starts normally.
		if err := c.Restart(ctxT(t, 60*time.Second), 0); err != nil {
			t.Fatal(err)
		}
		mustPut(t, c, 0, "k", "v2")
		for i := 0; i < 3; i++ {
			expectGet(t, c, i, "k", "v2")
		}
		s, _ := c.slot(1)
		s.mu.Lock()
		co := s.coord
		s.mu.Unlock()
		v, err := co.Voters(ctxT(t, 10*time.Second))
		if err != nil || len(v.IDs) != 3 {
			t.Fatalf("voters after the refused force = %+v, %v; want all three", v, err)
		}

		// A node with no data cannot force either: it would restart the
		// cluster empty.
		if err := c.Stop(2); err != nil {
			t.Fatal(err)
		}
		if err := os.RemoveAll(filepath.Join(dir, "n2")); err != nil {
			t.Fatal(err)
		}
		err = c.RestartWith(ctxT(t, 30*time.Second), 2, force)
		if !errors.Is(err, node.ErrForceRefused) || !strings.Contains(err.Error(), "no data") {
			t.Fatalf("force-new-cluster on a node with no data = %v, want ErrForceRefused saying so", err)
		}
	})
}

// moveDataAside moves node i's data directory (under the cluster's dir)
// aside, as an operator does to let a fenced node join as a new node.
func moveDataAside(t *testing.T, dir string, i int) {
	t.Helper()
	from := filepath.Join(dir, fmt.Sprintf("n%d", i))
	if err := os.Rename(from, from+".aside"); err != nil {
		t.Fatal(err)
	}
}

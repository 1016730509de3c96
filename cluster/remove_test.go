package cluster

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/internal/soon"
	"github.com/kvstore/kvstore/node"
)

// idOf is node n's id.
func idOf(t *testing.T, c *Cluster, n int) string {
	t.Helper()
	s, err := c.slot(n)
	if err != nil {
		t.Fatal(err)
	}
	return s.id
}

// votersOf reads the voter record through node n's coordinator, sorted.
func votersOf(t *testing.T, c *Cluster, n int) []string {
	t.Helper()
	s, err := c.slot(n)
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	co := s.coord
	s.mu.Unlock()
	v, err := co.Voters(ctxT(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	ids := slices.Clone(v.IDs)
	slices.Sort(ids)
	return ids
}

func sortedIDs(t *testing.T, c *Cluster, ns ...int) []string {
	var ids []string
	for _, n := range ns {
		ids = append(ids, idOf(t, c, n))
	}
	slices.Sort(ids)
	return ids
}

// waitNotMember waits until node at no longer sees id as a member.
func waitNotMember(t *testing.T, c *Cluster, at int, id string) {
	t.Helper()
	nd, err := c.Node(at)
	if err != nil {
		t.Fatal(err)
	}
	soon.Succeeds(t, 20*time.Second, func() error {
		if _, ok := nd.Members()[id]; ok {
			return fmt.Errorf("node %d still sees %s as a member", at, id)
		}
		return nil
	})
}

// A voter removed through a follower leaves the record, the removed node
// (still running) is told to stop and leaves the membership, and the
// leader does not add it back: it would otherwise at once, since it is a
// caught-up member.
func TestRemoveVoterThroughFollower(t *testing.T) {
	eachBackend(t, func(t *testing.T, b Backend) {
		c := newCluster(t, b, 3)
		ld := leaderOf(t, c)
		fs := followers(t, c)
		via, gone := fs[0], fs[1]
		mustPut(t, c, ld, "before", "1")
		nd, err := c.Node(via)
		if err != nil {
			t.Fatal(err)
		}
		voters, err := nd.RemoveVoter(ctxT(t, 20*time.Second), idOf(t, c, gone))
		if err != nil {
			t.Fatalf("remove %s through %s: %v", idOf(t, c, gone), idOf(t, c, via), err)
		}
		slices.Sort(voters)
		if want := sortedIDs(t, c, ld, via); !slices.Equal(voters, want) {
			t.Fatalf("voters after removal = %v, want %v", voters, want)
		}
		removed, err := c.Node(gone)
		if err != nil {
			t.Fatal(err)
		}
		soon.Succeeds(t, 20*time.Second, func() error {
			if !removed.Removed() || removed.State() != node.StateStopped {
				return fmt.Errorf("removed node: state %s, removed %v; want it stopped", removed.State(), removed.Removed())
			}
			return nil
		})
		waitNotMember(t, c, ld, idOf(t, c, gone))
		if got, want := votersOf(t, c, ld), sortedIDs(t, c, ld, via); !slices.Equal(got, want) {
			t.Fatalf("voter record = %v after the removed node left, want %v", got, want)
		}
		// The two remaining voters commit; the removed node's copy is not
		// needed.
		mustPut(t, c, via, "after", "2")
		expectGet(t, c, ld, "before", "1")
		expectGet(t, c, via, "after", "2")
		if err := c.Put(ctxT(t, 5*time.Second), gone, "k", "v"); !errors.Is(err, kvstore.ErrStopped) {
			t.Fatalf("put through the removed node: %v, want ErrStopped", err)
		}
		// Removing it again is refused: it is no voter.
		if _, err := nd.RemoveVoter(ctxT(t, 20*time.Second), idOf(t, c, gone)); !errors.Is(err, kvstore.ErrNotVoter) {
			t.Fatalf("second removal: %v, want ErrNotVoter", err)
		}
	})
}

// Removals that would leave the cluster unable to commit are refused, and
// refused whole; removing a dead voter of three is allowed, after which the
// two left need each other.
func TestRemoveVoterRefusals(t *testing.T) {
	eachBackend(t, func(t *testing.T, b Backend) {
		c := newCluster(t, b, 3)
		ld := leaderOf(t, c)
		fs := followers(t, c)
		live, dead := fs[0], fs[1]
		mustPut(t, c, ld, "k", "v")
		through, err := c.Node(live)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := through.RemoveVoter(ctxT(t, 20*time.Second), "nosuch"); !errors.Is(err, kvstore.ErrNotVoter) {
			t.Fatalf("remove a non-voter: %v, want ErrNotVoter", err)
		}
		if _, err := through.RemoveVoter(ctxT(t, 20*time.Second), idOf(t, c, ld)); !errors.Is(err, kvstore.ErrRemoveLeader) {
			t.Fatalf("remove the leader: %v, want ErrRemoveLeader", err)
		}
		if err := c.Kill(dead); err != nil {
			t.Fatal(err)
		}
		waitNotMember(t, c, ld, idOf(t, c, dead))
		lnode, err := c.Node(ld)
		if err != nil {
			t.Fatal(err)
		}
		// Removing the live follower would leave the leader and a dead
		// voter: one live voter of two.
		_, err = lnode.RemoveVoter(ctxT(t, 20*time.Second), idOf(t, c, live))
		if !errors.Is(err, kvstore.ErrUnsafeRemoval) {
			t.Fatalf("remove the live follower while the other is dead: %v, want ErrUnsafeRemoval", err)
		}
		t.Logf("refused: %v", err)
		if got, want := votersOf(t, c, ld), sortedIDs(t, c, 0, 1, 2); !slices.Equal(got, want) {
			t.Fatalf("voter record = %v after a refused removal, want %v", got, want)
		}
		// The dead one may go: the leader and the live follower remain.
		if _, err := through.RemoveVoter(ctxT(t, 20*time.Second), idOf(t, c, dead)); err != nil {
			t.Fatalf("remove the dead voter: %v", err)
		}
		if got, want := votersOf(t, c, ld), sortedIDs(t, c, ld, live); !slices.Equal(got, want) {
			t.Fatalf("voter record = %v, want %v", got, want)
		}
		mustPut(t, c, live, "k", "w")
		// Two voters need both: with one more down nothing commits.
		if err := c.Kill(live); err != nil {
			t.Fatal(err)
		}
		if err := c.Put(ctxT(t, 30*time.Second), ld, "k", "x"); !errors.Is(err, kvstore.ErrNoQuorum) {
			t.Fatalf("put with 1 of 2 voters: %v, want ErrNoQuorum", err)
		}
	})
}

// With five voters, two of them dead, the cluster survives no further
// failure (two of five live); removing the two dead voters leaves three,
// which survive one more.
func TestRemovingDeadVotersRestoresFaultTolerance(t *testing.T) {
	eachBackend(t, func(t *testing.T, b Backend) {
		c := newCluster(t, b, 5)
		ld := leaderOf(t, c)
		fs := followers(t, c)
		for i := 0; i < 5; i++ {
			mustPut(t, c, i, fmt.Sprint("k", i), fmt.Sprint("v", i))
		}
		for _, n := range fs[:2] {
			if err := c.Kill(n); err != nil {
				t.Fatal(err)
			}
		}
		for _, n := range fs[:2] {
			waitNotMember(t, c, ld, idOf(t, c, n))
		}
		mustPut(t, c, fs[2], "k5", "v5")
		for _, n := range fs[:2] {
			if err := c.Remove(ctxT(t, 20*time.Second), n); err != nil {
				t.Fatalf("remove dead node %d: %v", n, err)
			}
		}
		if got, want := votersOf(t, c, ld), sortedIDs(t, c, ld, fs[2], fs[3]); !slices.Equal(got, want) {
			t.Fatalf("voter record = %v, want %v", got, want)
		}
		if err := c.Kill(fs[2]); err != nil {
			t.Fatal(err)
		}
		mustPut(t, c, fs[3], "k6", "v6")
		for i := 0; i <= 6; i++ {
			expectGet(t, c, ld, fmt.Sprint("k", i), fmt.Sprint("v", i))
			expectGet(t, c, fs[3], fmt.Sprint("k", i), fmt.Sprint("v", i))
		}
	})
}

// A removed node that cannot be told to leave (here it refuses the word)
// keeps running, caught up and reachable: exactly what maybeAddVoter adds.
// The leader must keep it out by itself. The check watches the record for
// 20 heartbeats (without the guard the leader re-adds it within one or two
// of them) and then lets the node leave.
func TestRemovedNodeIsNotAddedBack(t *testing.T) {
	eachBackend(t, func(t *testing.T, b Backend) {
		c := newCluster(t, b, 3, func(o *Options) {
			o.Node = func(cfg *node.Config) { cfg.Faults.IgnoreLeave = true }
		})
		ld := leaderOf(t, c)
		gone := followers(t, c)[0]
		id := idOf(t, c, gone)
		if err := c.Remove(ctxT(t, 20*time.Second), gone); err != nil {
			t.Fatal(err)
		}
		mustPut(t, c, ld, "k", "v") // the removed node catches up
		watch := 20 * node.DefaultConfig().Heartbeat
		end := time.Now().Add(watch)
		for time.Now().Before(end) {
			if v := votersOf(t, c, ld); slices.Contains(v, id) {
				t.Fatalf("the leader added removed node %s back: voters %v", id, v)
			}
			time.Sleep(20 * time.Millisecond)
		}
		nd, err := c.Node(gone)
		if err != nil {
			t.Fatal(err)
		}
		if nd.State() != node.StateOK || nd.Removed() {
			t.Fatalf("removed node: state %s, removed %v; want it running (it refuses to leave)", nd.State(), nd.Removed())
		}
	})
}

// A node replaced as docs/operations.md's procedure says (crashed for good, removed
// from the voters, a new node with a new id started) is retired: it leaves
// Active, Heal does not start it again and WaitHealthy does not wait for
// it, while the new node serves and holds what was written before.
func TestRetiredNodeStaysOutOfHealAndHealth(t *testing.T) {
	eachBackend(t, func(t *testing.T, b Backend) {
		c := newCluster(t, b, 3)
		ld := leaderOf(t, c)
		gone := followers(t, c)[0]
		mustPut(t, c, ld, "k", "v")
		if err := c.Kill(gone); err != nil {
			t.Fatal(err)
		}
		// The leader refuses the removal until it has seen the node's
		// Appends fail.
		soon.Succeeds(t, 20*time.Second, func() error { return c.Remove(ctxT(t, 10*time.Second), gone) })
		if err := c.Retire(gone); err != nil {
			t.Fatal(err)
		}
		added, err := c.NewNode(ctxT(t, 60*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if got := c.Active(); len(got) != 3 || slices.Contains(got, gone) || !slices.Contains(got, added) {
			t.Fatalf("active nodes %v, want 3 with %d and without %d", got, added, gone)
		}
		if err := c.Heal(ctxT(t, 60*time.Second)); err != nil {
			t.Fatalf("heal: %v", err)
		}
		if err := c.WaitHealthy(ctxT(t, 60*time.Second)); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Node(gone); !errors.Is(err, ErrRetired) {
			t.Fatalf("retired node after heal: %v, want ErrRetired", err)
		}
		if err := c.Restart(ctxT(t, 10*time.Second), gone); !errors.Is(err, ErrRetired) {
			t.Fatalf("restart of the retired node: %v, want ErrRetired", err)
		}
		if got, want := votersOf(t, c, ld), sortedIDs(t, c, c.Active()...); !slices.Equal(got, want) {
			t.Fatalf("voter record = %v, want the active nodes %v", got, want)
		}
		expectGet(t, c, added, "k", "v")
	})
}

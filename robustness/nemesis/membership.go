package nemesis

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kvstore/kvstore"
)

// The membership changes: a crashed node replaced, a live voter removed.
var (
	// ReplaceNode replaces a node as docs/operations.md's procedure does: it crashes
	// for good, is removed from the voters through another node (retried
	// while the leader refuses, for up to removeBudget; then the step is
	// given up and the heal restarts the node), is retired, and a new node
	// with a new id is started and waited for until it is a voter.
	ReplaceNode Fault = replaceNode{base{"replace-node", AtNodes}, oneNode{}}
	// RemoveVoter removes a live follower (Pick, counted from the leader)
	// from the voters, which stops it; then it is retired and a new node
	// takes its place, so that the cluster does not shrink.
	RemoveVoter Fault = removeVoter{base{"remove-voter", AtFollower}, pickFollower{}}
)

// removeBudget bounds how long ReplaceNode and RemoveVoter retry a removal
// the leader refuses (it must first see the crashed node's Appends fail, a
// new leader must be elected if the leader crashed). A variable for tests.
var removeBudget = 15 * time.Second

type replaceNode struct {
	base
	oneNode
}

// Inject hits the replaced node and the new one.
func (replaceNode) Inject(ctx context.Context, a Aimed, _ Step) (Hit, error) {
	nodes, err := replace(ctx, a.Target, a.Nodes[0], true)
	return Hit{Nodes: nodes}, err
}

type removeVoter struct {
	base
	pickFollower
}

// Inject hits the removed node and the new one.
func (removeVoter) Inject(ctx context.Context, a Aimed, st Step) (Hit, error) {
	nodes, err := replace(ctx, a.Target, follower(a.Active, a.Nodes[0], st.Pick), false)
	return Hit{Nodes: nodes}, err
}

// replace removes node n from the voters (crashing it first if crash),
// retires it and starts a new node in its place. It returns n and the new
// node. A removal the leader keeps refusing for removeBudget gives the
// step up: n stays in the cluster (the heal restarts it if it crashed).
func replace(ctx context.Context, t Target, n int, crash bool) ([]int, error) {
	if crash {
		if err := t.Kill(n); err != nil {
			return []int{n}, err
		}
	}
	rctx, cancel := context.WithTimeout(ctx, removeBudget)
	defer cancel()
	for {
		err := t.Remove(rctx, n)
		if err == nil || errors.Is(err, kvstore.ErrNotVoter) {
			// Not a voter (any more): an earlier attempt whose answer was
			// lost removed it.
			break
		}
		select {
		case <-rctx.Done():
			return []int{n}, fmt.Errorf("remove node %d: %w", n, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
	if err := t.Retire(n); err != nil {
		return []int{n}, err
	}
	nctx, ncancel := context.WithTimeout(ctx, time.Minute)
	defer ncancel()
	added, err := t.NewNode(nctx)
	if err != nil {
		return []int{n, added}, fmt.Errorf("new node in place of node %d: %w", n, err)
	}
	return []int{n, added}, nil
}

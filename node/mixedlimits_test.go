package node_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/cluster"
	"github.com/kvstore/kvstore/node"
	"github.com/kvstore/kvstore/rpc"
	"github.com/kvstore/kvstore/rpc/kvpb"
)

// TestALeadersSmallerLimitIsFinal: nodes may run with different limits (a
// flag that differs between nodes). A write through a node whose own
// MaxValueSize allows the value, to a leader whose MaxValueSize does not,
// is refused at once with the leader's ErrTooLarge. The leader refused it
// before appending and would refuse every retry, so retrying until the
// operation's time ran out and then answering ErrTimeout (as the node did
// before) would hide the cause.
func TestALeadersSmallerLimitIsFinal(t *testing.T) {
	c := cluster.StartTest(t, cluster.Options{Nodes: 3, Node: func(cfg *node.Config) {
		if cfg.ID == "n3" {
			cfg.MaxValueSize = 1000
		} else {
			cfg.MaxValueSize = 100
		}
	}})
	ld, fs := roles(t, c)
	wide, err := c.NewNode(ctxT(t, 30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	nd := nodeOf(t, c, wide)
	if err := nd.Set(ctxT(t, 10*time.Second), "small", strings.Repeat("v", 100)); err != nil {
		t.Fatalf("a value within both limits: %v", err)
	}

	err = nd.Set(ctxT(t, 20*time.Second), "big", strings.Repeat("v", 500))
	if !errors.Is(err, kvstore.ErrTooLarge) || !strings.Contains(err.Error(), "MaxValueSize 100") {
		t.Fatalf("a value over the leader's limit through node %d: %v; want ErrTooLarge naming MaxValueSize 100", wide, err)
	}
	if _, found, err := c.Get(ctxT(t, 10*time.Second), ld, "big"); err != nil || found {
		t.Fatalf("the refused write: found %v, %v; want not found", found, err)
	}

	// Only the leader's refusal is final: a node that does not lead
	// answers a forwarded write over its own limits ErrNotLeader (the
	// sender, whose view is behind, tries again at the real leader, whose
	// limits may be larger), not ErrTooLarge.
	_, err = nodeOf(t, c, fs[0]).PeerService().Write(ctxT(t, 10*time.Second), &kvpb.WriteRequest{Cluster: "default", Op: kvpb.Op_OP_SET, Key: "big", Value: strings.Repeat("v", 500), ReqId: "c.big"})
	if err = rpc.FromStatus(err); !errors.Is(err, kvstore.ErrNotLeader) {
		t.Fatalf("a write over its limits given to follower %d: %v; want ErrNotLeader", fs[0], err)
	}
}

package node_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/cluster"
	"github.com/kvstore/kvstore/node"
	"github.com/kvstore/kvstore/robustness/linearizability"
	"github.com/kvstore/kvstore/robustness/workload"
	"github.com/kvstore/kvstore/rpc"
	"github.com/kvstore/kvstore/rpc/kvpb"
)

// forwardedHistory runs concurrent readers and writers on every node of a
// 3-node cluster for d, so that the followers forward writes to the leader
// on their Forward streams, several at once, and returns the history and
// how many messages carried how many forwarded writes.
func forwardedHistory(t *testing.T, d time.Duration, seed uint64, faults node.Faults) (h []linearizability.Op, messages, writes int64) {
	t.Helper()
	c := cluster.StartTest(t, cluster.Options{Nodes: 3, Node: func(cfg *node.Config) { cfg.Faults = faults }})
	ld, _ := roles(t, c)
	if err := c.Put(ctxT(t, 10*time.Second), ld, "warm-up", "x"); err != nil {
		t.Fatal(err)
	}
	rec := linearizability.NewRecorder(nil)
	rec.Start()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	w := workload.Workload{Clients: 24, Keys: 16, OpTimeout: 5 * time.Second, Pause: time.Millisecond, Seed: seed}
	st := w.Run(ctx, c, rec)
	for i := range 3 {
		m, n := nodeOf(t, c, i).ForwardStats()
		messages += m
		writes += n
	}
	t.Logf("%d ops (%d failed, %d unknown); %d Forward messages carried %d operations", st.Ops, st.Failed, st.Unknown, messages, writes)
	return rec.History(), messages, writes
}

// TestForwardedWritesAreLinearizable: writes given to followers travel to
// the leader together on Forward streams, answered out of order, and what
// the clients see is still linearizable.
func TestForwardedWritesAreLinearizable(t *testing.T) {
	h, messages, writes := forwardedHistory(t, 2*time.Second, 1, node.Faults{})
	if messages == 0 || writes <= messages {
		t.Fatalf("%d Forward messages carried %d operations: the test did not forward several at once", messages, writes)
	}
	if res := linearizability.Check(context.Background(), h, time.Minute); !res.Ok {
		t.Fatalf("%v", res)
	}
}

// TestForwardCheckerCatchesMixedAnswers is the proof that the test above
// has teeth: with the answers of each Forward message handed to the wrong
// writes (Faults.RotateForwardAnswers), the history is not linearizable.
func TestForwardCheckerCatchesMixedAnswers(t *testing.T) {
	// Most messages carry one write (the bug needs two), so a run misses
	// it about one time in two; 8 misses in a row mean the test lost its
	// teeth.
	const attempts = 8
	for attempt := 1; attempt <= attempts; attempt++ {
		h, _, _ := forwardedHistory(t, 2*time.Second, uint64(attempt), node.Faults{RotateForwardAnswers: true})
		res := linearizability.Check(context.Background(), h, time.Minute)
		if !res.Ok && !res.Unknown {
			t.Logf("caught at attempt %d: %v", attempt, res)
			return
		}
	}
	t.Fatalf("forwarded writes' answers given to the wrong writes went unnoticed in %d attempts", attempts)
}

// TestForwardStreamHonoursRmiDown: rmi-down refuses a leader's inbound
// node-to-node calls, and with them the writes and fetches a follower
// sends on Forward streams it opened before: such a write is not applied,
// as a Write call would not be, and such a read is not answered.
func TestForwardStreamHonoursRmiDown(t *testing.T) {
	c := cluster.StartTest(t, cluster.Options{Nodes: 3})
	ld, fs := roles(t, c)
	f := fs[0]
	// Through the follower: its Forward stream to the leader opens.
	if err := c.Put(ctxT(t, 10*time.Second), f, "k", "before"); err != nil {
		t.Fatal(err)
	}
	if m, _ := nodeOf(t, c, f).ForwardStats(); m == 0 {
		t.Fatal("the follower sent no Forward message: the test proves nothing")
	}
	// Its fetch stream too: r is written at the leader, and read at the
	// follower only once rmi-down is on, so that it is not cached there.
	if _, _, err := c.Get(ctxT(t, 10*time.Second), f, "k"); err != nil {
		t.Fatal(err)
	}
	if err := c.Put(ctxT(t, 10*time.Second), ld, "r", "1"); err != nil {
		t.Fatal(err)
	}
	if err := c.RmiDown(ld); err != nil {
		t.Fatal(err)
	}
	if err := c.Put(ctxT(t, 1500*time.Millisecond), f, "k", "during"); err == nil {
		t.Fatal("a write through a follower was acknowledged while the leader's inbound RPC was down")
	}
	if v, _, err := c.Get(ctxT(t, 1500*time.Millisecond), f, "r"); err == nil {
		t.Fatalf("a read through a follower was answered (%q) from the leader while its inbound RPC was down", v)
	}
	if err := c.RmiUp(ld); err != nil {
		t.Fatal(err)
	}
	if v, _, _ := nodeOf(t, c, ld).LocalItem("k"); v != "before" {
		t.Fatalf("the leader holds k = %q after a write refused by rmi-down, want %q", v, "before")
	}
}

// TestForwardedOperationsPastTheirTimeRunNot: an operation of a Forward
// stream whose time (timeout_us) ran out before it started is answered
// with a timeout and not run: a write is not applied, a read not answered.
// One that arrives in time runs, as a write the leader appends on arrival.
func TestForwardedOperationsPastTheirTimeRunNot(t *testing.T) {
	c := cluster.StartTest(t, cluster.Options{Nodes: 3})
	ld, fs := roles(t, c)
	leader := nodeOf(t, c, ld)
	if err := c.Put(ctxT(t, 10*time.Second), ld, "read", "1"); err != nil {
		t.Fatal(err)
	}
	write := func(key string) *kvpb.ForwardedOp {
		return &kvpb.ForwardedOp{Id: 1, Op: &kvpb.ForwardedOp_Write{Write: &kvpb.WriteRequest{
			Cluster: leader.ClusterName(), Op: kvpb.Op_OP_SET, Key: key, Value: "v", ReqId: "c." + key, FromId: nodeOf(t, c, fs[0]).ID()}}}
	}
	fetch := &kvpb.ForwardedOp{Id: 2, Op: &kvpb.ForwardedOp_Fetch{Fetch: &kvpb.FetchRequest{
		Cluster: leader.ClusterName(), Key: "read", FromId: nodeOf(t, c, fs[0]).ID()}}}
	past := time.Now().Add(-time.Millisecond)
	for _, op := range []*kvpb.ForwardedOp{write("late"), fetch} {
		r := leader.ServeForwarded(ctxT(t, 10*time.Second), op, past)
		if err := rpc.UnmarshalStatus(r.Error); !errors.Is(rpc.FromStatus(err), kvstore.ErrTimeout) || r.Result != nil {
			t.Errorf("%v past its time: result %v, error %v; want a timeout and no result", op, r.Result, err)
		}
	}
	if _, found, _ := leader.LocalItem("late"); found {
		t.Error("a forwarded write past its time was applied")
	}
	for _, op := range []*kvpb.ForwardedOp{write("timely"), fetch} {
		r := leader.ServeForwarded(ctxT(t, 10*time.Second), op, time.Now().Add(10*time.Second))
		if r.Error != nil || r.Result == nil {
			t.Fatalf("%v in time: result %v, error %v", op, r.Result, rpc.UnmarshalStatus(r.Error))
		}
	}
	if v, _, _ := leader.LocalItem("timely"); v != "v" {
		t.Errorf("a forwarded write in time left %q, want %q", v, "v")
	}
}

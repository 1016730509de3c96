package client_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kvstore/kvstore/client"
	"github.com/kvstore/kvstore/cluster"
	"github.com/kvstore/kvstore/internal/soon"
	"github.com/kvstore/kvstore/node"
	"github.com/kvstore/kvstore/rpc/kvpb"
	"github.com/kvstore/kvstore/store"
)

// Small limits, so that the test's inputs stay small.
const (
	testMaxKey     = 16
	testMaxValue   = 64
	testMaxRequest = 256
)

func newLimitedCluster(t *testing.T, n, maxClientRequests int) *cluster.Cluster {
	t.Helper()
	return cluster.StartTest(t, cluster.Options{Nodes: n, Node: func(cfg *node.Config) {
		cfg.MaxKeySize = testMaxKey
		cfg.MaxValueSize = testMaxValue
		cfg.MaxRequestSize = testMaxRequest
		cfg.MaxClientRequests = maxClientRequests
	}})
}

// state is what every node holds: its applied position and its store.
func state(t *testing.T, c *cluster.Cluster) []string {
	t.Helper()
	var out []string
	for i := 0; i < c.Size(); i++ {
		nd, err := c.Node(i)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		fmt.Fprintf(&b, "n%d applied %v:", i, nd.Applied())
		for _, k := range nd.LocalKeys() {
			v, found, ver := nd.LocalItem(k)
			fmt.Fprintf(&b, " %q=%q/%v/%v", k, v, found, ver)
		}
		out = append(out, b.String())
	}
	return out
}

// waitReplicated waits until every node has applied what the leader has.
func waitReplicated(t *testing.T, c *cluster.Cluster) {
	t.Helper()
	soon.Succeeds(t, 10*time.Second, func() error {
		var first store.Version
		for i := 0; i < c.Size(); i++ {
			nd, err := c.Node(i)
			if err != nil {
				return err
			}
			if i == 0 {
				first = nd.Applied()
			} else if nd.Applied() != first {
				return fmt.Errorf("n%d applied %v, n0 %v", i, nd.Applied(), first)
			}
		}
		return nil
	})
}

// TestOverLimitRequestsAreRefusedAndChangeNothing sends keys, values and
// requests just over each limit to every node through the client API: each
// is refused with ErrTooLarge, a message naming the limit and gRPC code
// InvalidArgument, and no node's state changes. Inputs exactly at the
// limits are accepted.
func TestOverLimitRequestsAreRefusedAndChangeNothing(t *testing.T) {
	c := newLimitedCluster(t, 3, node.DefaultMaxClientRequests)
	atKey, atValue := strings.Repeat("k", testMaxKey), strings.Repeat("v", testMaxValue)
	cl := newClient(t, addr(t, c, 0))
	if err := cl.Put(ctxT(t, 10*time.Second), atKey, atValue); err != nil {
		t.Fatalf("key and value at the limits: %v", err)
	}
	if err := cl.Put(ctxT(t, 10*time.Second), "ok", "v1"); err != nil {
		t.Fatal(err)
	}
	waitReplicated(t, c)
	before := state(t, c)

	long := func(n int) string { return strings.Repeat("x", n) }
	cases := []struct {
		name  string
		call  func(ctx context.Context, cl *client.Client) error
		limit string
	}{
		{"put key over MaxKeySize", func(ctx context.Context, cl *client.Client) error { return cl.Put(ctx, long(testMaxKey+1), "v") }, "MaxKeySize"},
		{"get key over MaxKeySize", func(ctx context.Context, cl *client.Client) error {
			_, _, err := cl.Get(ctx, long(testMaxKey+1))
			return err
		}, "MaxKeySize"},
		{"delete key over MaxKeySize", func(ctx context.Context, cl *client.Client) error { return cl.Delete(ctx, long(testMaxKey+1)) }, "MaxKeySize"},
		{"value over MaxValueSize", func(ctx context.Context, cl *client.Client) error { return cl.Put(ctx, "ok", long(testMaxValue+1)) }, "MaxValueSize"},
		{"request over MaxRequestSize", func(ctx context.Context, cl *client.Client) error { return cl.Put(ctx, "ok", long(testMaxRequest)) }, "MaxRequestSize"},
		{"get request over MaxRequestSize", func(ctx context.Context, cl *client.Client) error {
			_, _, err := cl.Get(ctx, long(testMaxRequest))
			return err
		}, "MaxRequestSize"},
	}
	for i := 0; i < c.Size(); i++ {
		cl := newClient(t, addr(t, c, i))
		for _, tc := range cases {
			err := tc.call(ctxT(t, 10*time.Second), cl)
			if !errors.Is(err, client.ErrTooLarge) || !strings.Contains(err.Error(), tc.limit) {
				t.Errorf("node %d, %s: got %v, want ErrTooLarge naming %s", i, tc.name, err, tc.limit)
			}
			if errors.Is(err, client.ErrOutcomeUnknown) {
				t.Errorf("node %d, %s: a refused write reads as outcome unknown: %v", i, tc.name, err)
			}
		}
	}
	// The same through the raw gRPC API: the status code, and the Node API.
	cc := rawConn(t, addr(t, c, 1))
	_, err := kvpb.NewKVClient(cc).Put(ctxT(t, 10*time.Second), &kvpb.PutRequest{Key: "ok", Value: long(testMaxValue + 1)})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("raw put over MaxValueSize: code %v (%v), want InvalidArgument", status.Code(err), err)
	}
	if err := c.Put(ctxT(t, 10*time.Second), 2, "ok", long(testMaxValue+1)); !errors.Is(err, client.ErrTooLarge) {
		t.Errorf("Node.Set over MaxValueSize: %v, want ErrTooLarge", err)
	}

	if after := state(t, c); strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Fatalf("refused requests changed the nodes:\nbefore:\n%s\nafter:\n%s", strings.Join(before, "\n"), strings.Join(after, "\n"))
	}
	if v, found, err := cl.Get(ctxT(t, 10*time.Second), "ok"); err != nil || !found || v != "v1" {
		t.Fatalf("get ok = %q %v %v, want v1", v, found, err)
	}
}

// limitedLeader starts a 3-node cluster whose nodes allow each client
// connection maxClientRequests in flight, and returns it, its leader and a
// client of the leader that wrote k = v0.
func limitedLeader(t *testing.T, maxClientRequests int) (*cluster.Cluster, int, *client.Client) {
	t.Helper()
	c := newLimitedCluster(t, 3, maxClientRequests)
	ldr, _, err := c.Leader(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	cl := newClient(t, addr(t, c, ldr))
	if err := cl.Put(ctxT(t, 10*time.Second), "k", "v0"); err != nil {
		t.Fatal(err)
	}
	return c, ldr, cl
}

// TestClientOverMaxClientRequestsIsBusy saturates one client connection's
// allowance at the leader with writes slowed by a delayed link: the next
// request on that connection fails at once with ErrBusy (gRPC code
// ResourceExhausted), another connection is served meanwhile, and once the
// slow writes end the first connection is served again.
func TestClientOverMaxClientRequestsIsBusy(t *testing.T) {
	const allowed = 2
	c, ldr, busy := limitedLeader(t, allowed)
	// Under the node-to-node call timeout (1 s), so that the slow writes
	// succeed, slowly.
	if err := c.SetNodeDelay(ldr, 400*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	slow := make(chan error, allowed)
	for i := 0; i < allowed; i++ {
		go func() { slow <- busy.Put(ctxT(t, 20*time.Second), fmt.Sprint("slow", i), "v") }()
	}
	// A read of a key whose write is visible (not one being written) is
	// answered by the leader at once: it is refused as soon as both slow
	// writes are in flight.
	var refused error
	soon.Succeeds(t, 5*time.Second, func() error {
		_, _, err := busy.Get(ctxT(t, 5*time.Second), "k")
		if errors.Is(err, client.ErrBusy) {
			refused = err
			return nil
		}
		return fmt.Errorf("get on the saturated connection: %v, want ErrBusy", err)
	})
	if !strings.Contains(refused.Error(), "MaxClientRequests") || errors.Is(refused, client.ErrOutcomeUnknown) {
		t.Errorf("busy error %q: want one naming MaxClientRequests, definite", refused)
	}
	other := newClient(t, addr(t, c, ldr))
	if _, _, err := other.Get(ctxT(t, 5*time.Second), "k"); err != nil {
		t.Errorf("another connection was refused too: %v", err)
	}
	if err := c.SetNodeDelay(ldr, 0); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < allowed; i++ {
		if err := <-slow; err != nil {
			t.Errorf("slow write: %v", err)
		}
	}
	if _, _, err := busy.Get(ctxT(t, 5*time.Second), "k"); err != nil {
		t.Errorf("the connection is still refused after its writes ended: %v", err)
	}
}

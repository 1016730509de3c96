package client_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"

	"github.com/kvstore/kvstore/client"
	"github.com/kvstore/kvstore/cluster"
	"github.com/kvstore/kvstore/internal/soon"
	"github.com/kvstore/kvstore/node"
	"github.com/kvstore/kvstore/rpc/kvpb"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newCluster(t *testing.T, n int) *cluster.Cluster {
	t.Helper()
	return cluster.StartTest(t, cluster.Options{Nodes: n})
}

func addr(t *testing.T, c *cluster.Cluster, i int) string {
	t.Helper()
	nd, err := c.Node(i)
	if err != nil {
		t.Fatal(err)
	}
	return nd.Addr()
}

func newClient(t *testing.T, endpoints ...string) *client.Client {
	t.Helper()
	cl, err := client.New(client.Config{Endpoints: endpoints, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestPutGetDeleteThroughEveryNode(t *testing.T) {
	c := newCluster(t, 3)
	var cls []*client.Client
	for i := 0; i < 3; i++ {
		cls = append(cls, newClient(t, addr(t, c, i)))
	}
	for i, cl := range cls {
		if err := cl.Put(ctxT(t, 10*time.Second), fmt.Sprint("k", i), fmt.Sprint("v", i)); err != nil {
			t.Fatalf("put through node %d: %v", i, err)
		}
	}
	for j, cl := range cls {
		for i := 0; i < 3; i++ {
			v, found, err := cl.Get(ctxT(t, 10*time.Second), fmt.Sprint("k", i))
			if err != nil || !found || v != fmt.Sprint("v", i) {
				t.Fatalf("get k%d through node %d = %q %v %v", i, j, v, found, err)
			}
		}
	}
	if err := cls[2].Delete(ctxT(t, 10*time.Second), "k0"); err != nil {
		t.Fatal(err)
	}
	if _, found, err := cls[1].Get(ctxT(t, 10*time.Second), "k0"); err != nil || found {
		t.Fatalf("get after delete: found %v, %v", found, err)
	}
	st, err := cls[0].Status(ctxT(t, 10*time.Second))
	if err != nil || st.ID != "n0" || len(st.Members) != 3 || st.Leader == "" || st.Epoch <= 0 {
		t.Fatalf("status = %+v, %v", st, err)
	}
}

// deadEndpoint is an address where nothing listens.
func deadEndpoint(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := l.Addr().String()
	l.Close()
	return a
}

func TestFailsOverToTheNextEndpoint(t *testing.T) {
	c := newCluster(t, 3)
	// A dead endpoint first, then a node cut off from the coordinator, then
	// a healthy one: the client must end up there.
	if err := c.ZkDown(1); err != nil {
		t.Fatal(err)
	}
	cl := newClient(t, deadEndpoint(t), addr(t, c, 1), addr(t, c, 2))
	soon.Succeeds(t, 5*time.Second, func() error {
		_, _, err := c.Get(ctxT(t, time.Second), 1, "x")
		if err == nil {
			return errors.New("node 1 still serves")
		}
		return nil
	})
	if err := cl.Put(ctxT(t, 10*time.Second), "k", "v"); err != nil {
		t.Fatalf("put with two bad endpoints first: %v", err)
	}
	v, found, err := cl.Get(ctxT(t, 10*time.Second), "k")
	if err != nil || !found || v != "v" {
		t.Fatalf("get = %q %v %v", v, found, err)
	}
}

func TestRetriedWriteIsAppliedOnce(t *testing.T) {
	c := newCluster(t, 3)
	n1, _ := c.Node(1)
	n2, _ := c.Node(2)
	ctx := ctxT(t, 20*time.Second)
	if err := n1.SetWithID(ctx, "req-1", "k", "first"); err != nil {
		t.Fatal(err)
	}
	if err := n2.SetWithID(ctx, "req-2", "k", "second"); err != nil {
		t.Fatal(err)
	}
	// The retry of req-1, through another node, must not undo req-2.
	if err := n2.SetWithID(ctx, "req-1", "k", "first"); err != nil {
		t.Fatalf("retry of req-1: %v", err)
	}
	for i := 0; i < 3; i++ {
		if v, _, err := c.Get(ctx, i, "k"); err != nil || v != "second" {
			t.Fatalf("node %d reads %q (%v) after a retried write; want %q", i, v, err, "second")
		}
	}
}

func TestErrorsAreTyped(t *testing.T) {
	c := newCluster(t, 3)
	cl := newClient(t, addr(t, c, 0))
	if err := cl.Put(ctxT(t, 5*time.Second), "", "v"); !errors.Is(err, client.ErrBadRequest) {
		t.Fatalf("empty key: %v, want ErrBadRequest", err)
	}
	// Only the partitioned node as endpoint: the error says so.
	if err := c.ZkDown(0); err != nil {
		t.Fatal(err)
	}
	soon.Succeeds(t, 5*time.Second, func() error {
		_, _, err := cl.Get(ctxT(t, 2*time.Second), "k")
		if !errors.Is(err, client.ErrPartitioned) {
			return fmt.Errorf("get through a partitioned node: %v, want ErrPartitioned", err)
		}
		return nil
	})
	if err := c.ZkUp(0); err != nil {
		t.Fatal(err)
	}
	// No endpoint at all answers: ErrTimeout and ErrUnavailable.
	dead := newClient(t, deadEndpoint(t))
	_, _, err := dead.Get(ctxT(t, time.Second), "k")
	if !errors.Is(err, client.ErrTimeout) || !errors.Is(err, client.ErrUnavailable) {
		t.Fatalf("get with no live endpoint: %v, want ErrTimeout and ErrUnavailable", err)
	}
	// A write that never got a connection was not sent: not outcome
	// unknown.
	if err := dead.Put(ctxT(t, time.Second), "k", "v"); !errors.Is(err, client.ErrTimeout) || !errors.Is(err, client.ErrUnavailable) || errors.Is(err, client.ErrOutcomeUnknown) {
		t.Fatalf("put with no live endpoint: %v, want ErrTimeout and ErrUnavailable, not ErrOutcomeUnknown", err)
	}
	if err := dead.Delete(ctxT(t, time.Second), "k"); !errors.Is(err, client.ErrUnavailable) || errors.Is(err, client.ErrOutcomeUnknown) {
		t.Fatalf("delete with no live endpoint: %v, want ErrUnavailable, not ErrOutcomeUnknown", err)
	}
	dead.Close()
	if err := dead.Put(ctxT(t, time.Second), "k", "v"); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("put on a closed client: %v, want ErrClosed", err)
	}
}

// TestWriteLostMidCallIsOutcomeUnknown checks the other side of a refused
// connection: a write whose request reached a server that then dropped the
// connection without answering may have been applied.
func TestWriteLostMidCallIsOutcomeUnknown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	got := make(chan struct{}, 1)
	kvpb.RegisterKVServer(srv, &droppingKV{got: got})
	go func() { _ = srv.Serve(l) }()
	go func() {
		<-got // the request arrived: drop every connection
		srv.Stop()
	}()
	t.Cleanup(srv.Stop)
	cl := newClient(t, l.Addr().String())
	err = cl.Put(ctxT(t, 2*time.Second), "k", "v")
	if !errors.Is(err, client.ErrOutcomeUnknown) {
		t.Fatalf("put whose connection dropped after the request arrived: %v, want ErrOutcomeUnknown", err)
	}
}

// droppingKV receives a Put, says so, and never answers.
type droppingKV struct {
	kvpb.UnimplementedKVServer
	got chan struct{}
}

func (d *droppingKV) Put(ctx context.Context, _ *kvpb.PutRequest) (*kvpb.PutResponse, error) {
	select {
	case d.got <- struct{}{}:
	default:
	}
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestWritesGoToTheLeader: a write's answer names the leader, and the
// client sends its next writes there directly (no hop through a follower)
// while its reads stay on the endpoint it prefers. When that leader
// resigns, the next write finds the new one the same way.
func TestWritesGoToTheLeader(t *testing.T) {
	c := newCluster(t, 3)
	lead, _, err := c.Leader(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var eps []string
	for i := range 3 {
		if i != lead {
			eps = append(eps, addr(t, c, i))
		}
	}
	eps = append(eps, addr(t, c, lead)) // the leader last
	var mu sync.Mutex
	var tried []string
	cl, err := client.New(client.Config{Endpoints: eps, Timeout: 10 * time.Second, OnAttempt: func(ep string, _ time.Duration, _ error) {
		mu.Lock()
		tried = append(tried, ep)
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	attempts := func(what string, op func() error) []string {
		t.Helper()
		mu.Lock()
		tried = nil
		mu.Unlock()
		if err := op(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), tried...)
	}
	put := func(k string) func() error {
		return func() error { return cl.Put(ctxT(t, 10*time.Second), k, "v") }
	}
	get := func() error { _, _, err := cl.Get(ctxT(t, 10*time.Second), "k1"); return err }
	if got := attempts("first put", put("k1")); !slices.Equal(got, eps[:1]) {
		t.Fatalf("first put tried %v, want the first endpoint %v", got, eps[:1])
	}
	leaderEp := eps[2]
	for i := range 3 {
		if got := attempts("put", put(fmt.Sprint("k", i+2))); !slices.Equal(got, []string{leaderEp}) {
			t.Fatalf("put %d after the leader was named tried %v, want the leader %s", i, got, leaderEp)
		}
		if got := attempts("get", get); !slices.Equal(got, eps[:1]) {
			t.Fatalf("get tried %v, want the preferred endpoint %v", got, eps[:1])
		}
	}
	if err := c.Resign(ctxT(t, 10*time.Second), lead); err != nil {
		t.Fatal(err)
	}
	newLead, _, err := c.Leader(ctxT(t, 10*time.Second))
	if err != nil || newLead == lead {
		t.Fatalf("leader after resigning: %d %v", newLead, err)
	}
	// The old leader forwards the next write and names the new one.
	attempts("put after resign", put("k9"))
	if got := attempts("put", put("k10")); !slices.Equal(got, []string{addr(t, c, newLead)}) {
		t.Fatalf("put after the leader moved tried %v, want the new leader %s", got, addr(t, c, newLead))
	}
}

// TestClientRefusesAnEndpointOfAnotherCluster: a client given its cluster
// (Config.Cluster) whose endpoints mix in a node of another cluster never
// reads or writes that cluster: the node refuses every call (ErrWrongNode,
// naming both clusters) and the client moves on to the next endpoint.
func TestClientRefusesAnEndpointOfAnotherCluster(t *testing.T) {
	ours := newCluster(t, 1)
	other := cluster.StartTest(t, cluster.Options{Nodes: 1, Node: func(cfg *node.Config) { cfg.Cluster = "other" }})
	name := node.DefaultConfig().Cluster
	mixed, err := client.New(client.Config{Endpoints: []string{addr(t, other, 0), addr(t, ours, 0)}, Cluster: name, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer mixed.Close()
	for i := range 3 {
		if err := mixed.Put(ctxT(t, 10*time.Second), fmt.Sprint("k", i), "v"); err != nil {
			t.Fatalf("put %d through endpoints that mix two clusters: %v", i, err)
		}
	}
	if v, found, err := mixed.Get(ctxT(t, 10*time.Second), "k0"); err != nil || !found || v != "v" {
		t.Fatalf("get k0 = %q %v %v", v, found, err)
	}
	// The other cluster saw none of it (a client without Cluster checks
	// nothing, as before).
	if _, found, err := newClient(t, addr(t, other, 0)).Get(ctxT(t, 10*time.Second), "k0"); err != nil || found {
		t.Fatalf("the other cluster has k0: found %v, %v", found, err)
	}

	// Only the other cluster's node: every kind of call fails, definitely,
	// and at once (waiting would not cure it): one attempt each.
	var attempts atomic.Int32
	wrong, err := client.New(client.Config{Endpoints: []string{addr(t, other, 0)}, Cluster: name, Timeout: 30 * time.Second,
		OnAttempt: func(string, time.Duration, error) { attempts.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	defer wrong.Close()
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, client.ErrWrongNode) || errors.Is(err, client.ErrOutcomeUnknown) ||
			!strings.Contains(err.Error(), `cluster "other"`) || !strings.Contains(err.Error(), fmt.Sprintf("%q", name)) {
			t.Errorf("%s on a node of another cluster: %v, want ErrWrongNode naming both clusters, not outcome unknown", what, err)
		}
	}
	check("put", wrong.Put(ctxT(t, 10*time.Second), "k9", "v"))
	_, _, err = wrong.Get(ctxT(t, 10*time.Second), "k0")
	check("get", err)
	_, err = wrong.Status(ctxT(t, 10*time.Second))
	check("status", err)
	if n := attempts.Load(); n != 3 {
		t.Errorf("%d attempts for 3 calls to a node of another cluster, want one each", n)
	}
	if _, found, err := newClient(t, addr(t, other, 0)).Get(ctxT(t, 10*time.Second), "k9"); err != nil || found {
		t.Fatalf("the other cluster has k9: found %v, %v", found, err)
	}
}

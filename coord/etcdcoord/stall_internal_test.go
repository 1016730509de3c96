package etcdcoord

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/kvstore/kvstore/coord"
	"github.com/kvstore/kvstore/etcdembed"
	"github.com/kvstore/kvstore/faultproxy"
	"github.com/kvstore/kvstore/internal/soon"
	"github.com/kvstore/kvstore/internal/syncbuf"
)

// newProxied starts an etcd and a Coordinator that reaches it only
// through n proxies (n endpoints), which the test can black-hole, and
// waits until the client's connection through each is ready.
func newProxied(t *testing.T, n int) (*Coordinator, []*faultproxy.Proxy) {
	c, proxies, _ := newProxiedLog(t, n)
	return c, proxies
}

// newProxiedLog is newProxied, also returning what the client logged; the
// client also gets the extra endpoints (host:port), after the proxies'.
func newProxiedLog(t *testing.T, n int, extra ...string) (*Coordinator, []*faultproxy.Proxy, *syncbuf.Buffer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := etcdembed.DefaultConfig()
	cfg.Dir = t.TempDir()
	srv, err := etcdembed.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	var proxies []*faultproxy.Proxy
	var eps []string
	for range n {
		p, err := faultproxy.New(strings.TrimPrefix(srv.ClientURL(), "http://"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.Close() })
		proxies = append(proxies, p)
		eps = append(eps, "http://"+p.Addr())
	}
	addrs := make([]string, 0, n+len(extra))
	for _, p := range proxies {
		addrs = append(addrs, p.Addr())
	}
	for _, a := range extra {
		eps = append(eps, "http://"+a)
		addrs = append(addrs, a)
	}
	logs := &syncbuf.Buffer{}
	c, err := New(ctx, Config{Endpoints: eps, Prefix: "/stall/", Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, p := range proxies {
			p.SetBlackhole(false)
		}
		_ = c.Close()
	})
	maint := pb.NewMaintenanceClient(c.client.ActiveConnection())
	for _, a := range addrs {
		soon.Succeeds(t, 10*time.Second, func() error {
			pctx, cancel := context.WithTimeout(context.WithValue(ctx, pinKey{}, a), time.Second)
			defer cancel()
			_, err := maint.Status(pctx, &pb.StatusRequest{})
			return err
		})
	}
	return c, proxies, logs
}

// TestCallsSkipAMemberThatStopsAnswering gives the client three endpoints,
// three proxies to the one etcd, and black-holes one of them: a member that
// stopped answering with its connections open (SIGSTOP, a frozen VM). Round
// robin would send every third call there, each waiting out its attempt;
// the client marks the member after one such call and skips it until it
// answers again.
func TestCallsSkipAMemberThatStopsAnswering(t *testing.T) {
	c, proxies, logs := newProxiedLog(t, 3)
	stopped := proxies[1]
	stopped.SetBlackhole(true)
	const reads = 30
	var slow []string
	for i := range reads {
		start := time.Now()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		_, err := c.Voters(ctx)
		cancel()
		took := time.Since(start)
		if err != nil {
			t.Fatalf("read %d: %v after %v", i, err, took)
		}
		// An attempt that went to the stopped member waits out 500 ms.
		if took >= 400*time.Millisecond {
			slow = append(slow, fmt.Sprintf("read %d took %v", i, took.Round(time.Millisecond)))
		}
	}
	if len(slow) > 1 {
		t.Errorf("%d of %d reads waited on the member that stopped answering, want at most the first: %v", len(slow), reads, slow)
	}
	if m, _ := c.stalls.list(); !slices.Equal(m, []string{stopped.Addr()}) {
		t.Errorf("marked stalled: %v, want %v", m, []string{stopped.Addr()})
	}

	// Answering again, the member is unmarked within a few probes; the
	// client says both.
	stopped.SetBlackhole(false)
	soon.Succeeds(t, 10*time.Second, func() error {
		if m, _ := c.stalls.list(); len(m) != 0 {
			return fmt.Errorf("still marked stalled: %v", m)
		}
		return nil
	})
	for _, want := range []string{"etcd member stopped answering: calls skip it until it answers\" member=" + stopped.Addr(), "etcd member answers again\" member=" + stopped.Addr()} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
}

// stuckMember is a gRPC server that passes for an etcd member whose
// linearizable reads hang (its apply stuck, or cut from its leader before
// it notices): it answers what such a member answers by itself, Status
// (with a leader and no errors) and serializable reads, and holds every
// other call until the caller gives up. It counts the calls that reach
// it.
type stuckMember struct {
	pb.UnimplementedMaintenanceServer
	pb.UnimplementedKVServer
	addr  string
	calls atomic.Int64
}

func (m *stuckMember) Range(ctx context.Context, req *pb.RangeRequest) (*pb.RangeResponse, error) {
	m.calls.Add(1)
	if req.Serializable {
		return &pb.RangeResponse{Header: &pb.ResponseHeader{MemberId: 2, RaftTerm: 2}}, nil
	}
	<-ctx.Done()
	return nil, ctx.Err()
}

func newStuckMember(t *testing.T) *stuckMember {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := &stuckMember{addr: lis.Addr().String()}
	srv := grpc.NewServer(grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
		m.calls.Add(1)
		<-stream.Context().Done()
		return stream.Context().Err()
	}))
	pb.RegisterMaintenanceServer(srv, m)
	pb.RegisterKVServer(srv, m)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return m
}

func (m *stuckMember) Status(context.Context, *pb.StatusRequest) (*pb.StatusResponse, error) {
	m.calls.Add(1)
	return &pb.StatusResponse{Header: &pb.ResponseHeader{MemberId: 2}, Leader: 1, RaftTerm: 2}, nil
}

// TestProbeKeepsAMemberWhoseReadsHangMarked: a member that answers
// Status and serializable reads but whose linearizable reads hang stays
// marked through its probes, so calls keep skipping it. (Probed with
// Status, as before, it was unmarked at the first probe, and the next
// call sent there waited out its attempt; a serializable read would do
// the same.)
func TestProbeKeepsAMemberWhoseReadsHangMarked(t *testing.T) {
	stuck := newStuckMember(t)
	c, _, logs := newProxiedLog(t, 2, stuck.addr)
	// Calls go round robin: within a few, one lands on the stuck member,
	// waits out its attempt and marks it.
	soon.Succeeds(t, 20*time.Second, func() error {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		if _, err := c.Voters(ctx); err != nil {
			t.Fatalf("a read failed instead of moving on: %v", err)
		}
		if !marked(c, stuck.addr) {
			return fmt.Errorf("%s not marked yet", stuck.addr)
		}
		return nil
	})
	// Calls now skip it, so what reaches it is the probes: wait for
	// three, each given its time.
	probed := stuck.calls.Load()
	soon.Succeeds(t, 20*time.Second, func() error {
		n := stuck.calls.Load() - probed
		if !marked(c, stuck.addr) {
			t.Fatalf("%s unmarked after %d probes though its reads hang", stuck.addr, n)
		}
		if n < 3 {
			return fmt.Errorf("%d probes so far", n)
		}
		return nil
	})
	if !marked(c, stuck.addr) {
		t.Errorf("%s unmarked though its reads hang", stuck.addr)
	}
	if l := logs.String(); strings.Contains(l, "etcd member answers again") {
		t.Errorf("the client took the stuck member back:\n%s", l)
	}
}

// TestNewMovesOffAMemberWhoseReadsHang: New's first read, landing on a
// member that does not answer, moves on to another within an attempt
// instead of failing at DialTimeout. Which member the first read goes to
// is random, so New runs until one did land on a stuck member.
func TestNewMovesOffAMemberWhoseReadsHang(t *testing.T) {
	_, proxies := newProxied(t, 1)
	stuck := []*stuckMember{newStuckMember(t), newStuckMember(t)}
	eps := []string{"http://" + stuck[0].addr, "http://" + stuck[1].addr, "http://" + proxies[0].Addr()}
	for try := range 10 {
		before := stuck[0].calls.Load() + stuck[1].calls.Load()
		start := time.Now()
		c, err := New(t.Context(), Config{Endpoints: eps, Prefix: "/stall/", DialTimeout: 5 * time.Second, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatalf("New, try %d, after %v: %v", try, time.Since(start), err)
		}
		landed := ""
		for _, m := range stuck {
			if m.calls.Load() > 0 && marked(c, m.addr) {
				landed = m.addr
			}
		}
		_ = c.Close()
		if stuck[0].calls.Load()+stuck[1].calls.Load() > before {
			// A read landed on a stuck member, and New moved on; the
			// member is marked, so later calls skip it.
			if landed == "" {
				t.Fatalf("try %d: a read landed on a stuck member, which is not marked", try)
			}
			return
		}
	}
	t.Fatal("no try of New sent its first read to a stuck member")
}

// marked reports whether c's calls skip addr.
func marked(c *Coordinator, addr string) bool {
	m, _ := c.stalls.list()
	return slices.Contains(m, addr)
}

// TestWatchStreamNotesItsMember checks what a stuck watch relies on to mark
// its member: the etcd client opens a watch's stream with a context that
// keeps the watch's values, so the picker records the member in the
// watch's pickNote.
func TestWatchStreamNotesItsMember(t *testing.T) {
	c, ps := newProxied(t, 1)
	p := ps[0]
	wctx, stop := context.WithCancel(t.Context())
	defer stop()
	wctx, note := withPickNote(wctx)
	wch := c.client.Watch(ownStream(wctx), "/stall/k", clientv3.WithCreatedNotify())
	select {
	case wr := <-wch:
		if !wr.Created {
			t.Fatalf("first watch response %+v, want created", wr)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("watch not created")
	}
	soon.Succeeds(t, 5*time.Second, func() error {
		if a := note.addr.Load(); a == nil || *a != p.Addr() {
			return fmt.Errorf("noted %v, want %s", a, p.Addr())
		}
		return nil
	})
}

// TestStuckViewWatchMarksItsMember: a view watch whose member stops
// answering after the watch began (nothing else calls it) gives up on it
// and marks it, so the next watch goes elsewhere.
func TestStuckViewWatchMarksItsMember(t *testing.T) {
	c, ps := newProxied(t, 1)
	p := ps[0]
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	views := make(chan struct{}, 1)
	ended := make(chan bool, 1)
	go func() {
		ended <- c.watchOnce(ctx, func(coord.View) {
			select {
			case views <- struct{}{}:
			default:
			}
		})
	}()
	select {
	case <-views:
	case <-ctx.Done():
		t.Fatal("no view")
	}
	p.SetBlackhole(true)
	select {
	case <-ended:
	case <-ctx.Done():
		t.Fatal("the watch did not give up on a member that stopped answering")
	}
	if !marked(c, p.Addr()) {
		t.Errorf("%s not marked after its watch got stuck", p.Addr())
	}
}

// TestUncreatedCampaignWatchMarksItsMember: a campaign's watch that is
// not even created within turnRecheck marks its member.
func TestUncreatedCampaignWatchMarksItsMember(t *testing.T) {
	c, ps := newProxied(t, 1)
	p := ps[0]
	p.SetBlackhole(true)
	if err := c.waitDelete(t.Context(), "/stall/election/x", 1); err != nil {
		t.Fatal(err)
	}
	if !marked(c, p.Addr()) {
		t.Errorf("%s not marked after a watch on it was not created", p.Addr())
	}
}

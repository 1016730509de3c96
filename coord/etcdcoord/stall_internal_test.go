package etcdcoord

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"

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

// newProxiedLog is newProxied, also returning what the client logged.
func newProxiedLog(t *testing.T, n int) (*Coordinator, []*faultproxy.Proxy, *syncbuf.Buffer) {
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
	for _, p := range proxies {
		soon.Succeeds(t, 10*time.Second, func() error {
			pctx, cancel := context.WithTimeout(context.WithValue(ctx, pinKey{}, p.Addr()), time.Second)
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

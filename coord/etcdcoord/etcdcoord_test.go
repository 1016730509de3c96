package etcdcoord_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/kvstore/kvstore/clock"
	"github.com/kvstore/kvstore/coord"
	"github.com/kvstore/kvstore/coord/coordtest"
	"github.com/kvstore/kvstore/coord/etcdcoord"
	"github.com/kvstore/kvstore/etcdembed"
)

// endpoint is the client URL of the etcd server TestMain starts for all tests.
var endpoint string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	srv, err := etcdembed.Start(ctx, etcdembed.DefaultConfig())
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "start etcd:", err)
		return 1
	}
	endpoint = srv.ClientURL()
	code := m.Run()
	if err := srv.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "close etcd:", err)
		code = 1
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines leaked:", err)
			code = 1
		}
	}
	return code
}

// prefixes maps each *testing.T to its namespace; with -count=N every run of
// a test gets a fresh one on the shared server.
var prefixes sync.Map

// prefixFor gives each test its own namespace.
func prefixFor(t *testing.T) string {
	p, _ := prefixes.LoadOrStore(t, fmt.Sprintf("/coordtest/%s/%d/", strings.ReplaceAll(t.Name(), "/", "_"), time.Now().UnixNano()))
	return p.(string)
}

func newCoord(t *testing.T) *etcdcoord.Coordinator {
	t.Helper()
	return newCoordWith(t, etcdcoord.Config{})
}

// newCoordWith is newCoord with cfg's other fields.
func newCoordWith(t *testing.T, cfg etcdcoord.Config) *etcdcoord.Coordinator {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg.Endpoints, cfg.Prefix = []string{endpoint}, prefixFor(t)
	c, err := etcdcoord.New(ctx, cfg)
	if err != nil {
		t.Fatalf("etcdcoord.New: %v", err)
	}
	return c
}

func TestConformance(t *testing.T) {
	coordtest.Run(t, func(t *testing.T) coord.Coordinator { return newCoord(t) })
}

func TestConformanceClock(t *testing.T) {
	coordtest.RunClock(t, func(t *testing.T, clk clock.Clock) coord.Coordinator {
		return newCoordWith(t, etcdcoord.Config{Clock: clk})
	})
}

// rawClient is a plain etcd client for reaching behind the Coordinator.
func rawClient(t *testing.T) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func newSession(t *testing.T, c coord.Coordinator) coord.Session {
	t.Helper()
	return newSessionTTL(t, c, coordtest.TTL)
}

// newSessionTTL is newSession with a TTL of the caller's.
func newSessionTTL(t *testing.T, c coord.Coordinator, ttl time.Duration) coord.Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := c.NewSession(ctx, ttl)
	if err != nil {
		t.Fatalf("NewSession: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Close(ctx)
	})
	return s
}

// leaseOf finds the lease behind a session through its member entry.
func leaseOf(t *testing.T, cli *clientv3.Client, s coord.Session, id string) clientv3.LeaseID {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Register(ctx, coord.Member{ID: id, Addr: "addr-" + id}); err != nil {
		t.Fatalf("Register: %v", err)
	}
	resp, err := cli.Get(ctx, prefixFor(t)+"members/"+id)
	if err != nil || len(resp.Kvs) != 1 || resp.Kvs[0].Lease == 0 {
		t.Fatalf("member key: %v %v", resp, err)
	}
	return clientv3.LeaseID(resp.Kvs[0].Lease)
}

// A lease revoked behind the session's back ends it with ErrSessionExpired,
// and a Campaign in flight returns promptly.
func TestRevokedLeaseExpiresSession(t *testing.T) {
	c := newCoord(t)
	t.Cleanup(func() { c.Close() })
	cli := rawClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	leader, s := newSession(t, c), newSession(t, c)
	if _, err := leader.Campaign(ctx, "leader"); err != nil {
		t.Fatalf("Campaign: %v", err)
	}
	lease := leaseOf(t, cli, s, "s")
	campaignErr := make(chan error, 1)
	go func() {
		_, err := s.Campaign(ctx, "s")
		campaignErr <- err
	}()

	changed := s.Changed()
	if _, err := cli.Revoke(ctx, lease); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	select {
	case <-s.Done():
	case <-time.After(coordtest.TTL):
		t.Fatalf("session not Done within %v of its lease being revoked", coordtest.TTL)
	}
	if !errors.Is(s.Err(), coord.ErrSessionExpired) {
		t.Fatalf("Err = %v, want ErrSessionExpired", s.Err())
	}
	select {
	case <-changed:
	default:
		t.Fatal("Changed not signaled on expiry")
	}
	if s.Healthy() || clock.System().Now().Before(s.Deadline()) {
		t.Fatalf("expired session: Healthy=%v, deadline in %v", s.Healthy(), s.Deadline().Sub(clock.System().Now()))
	}
	select {
	case err := <-campaignErr:
		if !errors.Is(err, coord.ErrSessionExpired) {
			t.Fatalf("Campaign = %v, want ErrSessionExpired", err)
		}
	case <-time.After(time.Second):
		t.Fatal("Campaign did not return after the session expired")
	}
	if err := s.Register(ctx, coord.Member{ID: "s", Addr: "x"}); !errors.Is(err, coord.ErrSessionExpired) {
		t.Fatalf("Register after expiry = %v, want ErrSessionExpired", err)
	}
}

// SetVoters is fenced by etcd itself, not only by the session's own idea of
// its leadership: with the election key deleted behind its back, the
// transaction fails with ErrNotLeader.
func TestSetVotersFencedByEtcd(t *testing.T) {
	c := newCoord(t)
	t.Cleanup(func() { c.Close() })
	cli := rawClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if err := c.CreateVoters(ctx, []string{"a"}); err != nil {
		t.Fatalf("CreateVoters: %v", err)
	}
	v, err := c.Voters(ctx)
	if err != nil {
		t.Fatalf("Voters: %v", err)
	}
	s := newSession(t, c)
	epoch, err := s.Campaign(ctx, "a")
	if err != nil {
		t.Fatalf("Campaign: %v", err)
	}
	if _, err := cli.Delete(ctx, prefixFor(t)+"election/", clientv3.WithPrefix()); err != nil {
		t.Fatalf("delete election keys: %v", err)
	}
	if err := s.SetVoters(ctx, epoch, v, []string{"a", "b"}); !errors.Is(err, coord.ErrNotLeader) {
		t.Fatalf("SetVoters without the election key = %v, want ErrNotLeader", err)
	}
	// The refused write left the record alone.
	if got, err := c.Voters(ctx); err != nil || got.Version != v.Version {
		t.Fatalf("record changed: %+v %v", got, err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg   etcdcoord.Config
		field string
	}{
		{etcdcoord.Config{}, "Endpoints"},
		{etcdcoord.Config{Endpoints: []string{"x"}, Prefix: "/no-slash"}, "Prefix"},
		{etcdcoord.Config{Endpoints: []string{"x"}, DriftMargin: 1}, "DriftMargin"},
		{etcdcoord.Config{Endpoints: []string{"x"}, DriftMargin: -0.1}, "DriftMargin"},
		{etcdcoord.Config{Endpoints: []string{"x"}, DialTimeout: -1}, "DialTimeout"},
	} {
		if err := tc.cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("Validate(%+v) = %v, want an error naming %s", tc.cfg, err, tc.field)
		}
	}
}

func TestNewFailsWhenUnreachable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	c, err := etcdcoord.New(ctx, etcdcoord.Config{Endpoints: []string{"127.0.0.1:1"}, DialTimeout: 500 * time.Millisecond})
	if err == nil {
		c.Close()
		t.Fatal("New succeeded with nothing listening")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("New took %v to fail, want about DialTimeout", d)
	}
}

// cutProxy is a TCP proxy whose connections can be cut: while down it
// closes every connection, existing and new. (A test-local stand-in for the
// project's fault-injecting proxy.)
type cutProxy struct {
	l      net.Listener
	target string

	mu    sync.Mutex
	down  bool
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	p := &cutProxy{l: l, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() {
		l.Close()
		p.setDown(true)
		p.wg.Wait()
	})
	return p
}

func (p *cutProxy) addr() string { return p.l.Addr().String() }

func (p *cutProxy) serve() {
	defer p.wg.Done()
	for {
		in, err := p.l.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.down {
			p.mu.Unlock()
			in.Close()
			continue
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			in.Close()
			continue
		}
		p.conns[in], p.conns[out] = struct{}{}, struct{}{}
		p.wg.Add(2)
		p.mu.Unlock()
		go p.pipe(in, out)
		go p.pipe(out, in)
	}
}

func (p *cutProxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	io.Copy(dst, src)
	dst.Close()
	src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}

// setDown cuts every connection (and refuses new ones) or lets them through.
func (p *cutProxy) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for c := range p.conns {
			c.Close()
		}
	}
}

// A cut connection makes the session unhealthy at once and freezes its
// deadline; restored within the TTL, the session lives on and is healthy
// again within about a second; cut for longer, its deadline passes before
// etcd deletes its entries, and it ends with ErrSessionExpired.
func TestConnectionCut(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	proxy := newCutProxy(t, strings.TrimPrefix(endpoint, "http://"))
	c, err := etcdcoord.New(ctx, etcdcoord.Config{Endpoints: []string{proxy.addr()}, Prefix: prefixFor(t)})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	// What is checked is that a short cut does not end the session; a
	// reconnect on a busy machine may take a good part of a 2 s TTL.
	const ttl = 4 * time.Second
	s := newSessionTTL(t, c, ttl)
	if err := s.Register(ctx, coord.Member{ID: "n1", Addr: "a1"}); err != nil {
		t.Fatalf("Register: %v", err)
	}
	observer := newCoord(t)
	t.Cleanup(func() { observer.Close() })
	views := newSession(t, observer).Watch(ctx)
	coordtest.WaitView(t, views, coordtest.Slack, "n1 registered", func(v coord.View) error {
		if v.Members["n1"] != "a1" {
			return fmt.Errorf("members %v", v.Members)
		}
		return nil
	})

	// A short cut.
	proxy.setDown(true)
	// Unhealthy (an early warning) well before the deadline could pass.
	coordtest.WaitFor(t, ttl/4, "unhealthy after the cut", func() error {
		if s.Healthy() {
			return errors.New("still Healthy")
		}
		return nil
	})
	time.Sleep(coordtest.TTL / 4) // the outage itself, not an assertion
	restored := time.Now()
	proxy.setDown(false)
	// Healthy again before the session could have expired.
	coordtest.WaitFor(t, ttl-coordtest.TTL/4, "healthy after the connection is restored", func() error {
		if !s.Healthy() {
			return errors.New("not Healthy")
		}
		return nil
	})
	t.Logf("healthy again %v after the connection was restored", time.Since(restored).Round(time.Millisecond))
	if err := s.Err(); err != nil {
		t.Fatalf("session ended by a short cut: %v", err)
	}
	if !clock.System().Now().Before(s.Deadline()) {
		t.Fatal("deadline not renewed after the cut")
	}

	// A cut longer than the TTL.
	proxy.setDown(true)
	coordtest.WaitFor(t, ttl/4, "unhealthy after the second cut", func() error {
		if s.Healthy() {
			return errors.New("still Healthy")
		}
		return nil
	})
	frozen := s.Deadline()
	coordtest.WaitView(t, views, ttl+coordtest.Slack, "n1 expired", func(v coord.View) error {
		if _, ok := v.Members["n1"]; ok {
			return fmt.Errorf("members %v", v.Members)
		}
		return nil
	})
	gone := clock.System().Now()
	if d := s.Deadline(); d != frozen {
		t.Fatalf("deadline moved from %v to %v while cut off", frozen, d)
	}
	if !frozen.Before(gone) {
		t.Fatalf("etcd deleted the session's entries %v before its local deadline", frozen.Sub(gone))
	}
	t.Logf("local deadline passed %v before etcd deleted the member", gone.Sub(frozen).Round(time.Millisecond))
	proxy.setDown(false)
	select {
	case <-s.Done():
	case <-time.After(coordtest.Slack):
		t.Fatal("session not Done after reconnecting to find its lease gone")
	}
	if !errors.Is(s.Err(), coord.ErrSessionExpired) {
		t.Fatalf("Err = %v, want ErrSessionExpired", s.Err())
	}
}

// TestCampaignWithdrawsALostPut: a Campaign whose put was applied but whose
// answer was lost (here: the key is put behind its back, with its lease,
// and the Campaign's ctx is already canceled, so its own put never
// answers) deletes the key before it returns. Before, the key stayed: a
// candidacy no one runs, which leads once the keys before it are gone.
func TestCampaignWithdrawsALostPut(t *testing.T) {
	c := newCoord(t)
	t.Cleanup(func() { c.Close() })
	cli := rawClient(t)
	s := newSession(t, c)
	lease := leaseOf(t, cli, s, "b")
	key := fmt.Sprintf("%selection/%x", prefixFor(t), lease)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, key, "b", clientv3.WithLease(lease)); err != nil {
		t.Fatal(err)
	}
	canceled, cancelNow := context.WithCancel(ctx)
	cancelNow()
	if _, err := s.Campaign(canceled, "b"); err == nil {
		t.Fatal("Campaign with a canceled ctx succeeded")
	}
	resp, err := cli.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 0 {
		t.Fatalf("the election key %s is still there after the failed Campaign returned: %v", key, resp.Kvs)
	}
}

// TestKeepAliveEverySixthOfTheTTL: a session keeps its lease alive every
// TTL/6, so its deadline stays at least 0.9 TTL - TTL/6 ahead (4.4 s of a
// 6 s TTL), less a keep-alive's answer time. That is how long a node rides
// out a coordinator that stopped answering (an etcd leader paused, until
// the others elect another); keeping alive every TTL/3, as etcd's own
// client does, it fell to 3.4 s. The check is midway, at 3.9 s.
func TestKeepAliveEverySixthOfTheTTL(t *testing.T) {
	const ttl = 6 * time.Second
	c := newCoord(t)
	t.Cleanup(func() { c.Close() })
	s := newSessionTTL(t, c, ttl)
	clk := clock.System()
	least := ttl
	for end := time.Now().Add(ttl / 2); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		least = min(least, s.Deadline().Sub(clk.Now()))
	}
	if want := ttl*9/10 - ttl/4; least < want {
		t.Fatalf("the deadline came within %v of now over %v, want at least %v", least.Round(time.Millisecond), ttl/2, want)
	}
	t.Logf("the deadline stayed at least %v ahead", least.Round(time.Millisecond))
}

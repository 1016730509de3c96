package etcdembed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/kvstore/kvstore/internal/syncbuf"
)

// startCluster starts an n-member cluster on free loopback ports, the members
// concurrently, and waits until all are ready. If a port it picked was taken
// meanwhile, it starts over on other ports. The members are closed when the
// test ends (Close is idempotent).
func startCluster(ctx context.Context, t *testing.T, n int, mutate func(i int, cfg *MemberConfig)) []*Server {
	t.Helper()
	var err error
	for range startAttempts {
		var srvs []*Server
		if srvs, err = startClusterOnce(ctx, t, n, mutate); err == nil {
			t.Cleanup(func() {
				for _, s := range srvs {
					if err := s.Close(); err != nil {
						t.Errorf("Close: %v", err)
					}
				}
			})
			return srvs
		}
		if !isAddrInUse(err) || ctx.Err() != nil {
			break
		}
	}
	t.Fatalf("start %d-member cluster: %v", n, err)
	return nil
}

func startClusterOnce(ctx context.Context, t *testing.T, n int, mutate func(i int, cfg *MemberConfig)) ([]*Server, error) {
	ports, err := freePorts(2 * n)
	if err != nil {
		return nil, err
	}
	cfgs := make([]MemberConfig, n)
	var initial []string
	for i := range cfgs {
		cfg := DefaultMemberConfig()
		cfg.Name = fmt.Sprintf("m%d", i)
		cfg.ListenClientURLs = []url.URL{{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[2*i])}}
		cfg.ListenPeerURLs = []url.URL{{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[2*i+1])}}
		cfg.ClusterToken = t.Name()
		initial = append(initial, cfg.Name+"="+cfg.ListenPeerURLs[0].String())
		cfgs[i] = cfg
	}
	// A member that cannot bind its ports ends the attempt at once, so that
	// the others do not wait for it until ctx ends.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	srvs := make([]*Server, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range cfgs {
		cfgs[i].InitialCluster = strings.Join(initial, ",")
		if mutate != nil {
			mutate(i, &cfgs[i])
		}
		wg.Go(func() {
			if srvs[i], errs[i] = StartMember(ctx, cfgs[i]); errs[i] != nil {
				cancel()
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, s := range srvs {
			if s != nil {
				s.Close()
			}
		}
		// Prefer the port error to the cancellations it caused.
		for _, e := range errs {
			if e != nil && isAddrInUse(e) {
				return nil, e
			}
		}
		return nil, err
	}
	return srvs, nil
}

func newClient(t *testing.T, endpoints ...string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// TestMemberCluster forms a 3-member cluster in this process, writes through
// one member and reads through another, then stops the leader: the other two
// still form a quorum, elect a new leader and serve writes.
func TestMemberCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var logs syncbuf.Buffer
	srvs := startCluster(ctx, t, 3, func(i int, cfg *MemberConfig) {
		if i == 0 {
			cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		}
	})

	cli0 := newClient(t, srvs[0].ClientURL())
	if _, err := cli0.Put(ctx, "k", "v1"); err != nil {
		t.Fatalf("put via m0: %v", err)
	}
	cli1 := newClient(t, srvs[1].ClientURL())
	resp, err := cli1.Get(ctx, "k")
	if err != nil {
		t.Fatalf("get via m1: %v", err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v1" {
		t.Fatalf("get via m1 returned %v, want k=v1", resp.Kvs)
	}
	if err := cli0.Close(); err != nil {
		t.Fatalf("client close: %v", err)
	}
	if err := cli1.Close(); err != nil {
		t.Fatalf("client close: %v", err)
	}

	// Stop the leader.
	lead := -1
	for i, s := range srvs {
		if s.etcd.Server.MemberID() == s.etcd.Server.Leader() {
			lead = i
		}
	}
	if lead < 0 {
		t.Fatal("no member is the leader")
	}
	start := time.Now()
	if err := srvs[lead].Close(); err != nil {
		t.Fatalf("close leader m%d: %v", lead, err)
	}
	select {
	case <-srvs[lead].Done():
	default:
		t.Fatal("Done not closed after Close")
	}
	t.Logf("closed leader m%d in %v", lead, time.Since(start).Round(time.Millisecond))

	var rest []*Server
	var endpoints []string
	for i, s := range srvs {
		if i != lead {
			rest = append(rest, s)
			endpoints = append(endpoints, s.ClientURL())
		}
	}
	cli := newClient(t, endpoints...)
	deadline := time.Now().Add(10 * time.Second)
	for {
		pctx, pcancel := context.WithTimeout(ctx, time.Second)
		_, err := cli.Put(pctx, "k", "v2")
		pcancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("put with 2 of 3 members: %v", err)
		}
	}
	for _, s := range rest {
		c := newClient(t, s.ClientURL())
		resp, err := c.Get(ctx, "k")
		if err != nil {
			t.Fatalf("get via %s: %v", s.ClientURL(), err)
		}
		if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v2" {
			t.Fatalf("get via %s returned %v, want k=v2", s.ClientURL(), resp.Kvs)
		}
		if err := c.Close(); err != nil {
			t.Fatalf("client close: %v", err)
		}
	}
	if err := cli.Close(); err != nil {
		t.Fatalf("client close: %v", err)
	}

	// Close the other two at once: the leader's transferee is stopping too,
	// so the hand-over must give up after two election timeouts instead of
	// etcd's 6 s request timeout.
	start = time.Now()
	var wg sync.WaitGroup
	for _, s := range rest {
		wg.Go(func() {
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
	wg.Wait()
	if took := time.Since(start); took > 4*time.Second {
		t.Errorf("closing the last two members took %v", took)
	} else {
		t.Logf("closed the last two members in %v", took.Round(time.Millisecond))
	}
	for _, s := range srvs {
		if _, err := os.Stat(s.Dir()); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("temp data dir %s still there after Close (stat: %v)", s.Dir(), err)
		}
	}
	waitGoroutinesGone(t, 10*time.Second)
	// A member's logger gets etcd's info records, not only errors.
	if !strings.Contains(logs.String(), "level=INFO msg=\"etcd: ") {
		t.Errorf("m0 logged no etcd info record:\n%s", logs.String())
	}
}

// waitGoroutinesGone waits until no goroutine is left but the test's. A
// request between two members of one process can outlive their Close by up to
// etcd's peer read timeout (rafthttp.ConnReadTimeout, 5 s): the peer
// listener's connections re-arm their read deadline on every read, which can
// override the one net/http sets to end its background read, so the server
// side waits for that read and the client side for the response.
func waitGoroutinesGone(t *testing.T, within time.Duration) {
	t.Helper()
	start := time.Now()
	for {
		err := goleak.Find() // retries for about a second itself
		if err == nil {
			t.Logf("goroutines gone %v after Close", time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Since(start) > within {
			t.Fatalf("goroutines left %v after Close: %v", within, err)
		}
	}
}

// TestMemberWaitsForQuorum starts one member of a 3-member cluster whose
// peers never come: StartMember keeps waiting until ctx ends, then fails and
// leaves nothing behind.
func TestMemberWaitsForQuorum(t *testing.T) {
	ports, err := freePorts(4)
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultMemberConfig()
	cfg.Name = "a"
	cfg.ListenClientURLs = []url.URL{{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[0])}}
	cfg.ListenPeerURLs = []url.URL{{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[1])}}
	cfg.InitialCluster = fmt.Sprintf("a=http://127.0.0.1:%d,b=http://127.0.0.1:%d,c=http://127.0.0.1:%d", ports[1], ports[2], ports[3])
	const wait = 1500 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	start := time.Now()
	srv, err := StartMember(ctx, cfg)
	if err == nil {
		srv.Close()
		t.Fatal("a member without quorum became ready")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("StartMember: %v, want context.DeadlineExceeded", err)
	}
	if elapsed := time.Since(start); elapsed < wait {
		t.Fatalf("StartMember gave up after %v, before ctx ended", elapsed)
	}
}

func TestMemberConfigValidate(t *testing.T) {
	any0 := []url.URL{{Scheme: "http", Host: "0.0.0.0:2379"}}
	for _, tc := range []struct {
		mutate func(*MemberConfig)
		field  string
	}{
		{func(c *MemberConfig) { c.ElectionTimeout = c.HeartbeatInterval }, "ElectionTimeout"},
		{func(c *MemberConfig) { c.ListenClientURLs = nil }, "ListenClientURLs"},
		{func(c *MemberConfig) { c.ListenPeerURLs = []url.URL{{Scheme: "https", Host: "127.0.0.1:2380"}} }, "ListenPeerURLs"},
		{func(c *MemberConfig) { c.AdvertisePeerURLs = []url.URL{{Scheme: "http", Host: "127.0.0.1"}} }, "AdvertisePeerURLs"},
		{func(c *MemberConfig) { c.ListenClientURLs = any0 }, "AdvertiseClientURLs"},
		{func(c *MemberConfig) { c.ListenPeerURLs = any0 }, "AdvertisePeerURLs"},
		{func(c *MemberConfig) { c.ClusterState = "bogus" }, "ClusterState"},
		{func(c *MemberConfig) { c.ClientTLS = TLSFiles{CertFile: "c.pem"} }, "ClientTLS"},
		{func(c *MemberConfig) { c.PeerTLS = TLSFiles{CAFile: "ca.pem"} }, "PeerTLS"},
		{func(c *MemberConfig) { c.ClientTLS = TLSFiles{CertFile: "c.pem", KeyFile: "k.pem"} }, "ListenClientURLs"},
		{func(c *MemberConfig) {
			c.ClientTLS = TLSFiles{CertFile: "c.pem", KeyFile: "k.pem"}
			c.ListenClientURLs = []url.URL{{Scheme: "https", Host: "127.0.0.1:2379"}}
			c.AdvertiseClientURLs = []url.URL{{Scheme: "http", Host: "127.0.0.1:2379"}}
		}, "AdvertiseClientURLs"},
	} {
		cfg := DefaultMemberConfig()
		tc.mutate(&cfg)
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("Validate(%+v) = %v, want an error naming %s", cfg, err, tc.field)
		}
		if _, err := StartMember(context.Background(), cfg); err == nil {
			t.Errorf("StartMember accepted invalid config %+v", cfg)
		}
	}
	cfg := DefaultMemberConfig()
	if err := cfg.Validate(); err != nil {
		t.Errorf("DefaultMemberConfig().Validate() = %v", err)
	}
	cfg.ListenClientURLs = any0
	cfg.AdvertiseClientURLs = []url.URL{{Scheme: "http", Host: "10.0.0.1:2379"}}
	if err := cfg.Validate(); err != nil {
		t.Errorf("listening on 0.0.0.0 with an advertised host: %v", err)
	}
	cfg = DefaultMemberConfig()
	cfg.ClientTLS = TLSFiles{CertFile: "c.pem", KeyFile: "k.pem", CAFile: "ca.pem"}
	cfg.ListenClientURLs = []url.URL{{Scheme: "https", Host: "127.0.0.1:2379"}}
	cfg.PeerTLS = TLSFiles{CertFile: "c.pem", KeyFile: "k.pem"}
	cfg.ListenPeerURLs = []url.URL{{Scheme: "https", Host: "127.0.0.1:2380"}}
	if err := cfg.Validate(); err != nil {
		t.Errorf("https URLs with TLS: %v", err)
	}

	for _, tc := range []struct {
		in   string
		want int // URLs; 0: an error
	}{
		{"http://127.0.0.1:2379", 1},
		{"http://127.0.0.1:2379, http://[::1]:2379", 2},
		{"http://host.example:2380/", 1},
		{"", 0},
		{"http://127.0.0.1:2379,", 0},
		{"127.0.0.1:2379", 0},
		{"https://127.0.0.1:2379", 1},
		{"ftp://127.0.0.1:2379", 0},
		{"http://127.0.0.1", 0},
		{"http://127.0.0.1:2379/x", 0},
	} {
		urls, err := ParseURLs(tc.in)
		if (err == nil) != (tc.want > 0) || len(urls) != tc.want {
			t.Errorf("ParseURLs(%q) = %v, %v; want %d URLs", tc.in, urls, err, tc.want)
		}
	}
}

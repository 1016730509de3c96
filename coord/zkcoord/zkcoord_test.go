package zkcoord_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"go.uber.org/goleak"

	"github.com/kvstore/kvstore/clock"
	"github.com/kvstore/kvstore/coord"
	"github.com/kvstore/kvstore/coord/coordtest"
	"github.com/kvstore/kvstore/coord/zkcoord"
	"github.com/kvstore/kvstore/faultproxy"
	"github.com/kvstore/kvstore/zkserver"
)

// servers are started once, on first use, and closed by TestMain.
var servers struct {
	mu         sync.Mutex
	standalone *zkserver.Ensemble
	ensemble   *zkserver.Ensemble
}

func TestMain(m *testing.M) {
	code := m.Run()
	servers.mu.Lock()
	for _, e := range []*zkserver.Ensemble{servers.standalone, servers.ensemble} {
		if e != nil {
			if err := e.Close(); err != nil {
				fmt.Fprintln(os.Stderr, "close ZooKeeper:", err)
				code = 1
			}
		}
	}
	servers.mu.Unlock()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines leaked:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// standalone returns the shared standalone server, starting it on first use.
// It skips the test where ZooKeeper is not installed (and fails it where
// KVSTORE_REQUIRE_ZOOKEEPER is set).
func standalone(t *testing.T) *zkserver.Ensemble {
	return shared(t, &servers.standalone, 1)
}

// ensemble returns the shared 3-server ensemble, starting it on first use.
func ensemble(t *testing.T) *zkserver.Ensemble {
	return shared(t, &servers.ensemble, 3)
}

func shared(t *testing.T, slot **zkserver.Ensemble, n int) *zkserver.Ensemble {
	t.Helper()
	zkserver.SkipIfUnavailable(t)
	servers.mu.Lock()
	defer servers.mu.Unlock()
	if *slot == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		e, err := zkserver.StartEnsemble(ctx, zkserver.DefaultConfig(), n)
		if err != nil {
			t.Fatalf("start ZooKeeper (%d servers): %v", n, err)
		}
		*slot = e
	}
	return *slot
}

// prefixes maps each *testing.T to its namespace; with -count=N every run of
// a test gets a fresh one on the shared server.
var prefixes sync.Map

func prefixFor(t *testing.T) string {
	p, _ := prefixes.LoadOrStore(t, fmt.Sprintf("/coordtest/%s/%d", strings.ReplaceAll(t.Name(), "/", "_"), time.Now().UnixNano()))
	return p.(string)
}

func newCoord(t *testing.T, servers []string) *zkcoord.Coordinator {
	t.Helper()
	return newCoordWith(t, zkcoord.Config{Servers: servers})
}

// newCoordWith is newCoord with cfg's other fields.
func newCoordWith(t *testing.T, cfg zkcoord.Config) *zkcoord.Coordinator {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg.Prefix = prefixFor(t)
	c, err := zkcoord.New(ctx, cfg)
	if err != nil {
		t.Fatalf("zkcoord.New: %v", err)
	}
	return c
}

func TestConformance(t *testing.T) {
	srv := standalone(t)
	coordtest.Run(t, func(t *testing.T) coord.Coordinator { return newCoord(t, srv.Servers()) })
}

func TestConformanceClock(t *testing.T) {
	srv := standalone(t)
	coordtest.RunClock(t, func(t *testing.T, clk clock.Clock) coord.Coordinator {
		return newCoordWith(t, zkcoord.Config{Servers: srv.Servers(), Clock: clk})
	})
}

func TestConformanceEnsemble(t *testing.T) {
	ens := ensemble(t)
	coordtest.Run(t, func(t *testing.T) coord.Coordinator { return newCoord(t, ens.Servers()) })
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
		_ = s.Close(ctx)
	})
	return s
}

// rawConn is a plain ZooKeeper client for looking behind the backend's back.
func rawConn(t *testing.T, servers []string) *zk.Conn {
	t.Helper()
	conn, events, err := zk.Connect(servers, 4*time.Second, zk.WithLogInfo(false), zk.WithLogger(quiet{}))
	if err != nil {
		t.Fatalf("zk.Connect: %v", err)
	}
	t.Cleanup(conn.Close)
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev := <-events:
			if ev.State == zk.StateHasSession {
				go func() {
					for range events {
					}
				}()
				return conn
			}
		case <-timeout:
			t.Fatal("raw ZooKeeper client got no session in 10s")
		}
	}
}

type quiet struct{}

func (quiet) Printf(string, ...any) {}

func TestSetVotersFencedByZooKeeper(t *testing.T) {
	srv := standalone(t)
	c := newCoord(t, srv.Servers())
	t.Cleanup(func() { c.Close() })
	raw := rawConn(t, srv.Servers())
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
	// The election znode disappears behind the leader's back: the ensemble,
	// not the session's memory, must refuse the write.
	elec := prefixFor(t) + "/election"
	names, _, err := raw.Children(elec)
	if err != nil || len(names) != 1 {
		t.Fatalf("election children %v, %v; want one", names, err)
	}
	if err := raw.Delete(elec+"/"+names[0], -1); err != nil {
		t.Fatalf("delete election znode: %v", err)
	}
	if err := s.SetVoters(ctx, epoch, v, []string{"a", "b"}); !errors.Is(err, coord.ErrNotLeader) {
		t.Fatalf("SetVoters without the election znode = %v, want ErrNotLeader", err)
	}
	if got, err := c.Voters(ctx); err != nil || got.Version != v.Version {
		t.Fatalf("record changed: %+v %v", got, err)
	}
}

// watchers asks the server, with the wchp four-letter word, how many
// sessions watch each path under dir.
func watchers(t *testing.T, addr, dir string) map[string]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := zkserver.FourLetterWord(ctx, addr, "wchp")
	if err != nil {
		t.Fatalf("wchp: %v", err)
	}
	// The output is a path line followed by one tab-indented line per
	// watching session.
	counts := map[string]int{}
	path := ""
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(line, "/"):
			path = line
		case strings.TrimSpace(line) != "" && strings.HasPrefix(path, dir+"/"):
			counts[path[len(dir)+1:]]++
		}
	}
	return counts
}

// TestNoHerdEffect checks the recipe: each waiting candidate watches only
// its predecessor, so the leader's znode has one watcher and a resignation
// wakes exactly one candidate.
func TestNoHerdEffect(t *testing.T) {
	srv := standalone(t)
	c := newCoord(t, srv.Servers())
	t.Cleanup(func() { c.Close() })
	raw := rawConn(t, srv.Servers())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	elec := prefixFor(t) + "/election"

	ids := []string{"a", "b", "c", "d"}
	sessions := map[string]coord.Session{}
	results := map[string]chan error{}
	epochs := map[string]int64{}
	var mu sync.Mutex
	for i, id := range ids {
		s := newSession(t, c)
		sessions[id] = s
		res := make(chan error, 1)
		results[id] = res
		go func() {
			e, err := s.Campaign(ctx, id)
			mu.Lock()
			epochs[id] = e
			mu.Unlock()
			res <- err
		}()
		// Enter one at a time, so the order of the queue is known.
		coordtest.WaitFor(t, coordtest.Slack, id+" entered the election", func() error {
			names, _, err := raw.Children(elec)
			if err != nil || len(names) != i+1 {
				return fmt.Errorf("candidates %v, %v", names, err)
			}
			return nil
		})
	}
	if err := <-results["a"]; err != nil {
		t.Fatalf("a's Campaign: %v", err)
	}
	queue, _, err := raw.Children(elec)
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]string{}
	for _, name := range queue {
		data, _, err := raw.Get(elec + "/" + name)
		if err != nil {
			t.Fatal(err)
		}
		byID[string(data)] = name
	}
	wantWatched := func(leader string, waiting ...string) {
		t.Helper()
		coordtest.WaitFor(t, coordtest.Slack, "each candidate watches its predecessor only", func() error {
			w := watchers(t, srv.Servers()[0], elec)
			for i, id := range append([]string{leader}, waiting...) {
				want := 1
				if i == len(waiting) {
					want = 0 // the last in line is watched by nobody
				}
				if got := w[byID[id]]; got != want {
					return fmt.Errorf("%s's znode has %d watchers, want %d (all: %v)", id, got, want, w)
				}
			}
			return nil
		})
	}
	wantWatched("a", "b", "c", "d")

	if err := sessions["a"].Resign(ctx); err != nil {
		t.Fatalf("Resign: %v", err)
	}
	select {
	case err := <-results["b"]:
		if err != nil {
			t.Fatalf("b's Campaign: %v", err)
		}
	case <-time.After(coordtest.Slack):
		t.Fatal("b did not take over after a resigned")
	}
	for _, id := range []string{"c", "d"} {
		select {
		case err := <-results[id]:
			t.Fatalf("%s's Campaign returned (%v) while b leads", id, err)
		default:
		}
	}
	mu.Lock()
	if epochs["b"] <= epochs["a"] {
		t.Fatalf("epoch went from %d to %d, want strictly greater", epochs["a"], epochs["b"])
	}
	mu.Unlock()
	wantWatched("b", "c", "d")
}

func TestConnectionCut(t *testing.T) {
	srv := standalone(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	proxy, err := faultproxy.New(srv.Servers()[0])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	c := newCoord(t, []string{proxy.Addr()})
	t.Cleanup(func() { c.Close() })
	// The longest session the test server grants (20 ticks): what is
	// checked is that a short cut does not end the session, and a reconnect
	// on a busy machine (client backoff, a loaded JVM) may take a good part
	// of a 2 s TTL.
	const ttl = 4 * time.Second
	s := newSessionTTL(t, c, ttl)
	if err := s.Register(ctx, coord.Member{ID: "n1", Addr: "a1"}); err != nil {
		t.Fatalf("Register: %v", err)
	}
	observer := newCoord(t, srv.Servers())
	t.Cleanup(func() { observer.Close() })
	views := newSession(t, observer).Watch(ctx)
	coordtest.WaitView(t, views, coordtest.Slack, "n1 registered", func(v coord.View) error {
		if v.Members["n1"] != "a1" {
			return fmt.Errorf("members %v", v.Members)
		}
		return nil
	})

	// A short cut: Disconnected turns the session unhealthy at once, and
	// the reconnect renews it.
	proxy.SetDown(true)
	// Unhealthy (an early warning) well before the deadline could pass.
	coordtest.WaitFor(t, ttl/4, "unhealthy after the cut", func() error {
		if s.Healthy() {
			return errors.New("still Healthy")
		}
		return nil
	})
	time.Sleep(coordtest.TTL / 4) // the outage itself, not an assertion
	restored := time.Now()
	proxy.SetDown(false)
	// Healthy again before the session could have expired: later would mean
	// a short cut costs a session.
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

	// A stall: the connection stays open but nothing answers.
	proxy.SetBlackhole(true)
	coordtest.WaitFor(t, ttl, "unhealthy while stalled", func() error {
		if s.Healthy() {
			return errors.New("still Healthy")
		}
		return nil
	})
	proxy.SetBlackhole(false)
	coordtest.WaitFor(t, ttl, "healthy after the stall", func() error {
		if !s.Healthy() {
			return errors.New("not Healthy")
		}
		return nil
	})

	// A cut longer than the session timeout: the session ends by its local
	// deadline, before the ensemble deletes its znodes, and stays ended.
	proxy.SetDown(true)
	frozen := s.Deadline()
	select {
	case <-s.Done():
	case <-time.After(ttl + coordtest.Slack):
		t.Fatal("session not Done after a cut longer than its timeout")
	}
	ended := clock.System().Now()
	if !errors.Is(s.Err(), coord.ErrSessionExpired) {
		t.Fatalf("Err = %v, want ErrSessionExpired", s.Err())
	}
	if ended.Before(frozen) {
		t.Fatalf("session ended %v before its deadline", frozen.Sub(ended))
	}
	coordtest.WaitView(t, views, ttl+coordtest.Slack, "n1 expired", func(v coord.View) error {
		if _, ok := v.Members["n1"]; ok {
			return fmt.Errorf("members %v", v.Members)
		}
		return nil
	})
	gone := clock.System().Now()
	if !ended.Before(gone) {
		t.Fatalf("ZooKeeper deleted the member %v before the session ended locally", ended.Sub(gone))
	}
	t.Logf("the session ended locally %v before ZooKeeper deleted its member", gone.Sub(ended).Round(time.Millisecond))
	proxy.SetDown(false)
	if err := s.Register(ctx, coord.Member{ID: "n1", Addr: "a1"}); err == nil {
		t.Fatal("Register on an expired session succeeded")
	}
}

// TestEnsembleMemberLoss takes away the server a session is connected to,
// by a crash (the connection breaks) and by a stall (the connection stays
// open and nothing answers): the client moves to another server in time,
// and the session, its znodes and its leadership survive.
func TestEnsembleMemberLoss(t *testing.T) {
	for _, how := range []string{"crash", "stall"} {
		t.Run(how, func(t *testing.T) { ensembleMemberLoss(t, how) })
	}
}

func ensembleMemberLoss(t *testing.T, how string) {
	ens := ensemble(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// One proxy per server, to stall one.
	var proxies []*faultproxy.Proxy
	var addrs []string
	for _, a := range ens.Servers() {
		p, err := faultproxy.New(a)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		proxies = append(proxies, p)
		addrs = append(addrs, p.Addr())
	}
	c := newCoord(t, addrs)
	t.Cleanup(func() { c.Close() })
	if err := c.CreateVoters(ctx, []string{"n1"}); err != nil {
		t.Fatalf("CreateVoters: %v", err)
	}
	// The longest session the test servers grant (20 ticks): what is
	// checked is that the loss of one server costs no session, and moving
	// to another server on a busy machine (client backoff, a loaded JVM,
	// the ensemble's own election) may take a good part of a 2 s TTL.
	const ttl = 4 * time.Second
	s := newSessionTTL(t, c, ttl)
	if err := s.Register(ctx, coord.Member{ID: "n1", Addr: "a1"}); err != nil {
		t.Fatalf("Register: %v", err)
	}
	epoch, err := s.Campaign(ctx, "n1")
	if err != nil {
		t.Fatalf("Campaign: %v", err)
	}
	used := -1
	for i, a := range addrs {
		if a == zkcoord.SessionServer(s) {
			used = i
		}
	}
	if used < 0 {
		t.Fatalf("the session's server %q is none of %v", zkcoord.SessionServer(s), addrs)
	}
	target, targetT := clock.System().Now(), time.Now()
	switch how {
	case "crash":
		if err := ens.Stop(used); err != nil {
			t.Fatalf("stop server %d: %v", used, err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			if err := ens.Restart(ctx, used); err != nil {
				t.Errorf("restart server %d: %v", used, err)
			}
			if err := ens.WaitServing(ctx); err != nil {
				t.Errorf("ensemble not serving after restart: %v", err)
			}
		})
	case "stall":
		proxies[used].SetBlackhole(true)
	}
	// Renewed through another server before the session could expire.
	coordtest.WaitFor(t, ttl, "the session renewed through another server", func() error {
		if err := s.Err(); err != nil {
			return err
		}
		if zkcoord.SessionServer(s) == addrs[used] || !s.Healthy() || !s.Deadline().After(target.Add(ttl/2)) {
			return fmt.Errorf("on %s, healthy %v, deadline %v after the %s", zkcoord.SessionServer(s), s.Healthy(), s.Deadline().Sub(target), how)
		}
		return nil
	})
	t.Logf("renewed through %s %v after the %s of %s", zkcoord.SessionServer(s), time.Since(targetT).Round(time.Millisecond), how, addrs[used])
	v, err := c.Voters(ctx)
	if err != nil {
		t.Fatalf("Voters: %v", err)
	}
	if err := s.SetVoters(ctx, epoch, v, []string{"n1", "n2"}); err != nil {
		t.Fatalf("SetVoters after the %s: %v (leadership lost?)", how, err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg   zkcoord.Config
		field string
	}{
		{zkcoord.Config{}, "Servers"},
		{zkcoord.Config{Servers: []string{"x:1"}, Prefix: "no-slash"}, "Prefix"},
		{zkcoord.Config{Servers: []string{"x:1"}, Prefix: "/trailing/"}, "Prefix"},
		{zkcoord.Config{Servers: []string{"x:1"}, DriftMargin: 0.5}, "DriftMargin"},
		{zkcoord.Config{Servers: []string{"x:1"}, DriftMargin: -0.1}, "DriftMargin"},
		{zkcoord.Config{Servers: []string{"x:1"}, DialTimeout: -1}, "DialTimeout"},
		{zkcoord.Config{Servers: []string{"x:1/chroot"}}, "Servers"},
	} {
		if err := tc.cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("Validate(%+v) = %v, want an error naming %s", tc.cfg, err, tc.field)
		}
	}
	if err := (zkcoord.Config{Servers: []string{"127.0.0.1:2181"}}).Validate(); err != nil {
		t.Errorf("Validate of a minimal config: %v", err)
	}
}

func TestParseConnectString(t *testing.T) {
	for _, tc := range []struct {
		in      string
		servers []string
		chroot  string
		bad     bool
	}{
		{in: "127.0.0.1:2181", servers: []string{"127.0.0.1:2181"}},
		{in: "a:1,b:2,c:3/app/kv", servers: []string{"a:1", "b:2", "c:3"}, chroot: "/app/kv"},
		{in: "a,b:2", servers: []string{"a:2181", "b:2"}},
		{in: "a:1/", servers: []string{"a:1"}},
		{in: "", bad: true},
		{in: "/chroot", bad: true},
		{in: "a:1/bad/", bad: true},
		{in: "a:1/x//y", bad: true},
	} {
		servers, chroot, err := zkcoord.ParseConnectString(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("ParseConnectString(%q) = %v, %q; want an error", tc.in, servers, chroot)
			}
			continue
		}
		if err != nil || strings.Join(servers, ",") != strings.Join(tc.servers, ",") || chroot != tc.chroot {
			t.Errorf("ParseConnectString(%q) = %v, %q, %v; want %v, %q", tc.in, servers, chroot, err, tc.servers, tc.chroot)
		}
	}
}

func TestNewFailsWhenUnreachable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	c, err := zkcoord.New(ctx, zkcoord.Config{Servers: []string{"127.0.0.1:1"}, DialTimeout: 500 * time.Millisecond})
	if err == nil {
		c.Close()
		t.Fatal("New succeeded with nothing listening")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("New took %v to fail, want about DialTimeout", d)
	}
}

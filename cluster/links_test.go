package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvstore/kvstore/internal/soon"
	"github.com/kvstore/kvstore/node"
)

// echoServer answers each line with the same line, until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := c.Write([]byte(line)); err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		_ = lis.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return lis.Addr().String()
}

// roundTrip sends one line over conn and waits for its echo.
func roundTrip(conn net.Conn) (time.Duration, error) {
	start := time.Now()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := conn.Write([]byte("ping\n")); err != nil {
		return 0, err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return 0, err
	}
	if line != "ping\n" {
		return 0, fmt.Errorf("echo %q", line)
	}
	return time.Since(start), nil
}

// TestNodeDelayDelaysOnlyThatNodesLinks gives one node a delay and checks,
// through real proxies, that its links in both directions are slow (by at
// least the delay each way, which a sleep guarantees) and that a link
// between two other nodes is not: its round trip finishes first although
// it started last. No upper bound on any duration is asserted.
func TestNodeDelayDelaysOnlyThatNodesLinks(t *testing.T) {
	addrs := map[string]string{}
	ids := map[string]string{}
	for _, id := range []string{"n0", "n1", "n2"} {
		a := echoServer(t)
		addrs[id], ids[a] = a, id
	}
	l := newLinksFor(func(addr string) string { return ids[addr] })
	t.Cleanup(l.close)
	dial := func(src, dst string) net.Conn {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := l.dialer(src)(ctx, addrs[dst])
		if err != nil {
			t.Fatalf("dial %s -> %s: %v", src, dst, err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	const d = 300 * time.Millisecond
	l.setNodeDelay("n0", d)
	from0, to0, other := dial("n0", "n2"), dial("n1", "n0"), dial("n1", "n2")

	// The configuration: every link touching n0 carries d, the rest none.
	want := map[[2]string]time.Duration{{"n0", "n2"}: d, {"n1", "n0"}: d, {"n1", "n2"}: 0}
	if got := l.delays(); !equalDelays(got, want) {
		t.Fatalf("link delays %v, want %v", got, want)
	}

	// The traffic: n0's links start first, the other link last.
	type result struct {
		name string
		took time.Duration
		err  error
	}
	done := make(chan result, 3)
	var wg sync.WaitGroup
	for _, x := range []struct {
		name string
		conn net.Conn
	}{{"n0->n2", from0}, {"n1->n0", to0}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			took, err := roundTrip(x.conn)
			done <- result{x.name, took, err}
		}()
	}
	took, err := roundTrip(other)
	done <- result{"n1->n2", took, err}
	wg.Wait()
	close(done)
	var order []string
	for r := range done {
		if r.err != nil {
			t.Fatalf("%s: %v", r.name, r.err)
		}
		if r.name != "n1->n2" && r.took < 2*d {
			t.Errorf("%s round trip took %v, want at least %v (delayed both ways)", r.name, r.took, 2*d)
		}
		order = append(order, r.name)
	}
	if order[0] != "n1->n2" {
		t.Errorf("round trips finished in order %v: the undelayed link n1->n2 should finish first", order)
	}

	// Delays add up; clearing them removes every one.
	l.setDelay(time.Millisecond)
	l.setNodeDelay("n2", 2*time.Millisecond)
	want = map[[2]string]time.Duration{{"n0", "n2"}: d + 3*time.Millisecond, {"n1", "n0"}: d + time.Millisecond, {"n1", "n2"}: 3 * time.Millisecond}
	if got := l.delays(); !equalDelays(got, want) {
		t.Fatalf("link delays %v, want %v", got, want)
	}
	l.setNodeDelay("n0", 0)
	want = map[[2]string]time.Duration{{"n0", "n2"}: 3 * time.Millisecond, {"n1", "n0"}: time.Millisecond, {"n1", "n2"}: 3 * time.Millisecond}
	if got := l.delays(); !equalDelays(got, want) {
		t.Fatalf("link delays %v, want %v", got, want)
	}
	l.clearDelays()
	want = map[[2]string]time.Duration{{"n0", "n2"}: 0, {"n1", "n0"}: 0, {"n1", "n2"}: 0}
	if got := l.delays(); !equalDelays(got, want) {
		t.Fatalf("after clearing: link delays %v, want %v", got, want)
	}
}

func equalDelays(a, b map[[2]string]time.Duration) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestSetNodeDelay checks the Cluster form on a real cluster: the delayed
// node's links (created by real traffic) carry the delay, the others none,
// writes still complete, and Heal removes it.
func TestSetNodeDelay(t *testing.T) {
	c := newCluster(t, Etcd, 3)
	if err := c.SetNodeDelay(7, time.Millisecond); !errors.Is(err, ErrNoSuchNode) {
		t.Fatalf("SetNodeDelay(7) = %v, want ErrNoSuchNode", err)
	}
	const d = 20 * time.Millisecond
	if err := c.SetNodeDelay(1, d); err != nil {
		t.Fatal(err)
	}
	// Writes and reads through every node make links between every pair
	// (the leader streams to each follower, followers fetch from it).
	for n := 0; n < 3; n++ {
		mustPut(t, c, n, fmt.Sprint("k", n), "v")
		expectGet(t, c, (n+1)%3, fmt.Sprint("k", n), "v")
	}
	ld, _, err := c.Leader(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	// Every link from the leader to a follower exists once it replicated.
	soon.Succeeds(t, 10*time.Second, func() error {
		got := c.links.delays()
		for n := 0; n < 3; n++ {
			if n == ld {
				continue
			}
			k := [2]string{fmt.Sprint("n", ld), fmt.Sprint("n", n)}
			if _, ok := got[k]; !ok {
				return fmt.Errorf("no link %v yet (have %v)", k, got)
			}
		}
		return nil
	})
	for k, got := range c.links.delays() {
		want := time.Duration(0)
		if k[0] == "n1" || k[1] == "n1" {
			want = d
		}
		if got != want {
			t.Errorf("link %s -> %s: delay %v, want %v", k[0], k[1], got, want)
		}
	}
	if err := c.Heal(ctxT(t, 20*time.Second)); err != nil {
		t.Fatal(err)
	}
	for k, got := range c.links.delays() {
		if got != 0 {
			t.Errorf("after Heal: link %s -> %s: delay %v, want none", k[0], k[1], got)
		}
	}
	mustPut(t, c, 1, "after", "heal")
}

// blockedPairs lists the cut links as "a->b" of node ids, sorted.
func blockedPairs(c *Cluster) []string {
	c.links.mu.Lock()
	defer c.links.mu.Unlock()
	var out []string
	for k, on := range c.links.blocked {
		if on {
			out = append(out, k[0]+"->"+k[1])
		}
	}
	slices.Sort(out)
	return out
}

// TestBridgeCutsOnlyBetweenSides: a bridge partition cuts the two sides
// from each other, both ways, and nothing else; the bridge (here the
// leader) still serves writes; bad arguments are refused.
func TestBridgeCutsOnlyBetweenSides(t *testing.T) {
	c := newCluster(t, Etcd, 3)
	ld := leaderOf(t, c)
	fs := followers(t, c)
	if err := c.Bridge(true, []int{fs[0]}, []int{fs[1]}, 7); !errors.Is(err, ErrNoSuchNode) {
		t.Fatalf("Bridge with bridge node 7 = %v, want ErrNoSuchNode", err)
	}
	if err := c.Bridge(true, []int{ld}, []int{fs[1]}, ld); err == nil {
		t.Fatal("Bridge with the bridge on a side: no error")
	}
	if err := c.Bridge(true, []int{fs[0]}, []int{fs[1]}, ld); err != nil {
		t.Fatal(err)
	}
	a, b := fmt.Sprint("n", fs[0]), fmt.Sprint("n", fs[1])
	if got, want := blockedPairs(c), []string{a + "->" + b, b + "->" + a}; !slices.Equal(got, want) {
		t.Fatalf("cut links %v, want %v", got, want)
	}
	mustPut(t, c, ld, "k", "bridged")
	if err := c.Heal(ctxT(t, 20*time.Second)); err != nil {
		t.Fatal(err)
	}
	if got := blockedPairs(c); len(got) != 0 {
		t.Fatalf("after Heal: cut links %v", got)
	}
}

// TestPauseLooksStopped pauses the leader: every link to and from it is
// black-holed, its coordinator connection stalls (so the others elect a
// new leader and serve), and a call through it waits until it resumes
// (one with a short deadline fails with the deadline, one with a long
// one is still waiting when the new leader serves, and returns after
// Resume). Heal then makes it serve again.
func TestPauseLooksStopped(t *testing.T) {
	c := newCluster(t, Etcd, 3, func(o *Options) {
		o.Node = func(cfg *node.Config) { cfg.SessionTTL, cfg.LeaseDuration = time.Second, time.Second }
	})
	ld := leaderOf(t, c)
	fs := followers(t, c)
	mustPut(t, c, fs[0], "k", "before")
	if err := c.Pause(ld); err != nil {
		t.Fatal(err)
	}
	id := fmt.Sprint("n", ld)
	var want []string
	for _, f := range fs {
		want = append(want, id+fmt.Sprint("->n", f), fmt.Sprint("n", f, "->")+id)
	}
	slices.Sort(want)
	if got := blockedPairs(c); !slices.Equal(got, want) || !c.links.drop {
		t.Fatalf("cut links %v (drop %v), want %v dropped", got, c.links.drop, want)
	}
	if st := c.List()[ld].State; !strings.Contains(st, "paused") {
		t.Fatalf("paused node's state %q does not say paused", st)
	}
	short, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := c.Put(short, ld, "k", "short"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("put through the paused node with a short deadline: %v, want the deadline", err)
	}
	waiting := make(chan error, 1)
	go func() { waiting <- c.Put(ctxT(t, 30*time.Second), ld, "k", "waited") }()
	start := time.Now()
	mustPut(t, c, fs[1], "k", "during")
	t.Logf("the others acknowledged a write %v after the pause", time.Since(start).Round(time.Millisecond))
	if nl := leaderOf(t, c); nl == ld {
		t.Fatalf("the paused node %d still leads", ld)
	}
	select {
	case err := <-waiting:
		t.Fatalf("put through the paused node returned before it resumed: %v", err)
	default:
	}
	if err := c.Resume(ld); err != nil {
		t.Fatal(err)
	}
	if err := <-waiting; errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("put through the resumed node: %v", err)
	}
	if err := c.Heal(ctxT(t, 20*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitHealthy(ctxT(t, 20*time.Second)); err != nil {
		t.Fatal(err)
	}
	mustPut(t, c, ld, "k", "after")
}

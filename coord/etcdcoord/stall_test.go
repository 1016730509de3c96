package etcdcoord_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kvstore/kvstore/coord/etcdcoord"
	"github.com/kvstore/kvstore/faultproxy"
	"github.com/kvstore/kvstore/internal/soon"
)

// TestCallsSkipAMemberThatStopsAnswering gives the client three endpoints,
// three proxies to the one etcd, and black-holes one of them: a member that
// stopped answering with its connections open (SIGSTOP, a frozen VM). Round
// robin would send every third call there, each waiting out its attempt;
// the client marks the member after one such call and skips it until it
// answers again.
func TestCallsSkipAMemberThatStopsAnswering(t *testing.T) {
	target := strings.TrimPrefix(endpoint, "http://")
	var proxies []*faultproxy.Proxy
	var eps []string
	for range 3 {
		p, err := faultproxy.New(target)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.Close() })
		proxies = append(proxies, p)
		eps = append(eps, "http://"+p.Addr())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	c, err := etcdcoord.New(ctx, etcdcoord.Config{Endpoints: eps, Prefix: prefixFor(t)})
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	stopped := proxies[1]
	stopped.SetBlackhole(true)
	const reads = 30
	var slow []string
	for i := range reads {
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
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
	if got, want := c.Stalled(), []string{stopped.Addr()}; !slices.Equal(got, want) {
		t.Errorf("marked stalled: %v, want %v", got, want)
	}

	// Answering again, the member is unmarked within a few probes.
	stopped.SetBlackhole(false)
	soon.Succeeds(t, 10*time.Second, func() error {
		if got := c.Stalled(); len(got) != 0 {
			return fmt.Errorf("still marked stalled: %v", got)
		}
		return nil
	})
}

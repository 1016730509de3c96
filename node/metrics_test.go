package node_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/cluster"
	"github.com/kvstore/kvstore/internal/buildinfo"
	"github.com/kvstore/kvstore/internal/soon"
	"github.com/kvstore/kvstore/node"
)

// newCluster starts an n-node cluster (embedded etcd) for one test and
// closes it at the end. KVSTORE_TEST_LOG=debug shows the nodes' logs.
func newCluster(t *testing.T, n int) *cluster.Cluster {
	t.Helper()
	return cluster.StartTest(t, cluster.Options{Nodes: n})
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// roles returns the leader's number and the followers' numbers.
func roles(t *testing.T, c *cluster.Cluster) (int, []int) {
	t.Helper()
	if err := c.WaitHealthy(ctxT(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	ld, _, err := c.Leader(ctxT(t, 30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var fs []int
	for i := 0; i < c.Size(); i++ {
		if i != ld {
			fs = append(fs, i)
		}
	}
	return ld, fs
}

func nodeOf(t *testing.T, c *cluster.Cluster, i int) *node.Node {
	t.Helper()
	nd, err := c.Node(i)
	if err != nil {
		t.Fatal(err)
	}
	return nd
}

// scrape is one collection of a node's metrics.
type scrape map[string]*dto.MetricFamily

// scrapeNode gathers nd's collectors through a pedantic registry, which also
// checks that what they collect matches what they describe.
func scrapeNode(t *testing.T, nd *node.Node) scrape {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	for _, c := range nd.Collectors() {
		if err := reg.Register(c); err != nil {
			t.Fatalf("register: %v", err)
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	s := make(scrape)
	for _, mf := range mfs {
		s[mf.GetName()] = mf
	}
	return s
}

// find returns the sample of name whose labels include the pairs given.
func (s scrape) find(name string, labels ...string) (*dto.Metric, bool) {
	mf := s[name]
	if mf == nil {
		return nil, false
	}
next:
	for _, m := range mf.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			ok := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					ok = true
				}
			}
			if !ok {
				continue next
			}
		}
		return m, true
	}
	return nil, false
}

// value is a counter's or gauge's value, or a histogram's sample count; 0
// when the sample is absent.
func (s scrape) value(name string, labels ...string) float64 {
	m, ok := s.find(name, labels...)
	switch {
	case !ok:
		return 0
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return 0
}

func (s scrape) histSum(name string, labels ...string) float64 {
	m, ok := s.find(name, labels...)
	if !ok || m.Histogram == nil {
		return 0
	}
	return m.Histogram.GetSampleSum()
}

// expectDelta fails unless name{labels} grew by want between before and after.
func expectDelta(t *testing.T, before, after scrape, want float64, name string, labels ...string) {
	t.Helper()
	if d := after.value(name, labels...) - before.value(name, labels...); d != want {
		t.Errorf("%s%v grew by %v, want %v", name, labels, d, want)
	}
}

// TestOperationMetrics checks the client operation counters and latency
// histograms, the cache counters and the invalidation counters on both
// sides, against operations whose path is known.
// TestBuildInfoMetric checks kvstore_build_info: 1, labelled with the
// node's version, commit and Go version.
func TestBuildInfoMetric(t *testing.T) {
	c := newCluster(t, 1)
	s := scrapeNode(t, nodeOf(t, c, 0))
	bi := buildinfo.Get()
	m, ok := s.find("kvstore_build_info", "version", bi.Version, "commit", bi.Commit, "go_version", bi.GoVersion)
	if !ok {
		t.Fatalf("no kvstore_build_info{version=%q,commit=%q,go_version=%q}; got %v", bi.Version, bi.Commit, bi.GoVersion, s["kvstore_build_info"])
	}
	if len(m.GetLabel()) != 3 || m.GetGauge().GetValue() != 1 {
		t.Fatalf("kvstore_build_info = %v, want 1 with exactly the labels version, commit, go_version", m)
	}
}

func TestOperationMetrics(t *testing.T) {
	c := newCluster(t, 3)
	ld, fs := roles(t, c)
	lead, f1, f2 := nodeOf(t, c, ld), nodeOf(t, c, fs[0]), nodeOf(t, c, fs[1])
	ctx := ctxT(t, 30*time.Second)

	// A put through a follower: counted there, not at the leader that
	// applies it.
	b1, bl := scrapeNode(t, f1), scrapeNode(t, lead)
	if err := f1.Set(ctx, "k", "v1"); err != nil {
		t.Fatal(err)
	}
	a1, al := scrapeNode(t, f1), scrapeNode(t, lead)
	expectDelta(t, b1, a1, 1, "kvstore_operations_total", "op", "put", "outcome", "ok")
	expectDelta(t, b1, a1, 1, "kvstore_operation_duration_seconds", "op", "put")
	expectDelta(t, bl, al, 0, "kvstore_operations_total", "op", "put", "outcome", "ok")
	if d := a1.histSum("kvstore_operation_duration_seconds", "op", "put") - b1.histSum("kvstore_operation_duration_seconds", "op", "put"); d <= 0 || d > 30 {
		t.Errorf("put latency sum grew by %vs", d)
	}

	// Two reads through the other follower: a miss, then a hit.
	b2 := scrapeNode(t, f2)
	for range 2 {
		if v, _, err := f2.Get(ctx, "k"); err != nil || v != "v1" {
			t.Fatalf("get = %q, %v", v, err)
		}
	}
	a2 := scrapeNode(t, f2)
	expectDelta(t, b2, a2, 1, "kvstore_cache_misses_total")
	expectDelta(t, b2, a2, 1, "kvstore_cache_hits_total")
	expectDelta(t, b2, a2, 2, "kvstore_operations_total", "op", "get", "outcome", "ok")
	// The miss is timed; of the reads answered from the cache, one in 64.
	expectDelta(t, b2, a2, 1, "kvstore_operation_duration_seconds", "op", "get")
	b3 := a2
	for range 64 {
		if _, _, err := f2.Get(ctx, "k"); err != nil {
			t.Fatal(err)
		}
	}
	a3 := scrapeNode(t, f2)
	expectDelta(t, b3, a3, 64, "kvstore_operations_total", "op", "get", "outcome", "ok")
	expectDelta(t, b3, a3, 1, "kvstore_operation_duration_seconds", "op", "get")
	if st := f2.Stats(); a3.value("kvstore_cache_hits_total") != float64(st.CacheHits) {
		t.Errorf("kvstore_cache_hits_total %v, Stats().CacheHits %d", a3.value("kvstore_cache_hits_total"), st.CacheHits)
	}

	// A read at the leader and failures by class.
	bl = scrapeNode(t, lead)
	if _, _, err := lead.Get(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := lead.Get(ctx, ""); !errors.Is(err, kvstore.ErrBadRequest) {
		t.Fatalf("get of an empty key: %v", err)
	}
	if err := lead.Delete(ctx, "k-gone"); err != nil {
		t.Fatal(err)
	}
	al = scrapeNode(t, lead)
	expectDelta(t, bl, al, 1, "kvstore_leader_reads_total")
	expectDelta(t, bl, al, 1, "kvstore_operations_total", "op", "get", "outcome", "ok")
	expectDelta(t, bl, al, 1, "kvstore_operations_total", "op", "get", "outcome", "bad_request")
	expectDelta(t, bl, al, 1, "kvstore_operations_total", "op", "delete", "outcome", "ok")
	expectDelta(t, bl, al, 2, "kvstore_operation_duration_seconds", "op", "get")

	// Invalidation: f2 caches "inv", then the leader writes it. The leader
	// sends one invalidation and f2 applies it before the write returns.
	if err := lead.Set(ctx, "inv", "1"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f2.Get(ctx, "inv"); err != nil {
		t.Fatal(err)
	}
	bl, b2 = scrapeNode(t, lead), scrapeNode(t, f2)
	if err := lead.Set(ctx, "inv", "2"); err != nil {
		t.Fatal(err)
	}
	al, a2 = scrapeNode(t, lead), scrapeNode(t, f2)
	expectDelta(t, bl, al, 1, "kvstore_invalidations_sent_total")
	expectDelta(t, b2, a2, 1, "kvstore_invalidations_applied_total")
	expectDelta(t, bl, al, 0, "kvstore_lease_waits_total")

	// Cluster state: roles, epoch, replication.
	soon.Succeeds(t, 10*time.Second, func() error {
		sl := scrapeNode(t, lead)
		if sl.value("kvstore_is_leader") != 1 || sl.value("kvstore_serving") != 1 {
			return fmt.Errorf("leader: is_leader %v serving %v", sl.value("kvstore_is_leader"), sl.value("kvstore_serving"))
		}
		if _, ok := sl.find("kvstore_last_append_age_seconds"); ok {
			return errors.New("the leader reports kvstore_last_append_age_seconds")
		}
		ep, seq := sl.value("kvstore_epoch"), sl.value("kvstore_applied_seq")
		if ep <= 0 || sl.value("kvstore_accepted_epoch") != ep || sl.value("kvstore_leader_changes_total") < 1 {
			return fmt.Errorf("leader: epoch %v accepted %v changes %v", ep, sl.value("kvstore_accepted_epoch"), sl.value("kvstore_leader_changes_total"))
		}
		for _, f := range []*node.Node{f1, f2} {
			lag, ok := sl.find("kvstore_replication_lag_entries", "follower", f.ID())
			if !ok || lag.Gauge.GetValue() != 0 || sl.value("kvstore_replication_follower_reachable", "follower", f.ID()) != 1 {
				return fmt.Errorf("follower %s: lag present %v, %v; reachable %v", f.ID(), ok, lag, sl.value("kvstore_replication_follower_reachable", "follower", f.ID()))
			}
			sf := scrapeNode(t, f)
			if sf.value("kvstore_is_leader") != 0 || sf.value("kvstore_serving") != 1 || sf.value("kvstore_epoch") != ep ||
				sf.value("kvstore_applied_seq") != seq || sf.value("kvstore_leader_changes_total") < 1 {
				return fmt.Errorf("follower %s: is_leader %v serving %v epoch %v (leader %v) applied %v (leader %v)", f.ID(),
					sf.value("kvstore_is_leader"), sf.value("kvstore_serving"), sf.value("kvstore_epoch"), ep, sf.value("kvstore_applied_seq"), seq)
			}
			age, ok := sf.find("kvstore_last_append_age_seconds")
			if !ok || age.Gauge.GetValue() < 0 || age.Gauge.GetValue() > 5 {
				return fmt.Errorf("follower %s: last append age present %v, %v", f.ID(), ok, age)
			}
			if _, ok := sf.find("kvstore_replication_lag_entries"); ok {
				return fmt.Errorf("follower %s reports replication lag", f.ID())
			}
		}
		return nil
	})
}

// TestLeaseWaitMetrics makes a holder of a cached copy unreachable
// (rmi-down): the next write of the key commits on the other two nodes but
// is held until the holder's lease ends, and the leader counts a lease wait.
func TestLeaseWaitMetrics(t *testing.T) {
	c := newCluster(t, 3)
	ld, fs := roles(t, c)
	lead, holder := nodeOf(t, c, ld), nodeOf(t, c, fs[0])
	ctx := ctxT(t, 30*time.Second)
	if err := lead.Set(ctx, "k", "1"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := holder.Get(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if holder.Stats().CacheMisses != 1 {
		t.Fatalf("the holder's read was not fetched from the leader: %+v", holder.Stats())
	}
	if err := c.RmiDown(fs[0]); err != nil {
		t.Fatal(err)
	}
	before := scrapeNode(t, lead)
	start := time.Now()
	if err := c.Put(ctx, fs[1], "k", "2"); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	after := scrapeNode(t, lead)
	expectDelta(t, before, after, 1, "kvstore_lease_waits_total")
	expectDelta(t, before, after, 1, "kvstore_invalidations_sent_total")
	waited := after.value("kvstore_lease_wait_seconds_total") - before.value("kvstore_lease_wait_seconds_total")
	// The wait is at most the leader's count of the lease (LeaseDuration
	// times 1+ClockDrift, 2.1s by default) and no longer than the write.
	if waited <= 0 || waited > 2.1+0.1 || waited > took.Seconds() {
		t.Errorf("lease wait %.3fs; the write took %v", waited, took)
	}
	t.Logf("write held %.3fs by the unreachable holder's lease (write took %v)", waited, took.Round(time.Millisecond))
	if err := c.RmiUp(fs[0]); err != nil {
		t.Fatal(err)
	}
}

// TestLeaderChangeMetrics kills the leader: the survivors count one more
// leader change and report the new epoch.
func TestLeaderChangeMetrics(t *testing.T) {
	c := newCluster(t, 3)
	ld, fs := roles(t, c)
	before := map[int]scrape{}
	for _, f := range fs {
		before[f] = scrapeNode(t, nodeOf(t, c, f))
	}
	killed := nodeOf(t, c, ld).ID()
	if err := c.Kill(ld); err != nil {
		t.Fatal(err)
	}
	nl, epoch, err := c.Leader(ctxT(t, 30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if nl == ld {
		t.Fatalf("the killed node %d leads", ld)
	}
	soon.Succeeds(t, 10*time.Second, func() error {
		for _, f := range fs {
			s := scrapeNode(t, nodeOf(t, c, f))
			changes := s.value("kvstore_leader_changes_total") - before[f].value("kvstore_leader_changes_total")
			if changes < 1 || s.value("kvstore_epoch") != float64(epoch) || s.value("kvstore_epoch") <= before[f].value("kvstore_epoch") {
				return fmt.Errorf("node %d: %v more leader changes, epoch %v (was %v, leader's %d)", f, changes, s.value("kvstore_epoch"), before[f].value("kvstore_epoch"), epoch)
			}
			if want := map[bool]float64{true: 1, false: 0}[f == nl]; s.value("kvstore_is_leader") != want {
				return fmt.Errorf("node %d: is_leader %v, want %v", f, s.value("kvstore_is_leader"), want)
			}
		}
		return nil
	})
	// The new leader reports the killed voter unreachable (with no lag: it
	// never answered in this epoch) and the other survivor caught up.
	var other int
	for _, f := range fs {
		if f != nl {
			other = f
		}
	}
	otherID := nodeOf(t, c, other).ID()
	soon.Succeeds(t, 10*time.Second, func() error {
		s := scrapeNode(t, nodeOf(t, c, nl))
		if r, ok := s.find("kvstore_replication_follower_reachable", "follower", killed); !ok || r.Gauge.GetValue() != 0 {
			return fmt.Errorf("killed %s: reachable present %v, %v", killed, ok, r)
		}
		if _, ok := s.find("kvstore_replication_lag_entries", "follower", killed); ok {
			return fmt.Errorf("killed %s: lag reported although it never answered", killed)
		}
		if s.value("kvstore_replication_follower_reachable", "follower", otherID) != 1 {
			return fmt.Errorf("%s: not reachable", otherID)
		}
		if lag, ok := s.find("kvstore_replication_lag_entries", "follower", otherID); !ok || lag.Gauge.GetValue() != 0 {
			return fmt.Errorf("%s: lag present %v, %v", otherID, ok, lag)
		}
		return nil
	})
}

// TestCachedGetDoesNotAllocate: a read answered from the cache, metrics
// included, allocates nothing.
func TestCachedGetDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	c := newCluster(t, 2)
	ld, fs := roles(t, c)
	ctx := ctxT(t, 30*time.Second)
	if err := nodeOf(t, c, ld).Set(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	f := nodeOf(t, c, fs[0])
	if _, _, err := f.Get(ctx, "k"); err != nil { // cached now, for a lease
		t.Fatal(err)
	}
	before := f.Stats().CacheHits
	bg := context.Background()
	const runs = 1000
	allocs := testing.AllocsPerRun(runs, func() {
		if _, _, err := f.Get(bg, "k"); err != nil {
			t.Fatal(err)
		}
	})
	if hits := f.Stats().CacheHits - before; hits < runs {
		t.Fatalf("only %d of %d reads were cache hits: the lease ran out", hits, runs)
	}
	if allocs != 0 {
		t.Errorf("a cached read allocates %v times", allocs)
	}
}

// TestWALFsyncMetric: a node with a data directory and fsync times every
// group's fdatasync in kvstore_disk_wal_fsync_duration_seconds; a write
// adds at least one; without fsync nothing is timed.
func TestWALFsyncMetric(t *testing.T) {
	for _, noFsync := range []bool{false, true} {
		t.Run(fmt.Sprintf("nofsync=%v", noFsync), func(t *testing.T) {
			dir := t.TempDir()
			c := cluster.StartTest(t, cluster.Options{Nodes: 1, Node: func(cfg *node.Config) {
				cfg.DataDir, cfg.NoFsync = dir, noFsync
			}})
			if err := c.WaitHealthy(ctxT(t, 30*time.Second)); err != nil {
				t.Fatal(err)
			}
			nd := nodeOf(t, c, 0)
			before := scrapeNode(t, nd)
			if err := nd.Set(ctxT(t, 30*time.Second), "k", "v"); err != nil {
				t.Fatal(err)
			}
			after := scrapeNode(t, nd)
			const name = "kvstore_disk_wal_fsync_duration_seconds"
			if _, ok := after.find(name); !ok {
				t.Fatalf("no %s", name)
			}
			grew := after.value(name) - before.value(name)
			switch {
			case noFsync && grew != 0:
				t.Errorf("without fsync %s counted %v syncs", name, grew)
			case !noFsync && (grew < 1 || after.histSum(name) <= before.histSum(name)):
				t.Errorf("a write with fsync: %s count grew by %v, sum from %v to %v; want at least one sync timed", name, grew, before.histSum(name), after.histSum(name))
			}
		})
	}
}

// TestWriteThroughANodeThatDoesNotHoldTheKey: a follower that writes a key
// it holds no copy of asks for none, so the key's next write has no copy
// there to invalidate (the leader counts none); once it read the key (a
// copy, a holding), its write invalidates that copy and keeps the new
// value, which the next read there answers from the cache.
func TestWriteThroughANodeThatDoesNotHoldTheKey(t *testing.T) {
	c := newCluster(t, 3)
	ld, fs := roles(t, c)
	lead, f := nodeOf(t, c, ld), nodeOf(t, c, fs[0])
	ctx := ctxT(t, 30*time.Second)
	const inv = "kvstore_invalidations_sent_total"
	if err := f.Set(ctx, "w", "1"); err != nil {
		t.Fatal(err)
	}
	b := scrapeNode(t, lead)
	if err := f.Set(ctx, "w", "2"); err != nil {
		t.Fatal(err)
	}
	expectDelta(t, b, scrapeNode(t, lead), 0, inv)
	if v, _, err := f.Get(ctx, "w"); err != nil || v != "2" {
		t.Fatalf("get = %q, %v", v, err)
	}
	b = scrapeNode(t, lead)
	if err := f.Set(ctx, "w", "3"); err != nil {
		t.Fatal(err)
	}
	expectDelta(t, b, scrapeNode(t, lead), 1, inv)
	s0 := f.Stats()
	if v, _, err := f.Get(ctx, "w"); err != nil || v != "3" {
		t.Fatalf("get = %q, %v", v, err)
	}
	if s1 := f.Stats(); s1.CacheHits != s0.CacheHits+1 {
		t.Fatalf("read after its own write of a key it held: not a cache hit (%+v -> %+v)", s0, s1)
	}
}

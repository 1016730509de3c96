package node

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/clock"
	"github.com/kvstore/kvstore/coord"
	"github.com/kvstore/kvstore/internal/buildinfo"
	"github.com/kvstore/kvstore/rpc/kvpb"
)

// Metrics
//
// Every Node owns its own Prometheus instruments; nothing is registered in
// the global registry, because several nodes run in one process (tests, the
// shell). Collectors returns them; register them in a registry of the
// node's own (one registry per node: the metric names carry no node label).
// The names all start with kvstore_; docs/metrics-and-containers.md lists them.
//
// The read path stays lock-free and allocation-free: the counter and
// histogram children of every (operation, outcome) pair are resolved once
// in newMetrics, and counters the node already keeps (Stats) are read at
// scrape time rather than counted twice.

// opKind indexes the operations the metrics tell apart.
type opKind int

const (
	opGet opKind = iota
	opPut
	opDelete
	numOpKinds
)

var opNames = [numOpKinds]string{opGet: "get", opPut: "put", opDelete: "delete"}

func writeKind(op kvpb.Op) opKind {
	if op == kvpb.Op_OP_DELETE {
		return opDelete
	}
	return opPut
}

// outcome classifies how an operation ended, for the outcome label.
type outcome int

const (
	outcomeOK outcome = iota
	outcomeBadRequest
	outcomeUnknown
	outcomeStopped
	outcomePartitioned
	outcomeNoQuorum
	outcomeNoLeader
	outcomeTimeout
	outcomeCanceled
	outcomeOther
	numOutcomes
)

var outcomeNames = [numOutcomes]string{
	outcomeOK:          "ok",
	outcomeBadRequest:  "bad_request",
	outcomeUnknown:     "outcome_unknown",
	outcomeStopped:     "stopped",
	outcomePartitioned: "partitioned",
	outcomeNoQuorum:    "no_quorum",
	outcomeNoLeader:    "no_leader",
	outcomeTimeout:     "timeout",
	outcomeCanceled:    "canceled",
	outcomeOther:       "other",
}

// classify maps an operation's error to its outcome. The order matters: an
// error may match several sentinels (a write cut off by a partition after it
// was sent matches ErrOutcomeUnknown and ErrPartitioned), and the first
// match is the one a client most needs to know.
func classify(err error) outcome {
	switch {
	case err == nil:
		return outcomeOK
	case errors.Is(err, kvstore.ErrBadRequest), errors.Is(err, kvstore.ErrTooLarge):
		return outcomeBadRequest
	case errors.Is(err, kvstore.ErrOutcomeUnknown):
		return outcomeUnknown
	case errors.Is(err, kvstore.ErrStopped):
		return outcomeStopped
	case errors.Is(err, kvstore.ErrPartitioned):
		return outcomePartitioned
	case errors.Is(err, kvstore.ErrNoQuorum):
		return outcomeNoQuorum
	case errors.Is(err, kvstore.ErrNoLeader):
		return outcomeNoLeader
	case errors.Is(err, kvstore.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return outcomeTimeout
	case errors.Is(err, context.Canceled):
		return outcomeCanceled
	}
	return outcomeOther
}

// LatencyBuckets are the upper bounds (seconds) of
// kvstore_operation_duration_seconds: from 1µs, where reads answered from
// the cache fall, through the milliseconds of a replicated write, to the
// seconds of an election or a lease wait.
var LatencyBuckets = []float64{
	1e-6, 2.5e-6, 5e-6,
	1e-5, 2.5e-5, 5e-5,
	1e-4, 2.5e-4, 5e-4,
	1e-3, 2.5e-3, 5e-3,
	0.01, 0.025, 0.05,
	0.1, 0.25, 0.5,
	1, 2.5, 5,
	10, 15,
}

// newWALFsyncHistogram is kvstore_disk_wal_fsync_duration_seconds, as
// etcd's etcd_disk_wal_fsync_duration_seconds: the fdatasync of each group
// the write-ahead log commits. A write waits for at least one (the
// leader's and a follower's, in parallel), so a slow disk shows here first.
func newWALFsyncHistogram() prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "kvstore_disk_wal_fsync_duration_seconds",
		Help:    "Duration of the fdatasync of each group the write-ahead log commits (nodes with a data directory and fsync; none otherwise).",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 17), // 100 µs to 6.5 s
	})
}

// metrics are one node's instruments.
type metrics struct {
	// ops counts operations by kind and outcome, except successful reads:
	// those are exactly the cache hits, misses and leader reads, summed when
	// scraped (opsCollector), so that a cached read updates no shared word
	// beyond its cache shard's.
	ops     [numOpKinds][numOutcomes]prometheus.Counter
	latency [numOpKinds]prometheus.Observer

	invalidationsSent    prometheus.Counter
	invalidationsApplied prometheus.Counter
	leaseWaits           prometheus.Counter
	leaseWaitSeconds     prometheus.Counter
	leaderChanges        prometheus.Counter
	clockJumps           prometheus.Counter
	clockSuspended       prometheus.Counter
	suspensions          prometheus.Counter
	stepDowns            prometheus.Counter
	elections            prometheus.Counter
	takeoverWaits        prometheus.Counter
	otherIncarnation     prometheus.Counter

	// born is the origin of lastAppend (on the node's clock).
	born clock.Instant
	// now reads the node's clock.
	now func() clock.Instant
	// lastAppend is 1 + nanoseconds from born to the last Append this node
	// accepted from a leader; 0 means never.
	lastAppend atomic.Int64

	leaderMu   sync.Mutex
	lastLeader coord.Leader // the last leader counted in leaderChanges

	collectors []prometheus.Collector
}

func newMetrics(n *Node) *metrics {
	m := &metrics{born: n.now(), now: n.now}
	opsVec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kvstore_operations_total",
		Help: "Client operations through this node, by operation (get, put, delete) and outcome (ok or the error class).",
	}, []string{"op", "outcome"})
	latVec := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "kvstore_operation_duration_seconds",
		Help:    "Duration of client operations through this node, whatever their outcome, by operation (reads answered from the cache: one in 64 is timed).",
		Buckets: LatencyBuckets,
	}, []string{"op"})
	for k := range numOpKinds {
		for o := range numOutcomes {
			m.ops[k][o] = opsVec.WithLabelValues(opNames[k], outcomeNames[o])
		}
		m.latency[k] = latVec.WithLabelValues(opNames[k])
	}
	m.invalidationsSent = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "kvstore_invalidations_sent_total",
		Help: "Leader: cached copies a write had to invalidate (nodes holding a live lease on the key when the write was appended; the replication stream carries the invalidation and the write waits for it).",
	})
	m.invalidationsApplied = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "kvstore_invalidations_applied_total",
		Help: "Cached copies this node dropped because it applied a newer write of the key.",
	})
	m.leaseWaits = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "kvstore_lease_waits_total",
		Help: "Leader: writes that were held until a holder's read lease ended because the holder did not acknowledge the invalidation (unreachable or slow).",
	})
	m.leaseWaitSeconds = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "kvstore_lease_wait_seconds_total",
		Help: "Leader: total time the writes counted in kvstore_lease_waits_total waited for holders after their commit was settled.",
	})
	m.leaderChanges = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "kvstore_leader_changes_total",
		Help: "Leaders (id and epoch) this node has seen in its cluster view, the first one included.",
	})
	m.clockJumps = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "kvstore_clock_jumps_total",
		Help: "Suspends of the machine this node noticed while it had a session (its clock, CLOCK_BOOTTIME on Linux, ran ahead of the monotonic clock); each dropped the cache and put the session in doubt.",
	})
	m.clockSuspended = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "kvstore_clock_suspended_seconds_total",
		Help: "Total time the suspends counted in kvstore_clock_jumps_total lasted.",
	})
	m.suspensions = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "kvstore_suspensions_total",
		Help: "Times this node stopped serving because its coordinator session was in doubt (deadline passed, session ended, clock jumped); each dropped the cache and ended any leadership.",
	})
	m.stepDowns = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "kvstore_leader_step_downs_total",
		Help: "Leaderships this node gave up because it heard from no majority of the voters for the quorum window (CheckQuorum).",
	})
	m.elections = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "kvstore_elections_won_total",
		Help: "Times the coordinator elected this node leader (each starts a takeover).",
	})
	m.takeoverWaits = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "kvstore_takeover_lease_waits_total",
		Help: "Takeovers of this node that waited out the leases of older epochs because a member with a live session did not answer Prepare.",
	})
	m.otherIncarnation = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "kvstore_peer_other_incarnation_total",
		Help: "Node-to-node messages refused because they came from another incarnation of this cluster: a node of another cluster with the same name, at an address this cluster's nodes still know.",
	})
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	counter := func(name, help string, c *atomic.Uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(c.Load()) })
	}
	b2f := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	m.collectors = []prometheus.Collector{
		&opsCollector{vec: opsVec, okGet: m.ops[opGet][outcomeOK], n: n}, latVec,
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "kvstore_cache_hits_total", Help: "Reads answered from this node's cache under a valid lease."},
			func() float64 { return float64(n.reader.cache.hits()) }),
		counter("kvstore_cache_misses_total", "Reads this node fetched from the leader (and cached if granted a lease).", &n.reader.misses),
		counter("kvstore_leader_reads_total", "Reads through this node answered by it as the leader.", &n.reader.leaderReads),
		counter("kvstore_lease_renewals_total", "Cached copies whose lease the leader renewed (in batches, before the lease ends, instead of a fetch after it).", &n.reader.renewals),
		counter("kvstore_prior_reads_total", "Leader: reads answered with a key's latest visible value while a newer write of it was not visible yet (instead of waiting for that write).", &n.reader.priorReads),
		m.invalidationsSent, m.invalidationsApplied, m.leaseWaits, m.leaseWaitSeconds, m.leaderChanges,
		m.clockJumps, m.clockSuspended, m.suspensions, m.stepDowns, m.elections, m.takeoverWaits, m.otherIncarnation,
		gauge("kvstore_epoch", "Epoch of the leader this node currently sees (0: none seen yet).",
			func() float64 { return float64(n.Leader().Epoch) }),
		gauge("kvstore_accepted_epoch", "Highest epoch this node has promised to a leader.",
			func() float64 { return float64(n.rep.epoch()) }),
		gauge("kvstore_is_leader", "1 if this node leads and serves, else 0.",
			func() float64 { return b2f(n.IsLeader()) }),
		gauge("kvstore_session_healthy", "1 if this node's last coordinator keep-alive succeeded and its connection is up, else 0. A 0 while kvstore_serving is 1 is a blip the session deadline still covers.",
			func() float64 {
				st := n.serving.Load()
				return b2f(st.sess != nil && st.sess.Healthy())
			}),
		gauge("kvstore_candidate", "1 while this node stands for election (it withdraws while no majority of the voters answers it: pre-vote), else 0.",
			func() float64 { return b2f(n.camp.candidate.Load()) }),
		gauge("kvstore_serving", "1 if this node serves (its coordinator session is provably live), else 0.",
			func() float64 { return b2f(n.State() == StateOK) }),
		gauge("kvstore_recovering", "1 if this node restarted without its store and waits for a leader to reconcile it, else 0.",
			func() float64 { return b2f(n.Recovering()) }),
		gauge("kvstore_applied_seq", "Sequence number of the last entry this node applied (comparable across nodes: it grows across epochs).",
			func() float64 { return float64(n.Applied().Seq) }),
		&replicationCollector{n: n},
		n.walFsync,
		buildInfoCollector(),
	}
	return m
}

// buildInfoCollector exports kvstore_build_info, the constant 1 labelled
// with the build this node runs (the usual Prometheus *_build_info shape:
// join on it to tell a mixed-version cluster apart).
func buildInfoCollector() prometheus.Collector {
	bi := buildinfo.Get()
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "kvstore_build_info",
		Help: "Always 1; the labels say which build this node runs: version (set at link time, \"devel\" otherwise), VCS commit and Go version.",
		ConstLabels: prometheus.Labels{
			"version": bi.Version, "commit": bi.Commit, "go_version": bi.GoVersion,
		},
	})
	g.Set(1)
	return g
}

// cachedSample is how often a cached read is timed for the latency
// histogram: one in cachedSample. Reading the clock twice per read would
// cost more than the read itself; every cached read is still counted.
const cachedSample = 64

// cachedRead records a read answered from the cache, which began at start;
// hit numbers it among its cache shard's hits. It is counted among the
// successful reads by the cache's own hit counters (opsCollector).
func (m *metrics) cachedRead(start clock.Instant, hit uint64) {
	if hit%cachedSample == 0 {
		m.latency[opGet].Observe(m.now().Sub(start).Seconds())
	}
}

// observe records one finished operation. A successful read is counted by
// the node's hit, miss and leader-read counters instead (opsCollector).
func (m *metrics) observe(k opKind, start clock.Instant, err error) {
	m.latency[k].Observe(m.now().Sub(start).Seconds())
	if k == opGet && err == nil {
		return
	}
	m.ops[k][classify(err)].Inc()
}

// opsCollector is kvstore_operations_total: the counter vector, with the
// successful reads (op get, outcome ok) taken from the node's read counters:
// every successful read is exactly one cache hit, miss or leader read.
type opsCollector struct {
	vec   *prometheus.CounterVec
	okGet prometheus.Counter // the vector's (get, ok) child, never incremented
	n     *Node
}

func (c *opsCollector) Describe(ch chan<- *prometheus.Desc) { c.vec.Describe(ch) }

func (c *opsCollector) Collect(ch chan<- prometheus.Metric) {
	in := make(chan prometheus.Metric)
	go func() {
		c.vec.Collect(in)
		close(in)
	}()
	for m := range in {
		if m != prometheus.Metric(c.okGet) {
			ch <- m
			continue
		}
		s := c.n.Stats()
		ok := float64(s.CacheHits + s.CacheMisses + s.LeaderReads)
		ch <- prometheus.MustNewConstMetric(m.Desc(), prometheus.CounterValue, ok, opNames[opGet], outcomeNames[outcomeOK])
	}
}

// sawLeader counts l in kvstore_leader_changes_total if it differs from the
// last leader counted. An empty leader (an election under way) is not a
// change by itself.
// suspended counts a stop of serving (kvstore_suspensions_total).
func (m *metrics) suspended() { m.suspensions.Inc() }

// steppedDown counts a leadership given up by CheckQuorum.
func (m *metrics) steppedDown() { m.stepDowns.Inc() }

func (m *metrics) sawLeader(l coord.Leader) {
	if l.ID == "" {
		return
	}
	m.leaderMu.Lock()
	defer m.leaderMu.Unlock()
	if l != m.lastLeader {
		m.lastLeader = l
		m.leaderChanges.Inc()
	}
}

// appended records that an Append from a leader whose epoch this node
// accepts reached it at now (whether or not its entries fitted).
func (m *metrics) appended(now clock.Instant) {
	m.lastAppend.Store(int64(now.Sub(m.born)) + 1)
}

// Collectors returns the node's Prometheus collectors. They belong to this
// node only: register them in a registry of their own, one per node (the
// names carry no node label, so two nodes' collectors collide in one
// registry). Registering them is optional; the node counts regardless.
func (n *Node) Collectors() []prometheus.Collector {
	return append([]prometheus.Collector(nil), n.met.collectors...)
}

// replicationCollector reports replication progress, computed at scrape
// time: per follower on a leader, and the age of the last Append on a
// follower.
type replicationCollector struct{ n *Node }

var (
	lagDesc = prometheus.NewDesc("kvstore_replication_lag_entries",
		"Leader: entries a follower lacks (the leader's last seq minus the last seq the follower acknowledged in this epoch); only followers that answered in this epoch appear.",
		[]string{"follower"}, nil)
	reachableDesc = prometheus.NewDesc("kvstore_replication_follower_reachable",
		"Leader: 1 if the follower answered the leader's last Append, else 0 (a voter or member it cannot reach, or has not reached yet).",
		[]string{"follower"}, nil)
	appendAgeDesc = prometheus.NewDesc("kvstore_last_append_age_seconds",
		"Follower: seconds since an Append (entries, heartbeat or snapshot) last reached this node from a leader whose epoch it accepts; absent on the leader and before the first Append.",
		nil, nil)
)

func (c *replicationCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- lagDesc
	ch <- reachableDesc
	ch <- appendAgeDesc
}

func (c *replicationCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	if l := n.lead.Load(); l != nil {
		l.mu.Lock()
		type row struct {
			id                  string
			lag                 uint64
			answered, reachable bool
		}
		rows := make([]row, 0, len(l.repl.peers))
		for id, p := range l.repl.peers {
			rows = append(rows, row{id, l.lastSeq - min(p.match, l.lastSeq), p.answered, p.reachable})
		}
		l.mu.Unlock()
		for _, r := range rows {
			if r.answered {
				ch <- prometheus.MustNewConstMetric(lagDesc, prometheus.GaugeValue, float64(r.lag), r.id)
			}
			reach := 0.0
			if r.reachable {
				reach = 1
			}
			ch <- prometheus.MustNewConstMetric(reachableDesc, prometheus.GaugeValue, reach, r.id)
		}
		return
	}
	if last := n.met.lastAppend.Load(); last != 0 {
		age := n.now().Sub(n.met.born) - time.Duration(last-1)
		ch <- prometheus.MustNewConstMetric(appendAgeDesc, prometheus.GaugeValue, max(age, 0).Seconds())
	}
}

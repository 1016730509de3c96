// Package sim runs a whole KVStore cluster in one process, inside a
// testing/synctest bubble: nodes on an in-memory network
// (rpc/memtransport), an in-memory coordinator (coord/memcoord), one clock
// per node running at its own rate (clock.Skewed), all on the bubble's
// virtual time, so that a lease or a session TTL costs no wall-clock time.
// A seeded Schedule of faults (crashes, restarts with and without data,
// partitions per link, lossy and slow links, coordinator cuts and session
// loss, clock rate changes) plays while concurrent clients read and write
// a few keys through every node; the history they saw and the nodes' final
// state are returned for the linearizability and durability checkers.
//
// Run must be called inside a synctest bubble (synctest.Test): it sleeps
// for seconds of virtual time.
//
// The tests: TestSimulation runs seeds 1..100 (20 under -race; .ci/run
// runs 1,000: KVSTORE_SIM_SEEDS=1000), every clock within the drift
// margin, and fails on any violation; KVSTORE_SIM_SEED=<seed> replays one
// schedule (go test -run 'TestSimulation$' ./robustness/sim), and a
// failure prints that command, the schedule and the paths of the history
// and the log. TestSimulationFindsSkewBeyondMargin shows the checks have
// teeth: with clocks beyond the margin, some schedule must fail.
package sim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/clock"
	"github.com/kvstore/kvstore/coord/memcoord"
	"github.com/kvstore/kvstore/node"
	"github.com/kvstore/kvstore/robustness/linearizability"
	"github.com/kvstore/kvstore/robustness/workload"
	"github.com/kvstore/kvstore/rpc/memtransport"
)

// Options configure one run.
type Options struct {
	Schedule Schedule
	// Dir holds the nodes' data directories (a test's TempDir).
	Dir string
	// Keys is how many keys the clients use; Clients how many clients
	// (spread over the nodes), the last Readers of them only reading (so
	// that every node is read from while writes through it hang).
	Keys, Clients, Readers int
	// Settle is how long after the faults end (everything healed, every
	// node restarted) the clients go on; Converge bounds the wait, after
	// them, for every node to catch up.
	Settle, Converge time.Duration
	// Config adjusts every node's config (nil: the simulation's defaults).
	Config func(*node.Config)
}

// DefaultOptions returns the options of the simulation test for s.
func DefaultOptions(s Schedule, dir string) Options {
	return Options{Schedule: s, Dir: dir, Keys: 3, Clients: 3 * s.Nodes, Readers: s.Nodes, Settle: 3 * time.Second, Converge: time.Minute}
}

// Config returns the node config the simulation runs: the defaults, with
// the lease and session at their shortest.
func Config() node.Config {
	cfg := node.DefaultConfig()
	cfg.Cluster = "sim"
	cfg.SessionTTL = time.Second
	cfg.LeaseDuration = time.Second
	cfg.Heartbeat = 100 * time.Millisecond
	cfg.RPCTimeout = 500 * time.Millisecond
	cfg.QuorumTimeout = 2 * time.Second
	cfg.OpTimeout = 5 * time.Second
	return cfg
}

// Result is what a run observed.
type Result struct {
	History []linearizability.Op
	// Final is every node's final state of every key, once they all
	// caught up; nil if they did not within Options.Converge
	// (ConvergeErr says why).
	Final       []map[string]linearizability.FinalValue
	ConvergeErr error
	Workload    workload.Stats
	Net         memtransport.Stats
	// CacheHits is how many reads the running nodes answered from their
	// caches (a restarted node counts from its restart).
	CacheHits uint64
	// Forwarded is how many writes and fetches the running nodes sent to
	// their leader on Forward streams (counted as CacheHits is).
	Forwarded uint64
	// Log is what happened: the events played and the nodes' logs.
	Log []byte
}

// Run plays opts.Schedule on a new cluster and returns what it saw. It
// must run inside a synctest bubble. err reports a harness failure (the
// cluster never served), not a violation.
func Run(opts Options) (Result, error) {
	s := opts.Schedule
	c := &cluster{
		opts:  opts,
		srv:   memcoord.NewServer(),
		net:   memtransport.New(s.Seed),
		nodes: make([]*slot, s.Nodes),
	}
	c.setStart(time.Now())
	c.logger = slog.New(slog.NewTextHandler(&c.log, &slog.HandlerOptions{Level: slog.LevelInfo, ReplaceAttr: c.virtualTime}))
	for i := range c.nodes {
		c.nodes[i] = &slot{id: fmt.Sprintf("n%d", i+1), clk: clock.NewSkewed(1), start: make(chan struct{}, 1)}
	}
	defer c.stopAll()
	// Rates at time zero first: the nodes start on their own clocks.
	events := s.Events
	for len(events) > 0 && events[0].At == 0 && events[0].Kind == Rate {
		c.play(events[0])
		events = events[1:]
	}
	for i := range c.nodes {
		if err := c.startNode(i, true); err != nil {
			return Result{Log: c.log.bytes()}, fmt.Errorf("start n%d: %w", i+1, err)
		}
	}
	if err := c.waitServing(30 * time.Second); err != nil {
		return Result{Log: c.log.bytes()}, err
	}
	// Faults begin once every node is a voter: a lost disk is survivable
	// only among enough voters (of two, one alone is no majority).
	if err := c.waitVoters(30 * time.Second); err != nil {
		return Result{Log: c.log.bytes()}, err
	}
	c.setStart(time.Now())
	c.logf("cluster serving; faults begin")

	rec := linearizability.NewRecorder(nil)
	wctx, stopWorkload := context.WithTimeout(context.Background(), s.Length+opts.Settle)
	defer stopWorkload()
	var stats workload.Stats
	done := make(chan struct{})
	go func() {
		defer close(done)
		w := workload.Workload{
			Clients: opts.Clients, Readers: opts.Readers, Keys: opts.Keys, OpTimeout: 3 * time.Second,
			ReadTimeout: time.Second, Pause: 30 * time.Millisecond, Seed: s.Seed,
		}
		stats = w.Run(wctx, c, rec)
	}()

	for _, e := range events {
		time.Sleep(time.Until(c.started().Add(e.At)))
		c.play(e)
	}
	time.Sleep(time.Until(c.started().Add(s.Length)))
	c.healAll()
	<-done

	res := Result{History: rec.History(), Workload: stats}
	res.Final, res.ConvergeErr = c.converge(opts.Converge)
	res.Net = c.net.Stats()
	for i := range c.nodes {
		if n := c.node(i); n != nil {
			st := n.Stats()
			res.CacheHits += st.CacheHits
			res.Forwarded += st.Forwarded
		}
	}
	c.stopAll()
	res.Log = c.log.bytes()
	return res, nil
}

// cluster is the simulated cluster; its methods run in the bubble.
type cluster struct {
	opts   Options
	srv    *memcoord.Server
	net    *memtransport.Network
	logger *slog.Logger
	log    syncBuffer
	start  atomic.Pointer[time.Time] // when the faults began (before: the run)

	mu      sync.Mutex // guards nodes' n and coord, and stopped
	nodes   []*slot
	stopped bool           // stopAll began: no node starts any more
	bg      sync.WaitGroup // restarts in the background
}

// slot is one node's place in the cluster: the machine, which outlives
// the process (its clock, its data directory).
type slot struct {
	// start admits one start at a time: a channel, not a mutex, because
	// a goroutine blocked on a mutex stops the bubble's time, and a start
	// waits on timers.
	start chan struct{}
	id    string
	clk   *clock.Skewed
	dir   string
	disks int // data directories so far
	n     *node.Node
	coord *memcoord.Coordinator
}

func (c *cluster) setStart(t time.Time) { c.start.Store(&t) }

func (c *cluster) started() time.Time { return *c.start.Load() }

// virtualTime shows log times as the time since the faults began.
func (c *cluster) virtualTime(_ []string, a slog.Attr) slog.Attr {
	if a.Key == slog.TimeKey {
		return slog.String("t", time.Since(c.started()).Round(time.Millisecond).String())
	}
	return a
}

func (c *cluster) logf(format string, args ...any) {
	fmt.Fprintf(&c.log, "t=%v sim: %s\n", time.Since(c.started()).Round(time.Millisecond), fmt.Sprintf(format, args...))
}

// startNode starts node i, on its data directory or a new empty one.
func (c *cluster) startNode(i int, withData bool) error {
	sl := c.nodes[i]
	sl.start <- struct{}{}
	defer func() { <-sl.start }()
	if c.node(i) != nil {
		return nil // started meanwhile
	}
	if !withData || sl.dir == "" {
		sl.disks++
		sl.dir = filepath.Join(c.opts.Dir, fmt.Sprintf("%s-%d", sl.id, sl.disks))
	}
	co, err := memcoord.New(c.srv, memcoord.Config{Name: sl.id, Clock: sl.clk})
	if err != nil {
		return err
	}
	cfg := Config()
	// Each node keeps its own number of Appends in flight when it leads,
	// from 1 (one at a time) to 4, as the seed and its id pick: every
	// setting, and nodes that differ, run across the seeds.
	h := fnv.New64a()
	fmt.Fprint(h, c.opts.Schedule.Seed, sl.id)
	cfg.AppendsInFlight = 1 + int(h.Sum64()%4)
	if c.opts.Config != nil {
		c.opts.Config(&cfg)
	}
	cfg.ID, cfg.Coordinator, cfg.Clock = sl.id, co, sl.clk
	cfg.NoListen, cfg.AdvertiseAddr, cfg.Transport = true, sl.id, c.net.Endpoint(sl.id)
	cfg.DataDir, cfg.NoFsync = sl.dir, true
	cfg.Logger = c.logger
	n, err := node.New(cfg)
	if err != nil {
		_ = co.Close()
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		n.Kill()
		_ = co.Close()
		return err
	}
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		n.Kill()
		_ = co.Close()
		return errStopped
	}
	c.net.Register(sl.id, n.PeerService())
	sl.n, sl.coord = n, co
	c.mu.Unlock()
	return nil
}

// crash kills node i, if it runs.
func (c *cluster) crash(i int) {
	sl := c.nodes[i]
	c.mu.Lock()
	n, co := sl.n, sl.coord
	sl.n, sl.coord = nil, nil
	c.mu.Unlock()
	if n == nil {
		return
	}
	c.net.Unregister(sl.id)
	n.Kill()
	_ = co.Close()
}

// restart starts node i again, retrying until it starts or the faults end
// (a cut coordinator keeps Start waiting).
func (c *cluster) restart(i int, withData bool) {
	for {
		err := c.startNode(i, withData)
		if err == nil || errors.Is(err, errStopped) {
			return
		}
		c.logf("restart n%d failed: %v", i+1, err)
		if time.Since(c.started()) > c.opts.Schedule.Length+c.opts.Converge {
			return
		}
		withData = true // the directory is the new one now
		time.Sleep(500 * time.Millisecond)
	}
}

func (c *cluster) play(e Event) {
	c.logf("%s", e)
	switch e.Kind {
	case Crash:
		c.crash(e.Node)
	case Restart:
		c.background(func() { c.restart(e.Node, e.WithData) })
	case Cut:
		c.net.Cut(c.nodes[e.Node].id, c.nodes[e.Peer].id, true)
	case Uncut:
		c.net.Cut(c.nodes[e.Node].id, c.nodes[e.Peer].id, false)
	case Degrade, Restore:
		from, to := c.nodes[e.Node].id, c.nodes[e.Peer].id
		f := e.Faults
		f.Cut = c.net.Faults(from, to).Cut
		c.net.SetFaults(from, to, f)
	case CoordCut:
		c.srv.Cut(c.nodes[e.Node].id)
	case CoordHeal:
		c.srv.Heal(c.nodes[e.Node].id)
	case Expire:
		c.srv.ExpireSessions(c.nodes[e.Node].id)
	case Rate:
		c.nodes[e.Node].clk.SetRate(e.Rate)
	}
}

// healAll ends every fault and restarts every node that is down; the
// clocks keep their rates.
func (c *cluster) healAll() {
	c.logf("faults end: healing everything")
	c.net.Heal()
	for i, sl := range c.nodes {
		c.srv.Heal(sl.id)
		c.mu.Lock()
		down := sl.n == nil
		c.mu.Unlock()
		if down {
			// A restart of the schedule may be retrying: it will find
			// the node running.
			c.background(func() { c.restart(i, true) })
		}
	}
}

// errStopped ends a start that stopAll overtook.
var errStopped = errors.New("sim: the cluster is stopping")

// background runs f in a goroutine stopAll waits for.
func (c *cluster) background(f func()) {
	c.bg.Add(1)
	go func() {
		defer c.bg.Done()
		f()
	}()
}

// node returns node i's running node, or nil.
func (c *cluster) node(i int) *node.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i].n
}

func (c *cluster) waitServing(d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for i := range c.nodes {
		if err := c.node(i).WaitServing(ctx); err != nil {
			return err
		}
	}
	return nil
}

// waitVoters waits until the voter record names every node.
func (c *cluster) waitVoters(d time.Duration) error {
	co := c.srv.Connect("sim-observer")
	defer co.Close()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for {
		v, err := co.Voters(ctx)
		if err == nil && len(v.IDs) == len(c.nodes) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("voters %v (err %v) after %v, want all %d nodes: %w", v.IDs, err, d, len(c.nodes), ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// converge waits until every node runs, serves, is reconciled and has
// applied what the leader applied, then reads every key from every node.
func (c *cluster) converge(d time.Duration) ([]map[string]linearizability.FinalValue, error) {
	deadline := time.Now().Add(d)
	var why error
	for {
		if why = c.caughtUp(); why == nil {
			break
		}
		if time.Now().After(deadline) {
			c.logf("did not converge: %v", why)
			return nil, fmt.Errorf("not converged %v after the faults: %w", d, why)
		}
		time.Sleep(50 * time.Millisecond)
	}
	final := make([]map[string]linearizability.FinalValue, len(c.nodes))
	for i := range c.nodes {
		n := c.node(i)
		final[i] = make(map[string]linearizability.FinalValue)
		var b strings.Builder
		for k := range c.opts.Keys {
			key := fmt.Sprint("k", k)
			v, found, ver := n.LocalItem(key)
			final[i][key] = linearizability.FinalValue{Value: v, Found: found}
			fmt.Fprintf(&b, " %s=%q@%v", key, v, ver)
		}
		// What the durability check reads, with the positions, for a
		// failure to be read from the log.
		c.logf("final n%d: applied %v leader %v recovering %v:%s", i+1, n.Applied(), n.IsLeader(), n.Recovering(), b.String())
	}
	return final, nil
}

// caughtUp is nil once every node serves, is reconciled and has applied
// what its serving leader applied.
func (c *cluster) caughtUp() error {
	var leader *node.Node
	for i := range c.nodes {
		n := c.node(i)
		if n == nil {
			return fmt.Errorf("n%d is down", i+1)
		}
		// Asked once: a node that begins to serve between two calls
		// would otherwise pass as caught up (an error, then nil).
		if err := n.Ready(); err != nil {
			return err
		}
		switch {
		case n.Recovering():
			return fmt.Errorf("n%d is recovering", i+1)
		case n.IsLeader():
			leader = n
		}
	}
	if leader == nil {
		return errors.New("no serving leader")
	}
	want := leader.Applied()
	for i := range c.nodes {
		if got := c.node(i).Applied(); got != want {
			return fmt.Errorf("n%d applied %v, the leader %v", i+1, got, want)
		}
	}
	return nil
}

// stopAll closes every node and its coordinator connection.
func (c *cluster) stopAll() {
	c.mu.Lock()
	c.stopped = true
	c.mu.Unlock()
	c.bg.Wait()
	for i, sl := range c.nodes {
		c.mu.Lock()
		n, co := sl.n, sl.coord
		sl.n, sl.coord = nil, nil
		c.mu.Unlock()
		if n != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if err := n.Close(ctx); err != nil {
				c.logf("close n%d: %v", i+1, err)
			}
			cancel()
			_ = co.Close()
		}
	}
	c.net.Close()
}

// Size implements workload.Client.
func (c *cluster) Size() int { return len(c.nodes) }

// errDown is the answer of a node that is not running: definite (the
// request went nowhere).
var errDown = fmt.Errorf("sim: node down: %w", kvstore.ErrStopped)

// Get implements workload.Client.
func (c *cluster) Get(ctx context.Context, i int, key string) (string, bool, error) {
	n := c.node(i)
	if n == nil {
		return "", false, errDown
	}
	return n.Get(ctx, key)
}

// Put implements workload.Client.
func (c *cluster) Put(ctx context.Context, i int, key, value string) error {
	n := c.node(i)
	if n == nil {
		return errDown
	}
	return n.Set(ctx, key, value)
}

// Delete implements workload.Client.
func (c *cluster) Delete(ctx context.Context, i int, key string) error {
	n := c.node(i)
	if n == nil {
		return errDown
	}
	return n.Delete(ctx, key)
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

// WriteFile writes data to dir/name, creating dir.
func WriteFile(dir, name string, data []byte) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	p := filepath.Join(dir, name)
	return p, os.WriteFile(p, data, 0o644)
}

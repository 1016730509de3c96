package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/clock"
	"github.com/kvstore/kvstore/coord"
	"github.com/kvstore/kvstore/durable"
	"github.com/kvstore/kvstore/rpc"
	"github.com/kvstore/kvstore/rpc/kvpb"
	"github.com/kvstore/kvstore/store"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// State is a node's serving state.
type State string

// Node states.
const (
	StateStarting  State = "starting"  // no coordinator session yet
	StateOK        State = "ok"        // serving
	StateSuspended State = "suspended" // cannot prove its session is live
	StateStopped   State = "stopped"   // closed or killed
)

// Stats are a node's counters.
type Stats struct {
	CacheHits   uint64 // reads served from the local cache
	CacheMisses uint64 // reads that went to the leader
	LeaderReads uint64 // reads served by this node as leader, not from its cache
	// FetchesServed counts the reads this node answered for followers as
	// leader (their cache misses).
	FetchesServed uint64
	Writes        uint64 // writes acknowledged through this node
}

// Node is one KVStore replica. Create it with New, run it with Start, stop
// it with Close (graceful) or Kill (crash). All methods are safe for
// concurrent use.
type Node struct {
	cfg Config
	log *slog.Logger
	clk clock.Clock // Config.Clock: leases and deadlines

	lis   net.Listener // nil with Config.NoListen
	srv   *grpc.Server
	addr  string
	pool  Transport // Config.Transport, or gRPC connections (transport.go)
	local localGate // in-memory calls in flight (PeerService)

	ctx    context.Context // canceled by Close or Kill
	cancel context.CancelCauseFunc
	wg     sync.WaitGroup
	closed atomic.Bool
	killed atomic.Bool
	// startedRecovering: the node was recovering when Start returned.
	startedRecovering atomic.Bool
	stopped           chan struct{} // closed once Close or Kill has finished
	removed           atomic.Bool   // told to leave by the leader (members.go)

	rpcDown atomic.Bool // inbound node-to-node RPC refused (rmi-down)

	// candidate: the node stands for election (campaign.go); reach: what
	// the current session's probes heard (nil before the first session).
	candidate atomic.Bool
	reach     atomic.Pointer[reach]
	// sessionHold is how long (a time.Duration) the session loop waits
	// before the next session, once: set by a leader that closed its
	// session after stepping down (campaign.go).
	sessionHold atomic.Int64

	// serving is the current serving state; its ctx is canceled (with cause
	// ErrPartitioned or ErrStopped) the moment the node stops serving.
	serving atomic.Pointer[servingState]

	// view is the latest cluster view from the coordinator.
	view atomic.Pointer[viewState]

	// mu guards store, acceptedEpoch, accepted, recovering and viewCh.
	// Lock order: leader.mu, then mu, then a cache shard's lock.
	mu            sync.Mutex
	store         *store.Store
	acceptedEpoch int64
	// accepted is the leadership acceptedEpoch was promised to (zero: none
	// known): a second leadership of the same epoch is refused.
	accepted   leadership
	recovering bool
	viewCh     chan struct{} // closed and replaced when view or serving changes

	// disk is the durable copy of store (nil without Config.DataDir); every
	// change of store is submitted to it under mu (persist.go). restored
	// reports that the store was loaded from it at start and a leader had
	// reconciled it (durable.State.Unreconciled clear). unreconciled is
	// the mark on disk as submitted (persist.go); guarded by mu.
	disk         *durable.DB
	restored     bool
	unreconciled bool
	lastPending  *durable.Pending
	// incarnation is the cluster incarnation the data directory belongs
	// to ("" if none is recorded, and without a data directory); read and
	// written only by openDisk and Start, before the node's goroutines.
	incarnation string

	// cache is the read cache (cache.go: its shards have their own locks).
	// acceptedEpochA mirrors acceptedEpoch for the lock-free check on the
	// read path.
	cache          *cache
	acceptedEpochA atomic.Int64

	lead atomic.Pointer[leader] // non-nil while this node leads

	fwd  inflight // calls in flight to a remote leader (failover.go)
	recs records  // the coordinator's records as last read, for Status (client.go)

	// flightMu guards flights: the fetch of each key in flight to the
	// leader, shared by concurrent misses (fetchMerged).
	flightMu sync.Mutex
	flights  map[string]*flight

	reqSeq atomic.Uint64
	incarn string

	limits *limiter // client API limits (limits.go)

	misses, leaderReads, writes, served atomic.Uint64

	met *metrics // Prometheus instruments (metrics.go)
}

type servingState struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	sess   coord.Session // nil before the first session
	state  State
}

type viewState struct {
	leader  coord.Leader
	members map[string]string
}

// New validates cfg, binds the listener and returns a node that is not yet
// running. Nothing is leaked if it fails.
func New(cfg Config) (*Node, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.System()
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	// Every epoch the node sees is the coordinator's raw epoch plus its
	// epoch base (coord.WithEpochBase), so that epochs stay monotone
	// across a coordinator rebuild.
	cfg.Coordinator = coord.WithEpochBase(cfg.Coordinator)
	var lis net.Listener
	addr := cfg.AdvertiseAddr
	if !cfg.NoListen {
		var err error
		if lis, err = net.Listen("tcp", cfg.ListenAddr); err != nil {
			return nil, fmt.Errorf("node %s: listen: %w", cfg.ID, err)
		}
		if addr == "" {
			addr = lis.Addr().String()
		}
	}
	var pool Transport = cfg.Transport
	if pool == nil {
		pool = rpc.NewPool(cfg.Dial, cfg.PeerTLS)
	}
	n := &Node{
		cfg:     cfg,
		log:     cfg.Logger.With("node", cfg.ID),
		clk:     cfg.Clock,
		lis:     lis,
		addr:    addr,
		pool:    pool,
		store:   store.New(cfg.MaxRequests),
		cache:   newCache(),
		flights: make(map[string]*flight),
		viewCh:  make(chan struct{}),
		stopped: make(chan struct{}),
		incarn:  strconv.FormatInt(time.Now().UnixNano(), 36),
	}
	n.limits = newLimiter(&n.cfg)
	if err := n.openDisk(); err != nil {
		if lis != nil {
			_ = lis.Close()
		}
		return nil, err
	}
	n.met = newMetrics(n)
	n.ctx, n.cancel = context.WithCancelCause(context.Background())
	n.srv = grpc.NewServer(
		grpc.InTapHandle(n.tap),
		grpc.ChainUnaryInterceptor(n.authorize, n.intercept),
		serverCreds(cfg.ServerTLS),
		grpc.MaxRecvMsgSize(rpc.MaxMsgSize),
		grpc.MaxSendMsgSize(rpc.MaxMsgSize),
		grpc.KeepaliveEnforcementPolicy(rpc.PeerKeepalivePolicy),
	)
	kvpb.RegisterPeerServer(n.srv, &peerServer{n: n})
	kvpb.RegisterKVServer(n.srv, &clientServer{n: n})
	down, cancel := context.WithCancelCause(context.Background())
	cancel(fmt.Errorf("node %s: %w (no session yet)", cfg.ID, kvstore.ErrPartitioned))
	n.serving.Store(&servingState{ctx: down, cancel: cancel, state: StateStarting})
	n.view.Store(&viewState{})
	return n, nil
}

// ID is the node's id.
func (n *Node) ID() string { return n.cfg.ID }

// Addr is the address of the node's gRPC server: the node-to-node service
// and the client service (kvpb.KV).
func (n *Node) Addr() string { return n.addr }

// Start claims the coordinator prefix for Config.Cluster (a prefix recorded
// as another cluster's fails with coord.ErrOtherCluster), records the
// config's Settings as the cluster's if none are recorded and otherwise
// checks them (a difference fails with coord.ErrSettingsMismatch, naming
// the field and its flag), checks that the data directory belongs to the
// cluster record's incarnation (ErrOtherIncarnation if it belongs to
// another; one with none records it), runs the recovery command if
// Config.ForceNewCluster asks (ErrForceRefused while a majority of the
// voters is alive), bootstraps the voter record if there is none (a node
// that holds data refuses with ErrCoordinatorLost instead), serves RPC and
// starts the session loop. A voter that comes back without reconciled
// data is recovering, unless no leader has sealed the voter record yet
// (coord.Voters.Unsealed): then nothing was ever committed, as after its
// own bootstrap whose answer was lost. It returns once the node is
// running; use WaitServing to wait until it serves.
func (n *Node) Start(ctx context.Context) error {
	inc, err := n.cfg.Coordinator.ClaimCluster(ctx, n.cfg.Cluster)
	if err != nil {
		return fmt.Errorf("node %s: %w", n.cfg.ID, err)
	}
	rec, err := n.cfg.Coordinator.ClaimSettings(ctx, n.cfg.Settings())
	if err != nil {
		return fmt.Errorf("node %s: claim settings: %w", n.cfg.ID, err)
	}
	if err := n.cfg.checkSettings(rec); err != nil {
		return fmt.Errorf("node %s: %w", n.cfg.ID, err)
	}
	if err := n.checkIncarnation(inc); err != nil {
		return err
	}
	if n.cfg.ForceNewCluster != "" {
		if err := n.forceNewCluster(ctx, inc); err != nil {
			return err
		}
	}
	voters, err := n.cfg.Coordinator.Voters(ctx)
	if err != nil {
		return fmt.Errorf("node %s: read voters: %w", n.cfg.ID, err)
	}
	if voters.Version == 0 && n.hasData() && !n.cfg.Faults.BootstrapWithData {
		n.log.Error("refusing to start: no voter record but this node holds data", "err", ErrCoordinatorLost, "applied", n.Applied())
		return fmt.Errorf("node %s: %w", n.cfg.ID, ErrCoordinatorLost)
	}
	// A new directory, a lost disk, one from before incarnations: it
	// belongs to this incarnation from now on, durably before it counts.
	if err := n.adoptIncarnation(ctx, inc); err != nil {
		return err
	}
	bootstrapped := false
	if voters.Version == 0 {
		// No voter record: nothing was ever committed, so this node's
		// state is reconciled by definition. Record it before the record
		// makes this node the only voter: restarted after a crash, it
		// must not wait for a leader that only it could be.
		if err := n.bootstrapReconciled(ctx); err != nil {
			return fmt.Errorf("node %s: %w", n.cfg.ID, err)
		}
		err := n.cfg.Coordinator.CreateVoters(ctx, []string{n.cfg.ID})
		switch {
		case err == nil:
			n.log.Info("bootstrapped the voter record", "voters", []string{n.cfg.ID})
			bootstrapped = true
		case errors.Is(err, coord.ErrConflict):
			if voters, err = n.cfg.Coordinator.Voters(ctx); err != nil {
				return fmt.Errorf("node %s: read voters: %w", n.cfg.ID, err)
			}
		default:
			// The record may have been written all the same (an answer
			// lost): the next start finds it unsealed, naming this node.
			return fmt.Errorf("node %s: create voters: %w", n.cfg.ID, err)
		}
	}
	if !bootstrapped && voters.Contains(n.cfg.ID) && !n.restored {
		if err := n.rejoinWithoutData(ctx, voters); err != nil {
			return err
		}
	}
	n.startedRecovering.Store(n.Recovering())
	if n.lis != nil {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			_ = n.srv.Serve(n.lis)
		}()
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.sessionLoop()
	}()
	return nil
}

// Close stops the node gracefully: it stops serving (pending operations
// fail with ErrStopped), resigns leadership and closes its session so that
// another node takes over at once, stops the RPC server, and waits for every
// goroutine. It is idempotent.
func (n *Node) Close(ctx context.Context) error {
	return n.closeWith(ctx, fmt.Errorf("node %s: %w", n.cfg.ID, kvstore.ErrStopped))
}

// closeWith is Close with the cause pending operations fail with.
func (n *Node) closeWith(ctx context.Context, cause error) error {
	if !n.closed.CompareAndSwap(false, true) {
		// Closing already (a removed node told to leave closes itself):
		// return once that is over, so that the caller (kvstore node's
		// shutdown) does not exit half-way through.
		select {
		case <-n.stopped:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("node %s: close: %w", n.cfg.ID, ctx.Err())
		}
	}
	defer close(n.stopped)
	n.stop(cause)
	done := make(chan struct{})
	go func() { n.srv.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		n.srv.Stop()
		<-done
	}
	n.local.close()
	n.wg.Wait()
	n.pool.Close()
	n.closeDisk()
	return nil
}

// Kill crashes the node: no resignation, no session revocation (the
// coordinator expires it after its TTL), the RPC server dropped at once and
// the in-memory state abandoned. It waits for the node's goroutines.
func (n *Node) Kill() { n.kill(false) }

// PowerLoss is Kill as a power loss of the machine leaves the data
// directory: the submissions not yet committed were being written as one
// group and only part of that write landed (durable.DB.PowerLoss). It
// returns how many submissions the torn group held. Tests only.
func (n *Node) PowerLoss() int { return n.kill(true) }

func (n *Node) kill(powerLoss bool) (torn int) {
	if !n.closed.CompareAndSwap(false, true) {
		return 0
	}
	defer close(n.stopped)
	n.killed.Store(true)
	if powerLoss && n.disk != nil {
		torn, _ = n.disk.PowerLoss()
	}
	n.crashDisk()
	n.srv.Stop()
	n.stop(fmt.Errorf("node %s: %w (killed)", n.cfg.ID, kvstore.ErrStopped))
	n.local.close()
	n.wg.Wait()
	n.pool.Close()
	n.closeDisk()
	return torn
}

func (n *Node) stop(cause error) {
	n.cancel(cause)
	n.setServing(nil, StateStopped, cause)
}

// SetRPCDown stops (true) or resumes (false) the node's inbound
// node-to-node RPC: calls to it fail with Unavailable, its own outbound calls
// still work. This is the shell's rmi-down.
func (n *Node) SetRPCDown(down bool) { n.rpcDown.Store(down) }

// RPCDown reports whether inbound RPC is switched off.
func (n *Node) RPCDown() bool { return n.rpcDown.Load() }

func (n *Node) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if n.rpcDown.Load() && peerMethod(info) {
		return nil, status.Error(codes.Unavailable, "node "+n.cfg.ID+": inbound RPC is down")
	}
	ctx, cancel := answerBefore(ctx, info.FullMethod)
	defer cancel()
	var resp any
	var err error
	if peerMethod(info) {
		resp, err = h(ctx, req)
	} else {
		resp, err = n.limits.serve(ctx, req, h)
	}
	return resp, rpc.ToStatus(err)
}

// errResigned ends a leadership given up on purpose.
var errResigned = errors.New("leadership handed over (resign)")

// Resign hands leadership over: if this node leads, it stops leading at
// once (pending writes fail as outcome unknown), gives up its election key
// so another node is elected without waiting for a TTL, and stays on as a
// follower. It returns once the key is given up, or ctx ends. A rolling
// restart calls it before stopping a leader.
func (n *Node) Resign(ctx context.Context) error {
	l := n.lead.Load()
	if l == nil {
		return nil
	}
	l.cancel(errResigned)
	for {
		ch := n.changed()
		if v := n.view.Load(); v.leader.ID != n.cfg.ID || v.leader.Epoch != l.epoch {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("node %s: resign: %w", n.cfg.ID, ctx.Err())
		}
	}
}

// State is the node's serving state.
func (n *Node) State() State { return n.serving.Load().state }

// IsLeader reports whether this node currently leads and serves.
func (n *Node) IsLeader() bool {
	l := n.lead.Load()
	return l != nil && l.isServing()
}

// Leader is the leader this node currently sees.
func (n *Node) Leader() coord.Leader { return n.view.Load().leader }

// Stats returns the node's counters.
func (n *Node) Stats() Stats {
	return Stats{
		CacheHits:     n.cache.hits(),
		CacheMisses:   n.misses.Load(),
		LeaderReads:   n.leaderReads.Load(),
		FetchesServed: n.served.Load(),
		Writes:        n.writes.Load(),
	}
}

// Applied is the position of the last entry this node applied.
func (n *Node) Applied() store.Version {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.store.Applied()
}

// LocalItem reads key from this node's own replicated store, bypassing the
// cache and the leader: what the node holds, committed or not. It is for
// checks that compare the replicas (tests, diagnostics), not for reads.
func (n *Node) LocalItem(key string) (value string, found bool, version store.Version) {
	n.mu.Lock()
	defer n.mu.Unlock()
	it, ok := n.store.Get(key)
	return it.Value, ok && !it.Deleted, it.Version
}

// LocalKeys lists the live (not deleted) keys of this node's own replicated
// store, sorted.
func (n *Node) LocalKeys() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.store.Keys()
}

// AcceptedEpoch is the epoch this node last promised: it takes entries only
// from the leader of that epoch (or a later one).
func (n *Node) AcceptedEpoch() int64 { return n.acceptedEpochA.Load() }

// Recovering reports whether the node is a voter that lost its store and
// waits to be reconciled by a leader (a leader's snapshot, or its own
// takeover). With a data directory this survives restarts until then.
func (n *Node) Recovering() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.recovering
}

// StartedRecovering reports whether the node was recovering when Start
// returned (a leader may have reconciled it since).
func (n *Node) StartedRecovering() bool { return n.startedRecovering.Load() }

// changed returns the channel closed at the next view or serving change.
func (n *Node) changed() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.viewCh
}

func (n *Node) notify() {
	n.mu.Lock()
	close(n.viewCh)
	n.viewCh = make(chan struct{})
	n.mu.Unlock()
}

// Ready reports whether the node serves: nil when it is in StateOK and
// sees a serving leader (itself or another), otherwise an error saying why
// (matching kvstore.ErrStopped, ErrPartitioned or ErrNoLeader). It is what a
// readiness probe asks.
func (n *Node) Ready() error {
	switch st := n.State(); st {
	case StateOK:
	case StateStopped:
		return fmt.Errorf("node %s: %w", n.cfg.ID, kvstore.ErrStopped)
	default:
		return fmt.Errorf("node %s: %w (state %s)", n.cfg.ID, kvstore.ErrPartitioned, st)
	}
	l := n.Leader()
	switch {
	case l.ID == "":
		return fmt.Errorf("node %s: %w known", n.cfg.ID, kvstore.ErrNoLeader)
	case l.ID == n.cfg.ID && !n.IsLeader():
		return fmt.Errorf("node %s: %w yet: elected in epoch %d, taking over", n.cfg.ID, kvstore.ErrNoLeader, l.Epoch)
	}
	return nil
}

// WaitServing waits until the node serves and sees a serving leader (itself
// or another), or ctx ends.
func (n *Node) WaitServing(ctx context.Context) error {
	for {
		ch := n.changed()
		if n.Ready() == nil {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("node %s: not serving (state %s, leader %q): %w", n.cfg.ID, n.State(), n.Leader().ID, ctx.Err())
		case <-time.After(50 * time.Millisecond):
			// The leader's serving flag is not part of the view; poll it.
		}
	}
}

// sessionLoop keeps a coordinator session open for the node's lifetime.
func (n *Node) sessionLoop() {
	backoff := 50 * time.Millisecond
	jumps := newJumpWatch(n.clk)
	for n.ctx.Err() == nil {
		if hold := time.Duration(n.sessionHold.Swap(0)); hold > 0 {
			select {
			case <-n.ctx.Done():
				return
			case <-time.After(hold):
			}
		}
		sess, err := n.cfg.Coordinator.NewSession(n.ctx, n.cfg.SessionTTL)
		if err == nil {
			rctx, cancel := context.WithTimeout(n.ctx, n.cfg.SessionTTL)
			var mismatch error
			if mismatch, err = n.settingsStillMatch(rctx); err == nil && mismatch == nil {
				err = sess.Register(rctx, coord.Member{ID: n.cfg.ID, Addr: n.addr})
			}
			cancel()
			if mismatch != nil {
				// The cluster's settings changed while this node was
				// away (a session lost, a long pause): it may not
				// serve with the old ones, nor come back as a member.
				n.log.Error("the cluster's settings changed: stopping", "err", mismatch)
				n.closeSession(sess)
				n.stopItself(fmt.Errorf("node %s: %w: %w", n.cfg.ID, kvstore.ErrStopped, mismatch))
				return
			}
			if err != nil {
				n.closeSession(sess)
			}
		}
		if err != nil {
			if n.ctx.Err() == nil {
				n.log.Debug("coordinator session failed", "err", err)
			}
			select {
			case <-n.ctx.Done():
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
		n.runSession(sess, jumps)
		n.closeSession(sess)
	}
}

// settingsStillMatch reads the cluster's settings record, as every new
// session does before the node registers: Start checked it, but a record
// changed since (kvstore cluster settings set) while this node was no
// member must stop it. mismatch says how the settings differ; err that the
// record could not be read.
func (n *Node) settingsStillMatch(ctx context.Context) (mismatch, err error) {
	rec, err := n.cfg.Coordinator.Settings(ctx)
	if err != nil {
		return nil, fmt.Errorf("read settings: %w", err)
	}
	if rec.Version == 0 {
		return nil, nil // no record (yet): Start records one
	}
	return n.cfg.checkSettings(rec), nil
}

// stopItself closes the node from one of its own goroutines (which Close
// waits for, so it runs apart): the node's Done channel is then closed and
// StopCause says why.
func (n *Node) stopItself(cause error) {
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*n.cfg.RPCTimeout)
		defer cancel()
		_ = n.closeWith(ctx, cause)
	}()
}

// StopCause is why the node stopped (nil while it runs): ErrStopped for
// Close or Kill, with ErrRemoved when the leader removed it, or with
// coord.ErrSettingsMismatch when the cluster's settings changed.
func (n *Node) StopCause() error {
	if n.ctx.Err() == nil {
		return nil
	}
	return context.Cause(n.ctx)
}

func (n *Node) closeSession(sess coord.Session) {
	if n.killed.Load() {
		return // a crash revokes nothing
	}
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.RPCTimeout)
	defer cancel()
	_ = sess.Close(ctx)
}

// runSession serves under one session until it ends or the node stops.
// jumps watches for suspends of the machine across sessions: a suspend
// that ended the previous session is still reported.
func (n *Node) runSession(sess coord.Session, jumps *jumpWatch) {
	sctx, cancel := context.WithCancel(n.ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	wg.Add(2)
	go func() {
		defer wg.Done()
		for v := range sess.Watch(sctx) {
			n.setView(v)
		}
	}()
	go func() {
		defer wg.Done()
		n.campaignLoop(sctx, sess)
	}()
	// After a suspend of the machine (jumps), the session is in doubt
	// until its deadline moves past doubt: a keep-alive answered since.
	tick := time.NewTicker(jumpCheck)
	defer tick.Stop()
	var doubt clock.Instant
	inDoubt := false
	wasHealthy := true
	for {
		ch := sess.Changed()
		deadline := sess.Deadline()
		now := n.now()
		if inDoubt && deadline.After(doubt) {
			inDoubt = false
		}
		// A failed keep-alive or a lost connection (Healthy false) is not
		// doubt: the deadline was measured from a keep-alive the
		// coordinator answered, so the session is live until it passes.
		// Suspending on every blip would end leadership and drop the
		// cache on links that flap faster than the deadline runs out.
		healthy := sess.Healthy() || !n.cfg.Faults.SuspendOnUnhealthy
		if healthy && now.Before(deadline) && !inDoubt {
			if n.State() != StateOK {
				n.log.Info("serving", "deadline_in", deadline.Sub(now).Round(time.Millisecond))
				n.setServing(sess, StateOK, nil)
			}
		} else if n.State() == StateOK {
			n.log.Warn("suspended: coordinator session in doubt", "healthy", sess.Healthy(), "deadline_passed", !now.Before(deadline), "clock_jumped", inDoubt)
			n.met.suspended()
			n.setServing(sess, StateSuspended, fmt.Errorf("node %s: %w", n.cfg.ID, kvstore.ErrPartitioned))
		}
		if h := sess.Healthy(); h != wasHealthy {
			wasHealthy = h
			if !h && n.State() == StateOK {
				n.log.Info("coordinator keep-alive failing; serving until the session deadline", "deadline_in", deadline.Sub(now).Round(time.Millisecond))
			}
		}
		wait := deadline.Sub(now)
		if wait <= 0 {
			wait = time.Hour
		}
		timer := time.NewTimer(wait)
		select {
		case <-ch:
		case <-timer.C:
		case <-tick.C:
			if d, ok := jumps.check(); ok {
				n.clockJumped(d)
				doubt, inDoubt = deadline, true
			}
		case <-sess.Done():
			timer.Stop()
			n.log.Warn("coordinator session ended", "err", sess.Err())
			if n.State() == StateOK {
				n.met.suspended()
			}
			n.setServing(nil, StateSuspended, fmt.Errorf("node %s: %w (session expired)", n.cfg.ID, kvstore.ErrPartitioned))
			return
		case <-n.ctx.Done():
			timer.Stop()
			return
		}
		timer.Stop()
	}
}

// setServing switches the serving state. Leaving StateOK cancels every
// pending operation with cause, drops the cache and ends leadership.
//
// The new state is stored, and the cache dropped, under n.mu: install
// checks under n.mu that the state its fetch was sent under is still the
// current one, so no reply is installed after the drop.
func (n *Node) setServing(sess coord.Session, st State, cause error) {
	if st == StateOK {
		ctx, cancel := context.WithCancelCause(n.ctx)
		n.mu.Lock()
		n.serving.Store(&servingState{ctx: ctx, cancel: cancel, sess: sess, state: st})
		n.mu.Unlock()
	} else {
		if n.closed.Load() && st != StateStopped {
			return
		}
		ctx, cancel := context.WithCancelCause(context.Background())
		cancel(cause)
		n.mu.Lock()
		old := n.serving.Swap(&servingState{ctx: ctx, cancel: cancel, sess: sess, state: st})
		n.dropCache()
		n.mu.Unlock()
		old.cancel(cause)
	}
	n.notify()
}

func (n *Node) setView(v coord.View) {
	n.view.Store(&viewState{leader: v.Leader, members: v.Members})
	n.leaderMoved()
	n.met.sawLeader(v.Leader)
	if l := n.lead.Load(); l != nil {
		l.viewChanged(v)
	}
	n.notify()
}

// sessionLive reports whether the node may serve now: it is in StateOK and
// its session is live by the local deadline.
func (n *Node) sessionLive(st *servingState) bool {
	return st.state == StateOK && st.sess != nil && n.now().Before(st.sess.Deadline())
}

// opContext derives the context of one operation: it has the node's
// OpTimeout unless ctx has a deadline, and it is canceled with
// ErrPartitioned / ErrStopped the moment the node stops serving.
func (n *Node) opContext(ctx context.Context) (context.Context, func(), error) {
	st := n.serving.Load()
	if st.ctx.Err() != nil {
		return nil, nil, context.Cause(st.ctx)
	}
	if !n.sessionLive(st) {
		return nil, nil, fmt.Errorf("node %s: %w (session deadline passed)", n.cfg.ID, kvstore.ErrPartitioned)
	}
	var cancelT context.CancelFunc = func() {}
	if _, ok := ctx.Deadline(); !ok {
		ctx, cancelT = context.WithTimeout(ctx, n.cfg.OpTimeout)
	}
	octx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(st.ctx, func() { cancel(context.Cause(st.ctx)) })
	return octx, func() { stop(); cancel(nil); cancelT() }, nil
}

// ctxErr turns the end of an operation's context into the error to return.
func ctxErr(ctx context.Context) error {
	cause := context.Cause(ctx)
	if errors.Is(cause, context.DeadlineExceeded) {
		return fmt.Errorf("%w: %w", kvstore.ErrTimeout, cause)
	}
	return cause
}

// Get returns key's value through this node. A key cached here under a
// valid lease is answered from memory; otherwise the leader is asked.
func (n *Node) Get(ctx context.Context, key string) (value string, found bool, err error) {
	start := n.now()
	if v, f, ok, hit := n.cachedGet(key, start); ok {
		n.met.cachedRead(start, hit)
		return v, f, nil
	}
	value, found, err = n.doGet(ctx, key)
	n.met.observe(opGet, start, err)
	return value, found, err
}

// doGet is Get without the metrics.
func (n *Node) doGet(ctx context.Context, key string) (value string, found bool, err error) {
	if err := n.checkKey(key); err != nil {
		return "", false, err
	}
	if v, f, ok, _ := n.cachedGet(key, n.now()); ok {
		return v, f, nil
	}
	octx, done, err := n.opContext(ctx)
	if err != nil {
		return "", false, err
	}
	defer done()
	return n.get(octx, key)
}

// Set sets key to value through this node. It returns once a majority of
// voters hold the write and every cached copy of the key was invalidated.
func (n *Node) Set(ctx context.Context, key, value string) error {
	return n.writeWithID(ctx, kvpb.Op_OP_SET, "", key, value)
}

// Delete removes key through this node, with Set's guarantees.
func (n *Node) Delete(ctx context.Context, key string) error {
	return n.writeWithID(ctx, kvpb.Op_OP_DELETE, "", key, "")
}

func (n *Node) write(ctx context.Context, op kvpb.Op, key, value string) error {
	return n.writeAs(ctx, op, key, value, "")
}

// writeAs writes under request id reqID, or a fresh one if it is empty.
func (n *Node) writeAs(ctx context.Context, op kvpb.Op, key, value, reqID string) error {
	if err := n.checkWrite(key, value); err != nil {
		return err
	}
	octx, done, err := n.opContext(ctx)
	if err != nil {
		return err
	}
	defer done()
	if reqID == "" {
		reqID = n.cfg.ID + "." + n.incarn + "." + strconv.FormatUint(n.reqSeq.Add(1), 36)
	}
	if err := n.forwardWrite(octx, op, key, value, reqID); err != nil {
		return err
	}
	n.writes.Add(1)
	return nil
}

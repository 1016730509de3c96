package node

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/clock"
	"github.com/kvstore/kvstore/coord"
	"github.com/kvstore/kvstore/rpc"
	"github.com/kvstore/kvstore/rpc/kvpb"
	"github.com/kvstore/kvstore/store"
	"google.golang.org/grpc"
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
	// PriorReads counts the reads this node answered as leader with a
	// key's latest visible value while a newer write of the key was not
	// visible yet.
	PriorReads uint64
	// Renewals counts this node's cached copies whose lease the leader
	// renewed (Renew) instead of a fetch of the key.
	Renewals uint64
	// RenewCalls counts the renewals this node asked of the leader, each
	// for many copies (Renew calls, or local renewals as the leader).
	RenewCalls uint64
	// FetchesServed counts the reads this node answered for followers as
	// leader (their cache misses).
	FetchesServed uint64
	Writes        uint64 // writes acknowledged through this node
	// SnapshotChunksSent counts the snapshot chunks this node sent as
	// leader; SnapshotChunksTaken those it staged or installed as follower.
	SnapshotChunksSent, SnapshotChunksTaken uint64
	// LogEntries is how many entries this node keeps, as leader, for
	// followers that lag (at most about Config.MaxLog; 0 on a follower).
	LogEntries int
	// Forwarded counts the writes and fetches this node sent to the
	// leader on Forward streams (not those sent as calls of their own).
	Forwarded uint64
}

// Node is one KVStore replica. Create it with New, run it with Start, stop
// it with Close (graceful) or Kill (crash). All methods are safe for
// concurrent use.
type Node struct {
	cfg Config
	log *slog.Logger
	clk clock.Clock // Config.Clock: leases and deadlines

	lis  net.Listener // nil with Config.NoListen
	srv  *grpc.Server
	addr string
	pool Transport // Config.Transport, or gRPC connections (transport.go)
	// workers run the blocking operations of client batches (workers.go).
	workers   *workers
	forwarder *forwarder // Forward streams to the leader (forward.go)
	local     localGate  // in-memory calls in flight (PeerService)

	ctx    context.Context // canceled by Close or Kill
	cancel context.CancelCauseFunc
	wg     sync.WaitGroup
	closed atomic.Bool
	killed atomic.Bool
	// startedRecovering: the node was recovering when Start returned.
	startedRecovering atomic.Bool
	stopped           chan struct{} // closed once Close or Kill has finished
	removed           atomic.Bool   // told to leave by the leader (members.go)

	// incarnation is the cluster incarnation the coordinator's cluster
	// record names, set by Start (nil before): sent in every
	// node-to-node message, and required of every one received.
	incarnation atomic.Pointer[string]
	// otherIncLogged is when (Unix ns) a message of another incarnation
	// was last logged: at most one warning a minute.
	otherIncLogged atomic.Int64

	rpcDown atomic.Bool // inbound node-to-node RPC refused (rmi-down)

	// camp is the candidacy: campaign, pre-vote probes (campaign.go).
	camp *campaigner

	// sessions keeps the coordinator session (session.go).
	sessions *sessionKeeper

	// servingView is the serving state and the cluster view, and the
	// signal of a change of either (serving.go).
	*servingView

	// rep is the replicated state: the store, the promise, recovering and
	// the durable copy (replica.go). Its lock comes after leader.mu and
	// before a cache shard's.
	rep *replica

	// boot is what Start does before the node runs (boot.go).
	boot *boot

	// reader is the read path: the read cache and the fetches in flight
	// to the leader (read.go).
	reader *reader
	// writer is the write path (write.go).
	writer *writer

	lead atomic.Pointer[leader] // non-nil while this node leads

	// router finds the leader and retries there (route.go).
	*router

	recs records // the coordinator's records as last read, for Status (client_service.go)

	limits *limiter // client API limits (limits.go)
	guard  *guard   // the gRPC server's interceptors (guard.go)

	served atomic.Uint64 // reads this node answered for followers as leader

	// recv stages a snapshot a leader sends in chunks (snapshot_recv.go).
	recv snapshotReceiver
	// chunksSent counts the snapshot chunks this node sent as leader.
	chunksSent atomic.Uint64

	met *metrics // Prometheus instruments (metrics.go)
	// walFsync is kvstore_disk_wal_fsync_duration_seconds, made before the
	// data directory is opened (its committer observes it from the start).
	walFsync prometheus.Histogram
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
	if cfg.AppendsInFlight == 0 {
		cfg.AppendsInFlight = DefaultAppendsInFlight
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
		cfg:         cfg,
		log:         cfg.Logger.With("node", cfg.ID),
		clk:         cfg.Clock,
		lis:         lis,
		addr:        addr,
		pool:        pool,
		servingView: newServingView(&cfg),
		stopped:     make(chan struct{}),
	}
	n.limits = newLimiter(&n.cfg)
	n.rep = newReplica(cfg.MaxRequests, nodeEvents{n})
	n.boot = &boot{n: n}
	n.reader = newReader(n)
	n.writer = newWriter(n)
	n.sessions = &sessionKeeper{n: n}
	n.camp = &campaigner{n: n}
	n.router = &router{n: n}
	n.guard = &guard{n: n}
	n.walFsync = newWALFsyncHistogram()
	if err := n.boot.openDisk(); err != nil {
		if lis != nil {
			_ = lis.Close()
		}
		return nil, err
	}
	n.met = newMetrics(n)
	n.ctx, n.cancel = context.WithCancelCause(context.Background())
	n.workers = newWorkers()
	n.forwarder = newForwarder(n)
	n.srv = grpc.NewServer(
		grpc.InTapHandle(n.guard.tap),
		grpc.ChainUnaryInterceptor(n.guard.authorize, n.guard.intercept),
		grpc.ChainStreamInterceptor(n.guard.interceptStream),
		serverCreds(cfg.ServerTLS),
		grpc.MaxRecvMsgSize(rpc.MaxMsgSize),
		grpc.MaxSendMsgSize(rpc.MaxMsgSize),
		grpc.InitialWindowSize(rpc.PeerWindow), grpc.InitialConnWindowSize(rpc.PeerWindow),
		grpc.KeepaliveEnforcementPolicy(rpc.PeerKeepalivePolicy),
		// Calls run on a pool of goroutines whose stacks have already
		// grown, instead of a new goroutine per call: a node's profile
		// under read load spent 12% of its CPU growing fresh stacks.
		grpc.NumStreamWorkers(streamWorkers),
	)
	kvpb.RegisterPeerServer(n.srv, &peerServer{n: n})
	kvpb.RegisterKVServer(n.srv, &clientServer{n: n})
	return n, nil
}

// stopGrace bounds how long Close waits for the gRPC server to finish its
// calls and streams before it closes their connections: pending
// operations fail at once when the node stops, and a stream gives a
// client that does not read its last answers stopFlush, but a stream's
// end is queued behind the data its client does not read, so only closing
// the connection ends it.
const stopGrace = stopFlush + time.Second

// streamWorkers is how many goroutines of the node's gRPC server serve
// calls; a call that finds them all busy gets a goroutine of its own.
const streamWorkers = 64

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
	if err := n.boot.run(ctx); err != nil {
		return err
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
		n.sessions.run()
	}()
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.reader.renewLoop(n.ctx)
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
	grace := time.NewTimer(stopGrace)
	defer grace.Stop()
	select {
	case <-done:
	case <-ctx.Done():
		n.srv.Stop()
		<-done
	case <-grace.C:
		// Pending operations failed at n.stop, and streams gave up on
		// clients that do not read after stopFlush; what is left waits on
		// a peer's flow-control window (an answer, or a stream's end,
		// queued behind data the peer does not read).
		n.log.Warn("node: connections still busy after the grace period; closing them", "id", n.cfg.ID, "grace", stopGrace)
		n.srv.Stop()
		<-done
	}
	n.local.close()
	n.wg.Wait()
	n.forwarder.wait()
	n.workers.close()
	n.pool.Close()
	n.rep.closeDisk(n.log)
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
	if powerLoss && n.rep.disk != nil {
		torn, _ = n.rep.disk.PowerLoss()
	}
	n.rep.crashDisk()
	n.srv.Stop()
	n.stop(fmt.Errorf("node %s: %w (killed)", n.cfg.ID, kvstore.ErrStopped))
	n.local.close()
	n.wg.Wait()
	n.forwarder.wait()
	n.workers.close()
	n.pool.Close()
	n.rep.closeDisk(n.log)
	return torn
}

func (n *Node) stop(cause error) {
	n.cancel(cause)
	n.sessions.setServing(nil, StateStopped, cause)
}

// SetRPCDown stops (true) or resumes (false) the node's inbound
// node-to-node RPC: calls to it fail with Unavailable, its own outbound calls
// still work. This is the shell's rmi-down.
func (n *Node) SetRPCDown(down bool) { n.rpcDown.Store(down) }

// RPCDown reports whether inbound RPC is switched off.
func (n *Node) RPCDown() bool { return n.rpcDown.Load() }

// State is the node's serving state.
func (n *Node) State() State { return n.serving.Load().state }

// SessionLeft is how long this node's coordinator session has left by its
// own deadline (measured from the send of the last keep-alive the
// coordinator answered): 0 once it passed, or with no session yet. A
// node serves only while it is positive; it is for diagnostics and tests.
func (n *Node) SessionLeft() time.Duration {
	st := n.serving.Load()
	if st.sess == nil {
		return 0
	}
	return max(0, st.sess.Deadline().Sub(n.now()))
}

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
		CacheHits:     n.reader.cache.hits(),
		CacheMisses:   n.reader.misses.Load(),
		LeaderReads:   n.reader.leaderReads.Load(),
		PriorReads:    n.reader.priorReads.Load(),
		Renewals:      n.reader.renewals.Load(),
		RenewCalls:    n.reader.renewCalls.Load(),
		FetchesServed: n.served.Load(),
		Writes:        n.writer.writes.Load(),

		SnapshotChunksSent:  n.chunksSent.Load(),
		SnapshotChunksTaken: n.recv.taken.Load(),
		Forwarded:           uint64(n.forwarder.carried.Load()),
		LogEntries:          n.logEntries(),
	}
}

// logEntries is how many entries the leader's log holds (0 on a
// follower).
func (n *Node) logEntries() int {
	l := n.lead.Load()
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.log)
}

// Applied is the position of the last entry this node applied.
func (n *Node) Applied() store.Version { return n.rep.applied() }

// LocalItem reads key from this node's own replicated store, bypassing the
// cache and the leader: what the node holds, committed or not. It is for
// checks that compare the replicas (tests, diagnostics), not for reads.
func (n *Node) LocalItem(key string) (value string, found bool, version store.Version) {
	it, ok := n.rep.get(key)
	return it.Value, ok && !it.Deleted, it.Version
}

// LocalKeys lists the live (not deleted) keys of this node's own replicated
// store, sorted.
func (n *Node) LocalKeys() []string { return n.rep.keys() }

// AcceptedEpoch is the epoch this node last promised: it takes entries only
// from the leader of that epoch (or a later one).
func (n *Node) AcceptedEpoch() int64 { return n.rep.epoch() }

// Recovering reports whether the node is a voter that lost its store and
// waits to be reconciled by a leader (a leader's snapshot, or its own
// takeover). With a data directory this survives restarts until then.
func (n *Node) Recovering() bool { return n.rep.isRecovering() }

// StartedRecovering reports whether the node was recovering when Start
// returned (a leader may have reconciled it since).
func (n *Node) StartedRecovering() bool { return n.startedRecovering.Load() }

// Unreconciled reports whether the data directory's unreconciled mark is
// still set, as far as the node has asked for it to be cleared: no leader
// (the node's own takeover included) has reconciled it since the
// directory was created. A restart after a clear was asked for may still
// find the mark, if the crash came before it was on disk; while this is
// true, a restart surely finds it. False without a data directory.
func (n *Node) Unreconciled() bool { return n.rep.isUnreconciled() }

// StopCause is why the node stopped (nil while it runs): ErrStopped for
// Close or Kill, with ErrRemoved when the leader removed it, or with
// coord.ErrSettingsMismatch when the cluster's settings changed.
func (n *Node) StopCause() error {
	if n.ctx.Err() == nil {
		return nil
	}
	return context.Cause(n.ctx)
}

// Members returns the live members this node sees: id -> RPC address.
func (n *Node) Members() map[string]string {
	return maps.Clone(n.view.Load().members)
}

// Removed reports whether the node stopped because the leader removed it
// from the voter record.
func (n *Node) Removed() bool { return n.removed.Load() }

// Done is closed when the node stops: Close, Kill, its removal from the
// voter record (then Removed is true), or a change of the cluster's
// settings it does not run with (StopCause says which).
func (n *Node) Done() <-chan struct{} { return n.ctx.Done() }

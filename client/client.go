// Package client is the Go client of KVStore: Get, Put and Delete against
// any node of a cluster, through the nodes' public gRPC service (kvpb.KV).
//
//	c, err := client.New(client.Config{Endpoints: []string{"10.0.0.1:7000", "10.0.0.2:7000"}})
//	if err != nil { ... }
//	defer c.Close()
//	if err := c.Put(ctx, "k", "v"); err != nil { ... }
//	v, found, err := c.Get(ctx, "k")
//
// A call goes to one endpoint and moves on to the next when that node
// cannot serve (unreachable, partitioned from the coordinator, stopped) or
// does not answer within Config.AttemptTimeout, until it succeeds, fails
// for good, or ctx ends. An endpoint that did not answer is tried again
// only after the others, never twice in a row while another is left. Every
// write carries a request id kept across these attempts, so a write
// retried on another node is applied once.
//
// Every error matches one of the sentinels below with errors.Is (most are
// the kvstore package's, re-exported). A write error that also matches
// ErrOutcomeUnknown may or may not have been applied: an attempt reached a
// node and ended without an answer that proves it applied nothing. Any
// other write error means the write was not applied.
package client

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/rpc"
	"github.com/kvstore/kvstore/rpc/kvpb"
)

// The errors calls return, to match with errors.Is. They are the kvstore
// package's sentinels.
var (
	ErrPartitioned    = kvstore.ErrPartitioned
	ErrNoLeader       = kvstore.ErrNoLeader
	ErrNoQuorum       = kvstore.ErrNoQuorum
	ErrTimeout        = kvstore.ErrTimeout
	ErrOutcomeUnknown = kvstore.ErrOutcomeUnknown
	ErrStopped        = kvstore.ErrStopped
	ErrBadRequest     = kvstore.ErrBadRequest
	ErrTooLarge       = kvstore.ErrTooLarge
	ErrBusy           = kvstore.ErrBusy
	ErrNotVoter       = kvstore.ErrNotVoter
	ErrUnsafeRemoval  = kvstore.ErrUnsafeRemoval
	ErrRemoveLeader   = kvstore.ErrRemoveLeader
	ErrNotLeader      = kvstore.ErrNotLeader
	ErrStaleEpoch     = kvstore.ErrStaleEpoch
	ErrRemoved        = kvstore.ErrRemoved
	// ErrWrongNode: an endpoint is a node of another cluster than
	// Config.Cluster; it refused the call and changed nothing. The client
	// moves on to the next endpoint, as from one that cannot serve, and
	// fails at once if every endpoint refused so.
	ErrWrongNode = kvstore.ErrWrongNode
	// ErrCanceled: the caller canceled the call's context. It is
	// context.Canceled.
	ErrCanceled = context.Canceled
	// ErrUnavailable: no endpoint could serve the call: each was
	// unreachable, did not answer in time, or failed with an error that
	// names no other sentinel. With ErrTimeout when the call's deadline
	// ended first.
	ErrUnavailable = errors.New("client: no endpoint available")
	// ErrTLS: a node and the client could not agree on TLS (see
	// Config.TLS): a plaintext client calling a node that requires TLS, a
	// certificate the other side does not trust, a node certificate that
	// does not name the endpoint's host, or a TLS client calling a plaintext
	// node; or a node refused the client's credentials. A call fails with
	// it, and ErrUnavailable, at once when every endpoint fails so twice in
	// a row.
	ErrTLS = errors.New("client: TLS handshake failed")
	// ErrRefused: every endpoint refused the connection (nothing listens
	// there); see Config.FailWhenRefused. It comes with ErrUnavailable.
	ErrRefused = errors.New("client: connection refused by every endpoint")
	// ErrClosed: the client was closed.
	ErrClosed = errors.New("client: closed")
)

// Config configures a Client.
type Config struct {
	// Endpoints are nodes' RPC addresses, host:port. At least one.
	Endpoints []string
	// Timeout bounds a call whose ctx has no deadline (default 20 s: more
	// than a node's default wait for a leader).
	Timeout time.Duration
	// AttemptTimeout bounds one attempt on one endpoint (default 2 s;
	// capped by the call's own deadline). When an attempt ends so, the call
	// moves on to the next endpoint, with the same request id for a write,
	// and the endpoint counts as unresponsive: until it answers again the
	// client tries it after every other endpoint, and never twice in a row
	// while another is left. A node answers a little before the attempt
	// ends (ErrTimeout or ErrNoLeader, saying whether a write was applied),
	// so only a node that does not answer at all (a paused process, a
	// frozen machine, a lost network) costs a whole attempt. Keep it above
	// the nodes' usual latency (a write may wait up to one lease for a
	// holder that is cut off) and well under Timeout, so that a call
	// outlives an election: a new leader serves within about one session
	// TTL plus one lease.
	AttemptTimeout time.Duration
	// RetryPause is the pause after every endpoint failed once, before the
	// next round (default 100 ms).
	RetryPause time.Duration
	// OnAttempt, if set, is called after every attempt, from the calling
	// goroutine, with the endpoint, how long the attempt took and its error
	// (nil on success): for logs and tests.
	OnAttempt func(endpoint string, took time.Duration, err error)
	// DialTimeout, if set, bounds how long a call waits for a connection
	// to any endpoint: a call none of whose attempts reached a node (no
	// connection made: refused, unroutable, or a peer that never completes
	// the gRPC handshake) fails with ErrUnavailable once DialTimeout has
	// passed, instead of retrying until Timeout. 0: no bound of its own.
	DialTimeout time.Duration
	// FailWhenRefused makes a call fail at once, with ErrUnavailable and
	// ErrRefused, when every endpoint refused the connection in one round
	// (nothing listens at any of them), instead of retrying until the
	// deadline: for a command-line client, which should answer at once.
	FailWhenRefused bool
	// KeepaliveTimeout is how long a connection that was quiet for 10 s
	// may leave a ping unanswered before the client closes it (default
	// 5 s): a node that died without closing its connections (a lost
	// network, a powered-off machine) would otherwise keep the client's
	// streams to it open, and every call sent there would wait out its
	// attempt. Nodes accept pings every 5 s or more.
	KeepaliveTimeout time.Duration
	// TLS, if set, makes every connection mutual TLS, as nodes with TLS on
	// require: the client's certificate and the CA that signed the nodes'
	// certificates (certs.Files.ClientConfig builds it from PEM files).
	// Leave its ServerName empty: each connection checks that the node's
	// certificate names the host of its endpoint. nil: plaintext.
	TLS *tls.Config
	// Cluster, if set, is the name of the cluster the endpoints must
	// belong to (the nodes' --cluster). Every call names it, and a node of
	// another cluster refuses it with ErrWrongNode, so a list of endpoints
	// that mixes up two clusters never reads or writes the wrong one.
	// Empty: no check (nodes of any cluster answer).
	Cluster string
}

// Client is a connection to a KVStore cluster. It is safe for concurrent
// use.
type Client struct {
	cfg   Config
	conns []*grpc.ClientConn
	kvs   []kvpb.KVClient
	// streams[i] and wstreams[i] carry endpoint i's reads and writes
	// (stream.go); batchers[i] queue them instead for a node without
	// Stream, and take those too large for a stream's message (batch.go).
	batchers []struct{ reads, writes batcher }
	streams  []streamer
	wstreams []streamer
	next     atomic.Uint32 // the endpoint to try first
	// leader is the endpoint of the leader, as the last write's node
	// named it (PutResponse.leader_addr), or -1: writes try it first.
	leader atomic.Int32
	// silent[i] is when endpoint i last left an attempt unanswered (unix
	// nanoseconds; 0 once it answers again).
	silent []atomic.Int64
	idPfx  string // this client's request-id prefix
	seq    atomic.Uint64

	closeOnce sync.Once
	closed    atomic.Bool
}

// New returns a client for cfg.Endpoints. It does not dial yet: connections
// are made on first use and re-made as needed.
func New(cfg Config) (*Client, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("client: Config.Endpoints is empty")
	}
	if cfg.Timeout < 0 || cfg.RetryPause < 0 || cfg.AttemptTimeout < 0 || cfg.DialTimeout < 0 {
		return nil, errors.New("client: Config.Timeout, AttemptTimeout, DialTimeout and RetryPause must not be negative")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 20 * time.Second
	}
	if cfg.AttemptTimeout == 0 {
		cfg.AttemptTimeout = DefaultAttemptTimeout
	}
	if cfg.RetryPause == 0 {
		cfg.RetryPause = 100 * time.Millisecond
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	c := &Client{cfg: cfg, idPfx: hex.EncodeToString(b[:]) + ".", silent: make([]atomic.Int64, len(cfg.Endpoints))}
	c.leader.Store(-1)
	minConnect := time.Second
	if cfg.DialTimeout > 0 && cfg.DialTimeout < minConnect {
		minConnect = cfg.DialTimeout
	}
	keepaliveTimeout := cfg.KeepaliveTimeout
	if keepaliveTimeout <= 0 {
		keepaliveTimeout = defaultKeepaliveTimeout
	}
	creds := insecure.NewCredentials()
	if cfg.TLS != nil {
		creds = credentials.NewTLS(cfg.TLS)
	}
	for _, ep := range cfg.Endpoints {
		if ep == "" {
			c.Close()
			return nil, errors.New("client: empty endpoint")
		}
		opts := []grpc.DialOption{
			grpc.WithTransportCredentials(creds),
			// A batch's answer carries several values: accept what a
			// node may send (larger answers are split, batch.go).
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(rpc.MaxMsgSize)),
			grpc.WithConnectParams(grpc.ConnectParams{
				Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
				MinConnectTimeout: minConnect,
			}),
			grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: keepaliveTime, Timeout: keepaliveTimeout, PermitWithoutStream: true}),
		}
		if cfg.Cluster != "" {
			// Only a client given its cluster pays for naming it.
			opts = append(opts, grpc.WithChainUnaryInterceptor(clusterUnary(cfg.Cluster)), grpc.WithChainStreamInterceptor(clusterStream(cfg.Cluster)))
		}
		cc, err := grpc.NewClient("passthrough:///"+ep, opts...)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("client: endpoint %q: %w", ep, err)
		}
		c.conns = append(c.conns, cc)
		c.kvs = append(c.kvs, kvpb.NewKVClient(cc))
	}
	c.batchers = make([]struct{ reads, writes batcher }, len(c.kvs))
	for i, kv := range c.kvs {
		c.batchers[i].reads.kv, c.batchers[i].writes.kv = kv, kv
	}
	c.streams = make([]streamer, len(c.kvs))
	c.wstreams = make([]streamer, len(c.kvs))
	for i, kv := range c.kvs {
		c.streams[i].kv, c.streams[i].fallback = kv, &c.batchers[i].reads
		c.wstreams[i].kv, c.wstreams[i].fallback = kv, &c.batchers[i].writes
	}
	return c, nil
}

// clusterUnary names cluster in every call's metadata.
func clusterUnary(cluster string) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		return invoker(metadata.AppendToOutgoingContext(ctx, rpc.ClusterHeader, cluster), method, req, reply, cc, opts...)
	}
}

// clusterStream names cluster in every stream's metadata.
func clusterStream(cluster string) grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		return streamer(metadata.AppendToOutgoingContext(ctx, rpc.ClusterHeader, cluster), desc, cc, method, opts...)
	}
}

// Close closes every connection. Calls in flight fail.
func (c *Client) Close() error {
	var errs []error
	c.closeOnce.Do(func() {
		c.closed.Store(true)
		for _, cc := range c.conns {
			errs = append(errs, cc.Close())
		}
	})
	return errors.Join(errs...)
}

// Get reads key: its value and whether it has one.
func (c *Client) Get(ctx context.Context, key string) (value string, found bool, err error) {
	op := &kvpb.BatchOp{Op: &kvpb.BatchOp_Get{Get: &kvpb.GetRequest{Key: key}}}
	err = c.do(ctx, opName{"get", key}, false, func(ctx context.Context, end time.Time, idx int, p *peer.Peer) error {
		r, err := c.streams[idx].run(ctx, end, op, p)
		if err == nil {
			err = opError(op, r)
		}
		if err == nil {
			value, found = r.GetGet().GetValue(), r.GetGet().GetFound()
		}
		return err
	})
	return value, found, err
}

// Put sets key to value.
func (c *Client) Put(ctx context.Context, key, value string) error {
	op := &kvpb.BatchOp{Op: &kvpb.BatchOp_Put{Put: &kvpb.PutRequest{Key: key, Value: value, RequestId: c.requestID()}}}
	return c.write(ctx, opName{"put", key}, op)
}

// Delete removes key.
func (c *Client) Delete(ctx context.Context, key string) error {
	op := &kvpb.BatchOp{Op: &kvpb.BatchOp_Delete{Delete: &kvpb.DeleteRequest{Key: key, RequestId: c.requestID()}}}
	return c.write(ctx, opName{"delete", key}, op)
}

// write runs a Put or Delete op, whose request id stays the same across
// attempts, and notes the leader its answer names.
func (c *Client) write(ctx context.Context, what opName, op *kvpb.BatchOp) error {
	return c.do(ctx, what, true, func(ctx context.Context, end time.Time, idx int, p *peer.Peer) error {
		r, err := c.wstreams[idx].run(ctx, end, op, p)
		if err == nil {
			err = opError(op, r)
		}
		if err == nil {
			c.noteLeader(cmp.Or(r.GetPut().GetLeaderAddr(), r.GetDelete().GetLeaderAddr()))
		}
		return err
	})
}

// Member is one live node.
type Member struct {
	ID   string `json:"id"`
	Addr string `json:"addr"`
}

// Status is what one node reports of itself and of the cluster.
type Status struct {
	Endpoint string   `json:"endpoint"`
	ID       string   `json:"id"`
	Cluster  string   `json:"cluster"`
	State    string   `json:"state"`
	IsLeader bool     `json:"is_leader"`
	Leader   string   `json:"leader"`
	Epoch    int64    `json:"epoch"`
	Members  []Member `json:"members"`
	// Voters is the voter record (empty if the node could not read it).
	Voters []string `json:"voters"`
	// Settings are the cluster's safety settings (nil if the node could
	// not read them).
	Settings *Settings `json:"settings,omitempty"`
	// Build is the build the node runs (zero from a node too old to say).
	Build Build `json:"build"`
	// Storage is where the node keeps its state (nil from a node too old
	// to say).
	Storage *Storage `json:"storage,omitempty"`
	// Cache counts the node's cache hits and misses since it started (nil
	// from a node too old to say).
	Cache *Cache `json:"cache,omitempty"`
}

// Cache counts the reads a node answered from its cache under a valid
// lease (Hits) and those that asked the leader (Misses).
type Cache struct {
	Hits   uint64 `json:"hits"`
	Misses uint64 `json:"misses"`
}

// Build is the build a node runs (kvstore version).
type Build struct {
	Version   string `json:"version"`    // release version, "devel" unless set at link time
	Commit    string `json:"commit"`     // VCS revision
	GoVersion string `json:"go_version"` // Go toolchain that built it
}

// Storage says what an acknowledged write survives on a node.
type Storage struct {
	DataDir bool `json:"data_dir"` // a durable copy in a data directory (false: memory only)
	Fsync   bool `json:"fsync"`    // with DataDir: each group commit is fsynced
}

// Settings are the values every node of a cluster runs with (kvstore
// cluster settings).
type Settings struct {
	Lease       time.Duration `json:"lease"`        // read lease of a cached copy
	ClockDrift  float64       `json:"clock_drift"`  // clock rate drift margin
	MaxRequests int           `json:"max_requests"` // request-id window
	MaxLease    time.Duration `json:"max_lease"`    // longest lease any node may still grant
}

// String shows s as `kvstore members` prints it.
func (s Settings) String() string {
	return fmt.Sprintf("lease %v, clock drift %v, request-id window %d, max lease %v", s.Lease, s.ClockDrift, s.MaxRequests, s.MaxLease)
}

// Status asks the first endpoint that answers for its status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	idx, err := c.doAt(ctx, opName{verb: "status"}, false, func(ctx context.Context, end time.Time, idx int, p *peer.Peer) error {
		ctx, cancel := context.WithDeadline(ctx, end)
		defer cancel()
		resp, err := c.kvs[idx].Status(ctx, &kvpb.StatusRequest{}, grpc.Peer(p))
		if err != nil {
			return err
		}
		st = Status{ID: resp.Id, Cluster: resp.Cluster, State: resp.State, IsLeader: resp.IsLeader, Leader: resp.LeaderId, Epoch: resp.Epoch, Voters: resp.Voters}
		if p := resp.Settings; p != nil {
			st.Settings = &Settings{
				Lease: time.Duration(p.LeaseMs) * time.Millisecond, ClockDrift: p.ClockDrift,
				MaxRequests: int(p.MaxRequests), MaxLease: time.Duration(p.MaxLeaseMs) * time.Millisecond,
			}
		}
		for _, m := range resp.Members {
			st.Members = append(st.Members, Member{ID: m.Id, Addr: m.Addr})
		}
		if b := resp.Build; b != nil {
			st.Build = Build{Version: b.Version, Commit: b.Commit, GoVersion: b.GoVersion}
		}
		if p := resp.Storage; p != nil {
			st.Storage = &Storage{DataDir: p.DataDir, Fsync: p.Fsync}
		}
		if p := resp.Cache; p != nil {
			st.Cache = &Cache{Hits: p.Hits, Misses: p.Misses}
		}
		return nil
	})
	if err == nil {
		st.Endpoint = c.cfg.Endpoints[idx]
	}
	return st, err
}

// RemoveMember removes voter id from the cluster's voter record, through
// the leader, and returns the record after the change. It fails with
// ErrNotVoter if id is not a voter, ErrRemoveLeader if id leads (stop it
// first), and ErrUnsafeRemoval if the remaining voters would not have a
// majority of live voters; nothing changed then. A removed node that still
// runs stops.
func (c *Client) RemoveMember(ctx context.Context, id string) ([]string, error) {
	var voters []string
	err := c.do(ctx, opName{"remove", id}, false, func(ctx context.Context, end time.Time, idx int, p *peer.Peer) error {
		ctx, cancel := context.WithDeadline(ctx, end)
		defer cancel()
		resp, err := c.kvs[idx].RemoveMember(ctx, &kvpb.RemoveMemberRequest{Id: id}, grpc.Peer(p))
		if err == nil {
			voters = resp.Voters
		}
		return err
	})
	return voters, err
}

// noteLeader records the leader's address a write's answer named: the
// endpoint with exactly that address, if the client has one, takes the
// next writes first.
func (c *Client) noteLeader(addr string) {
	idx := int32(-1)
	if addr != "" {
		if i := slices.Index(c.cfg.Endpoints, addr); i >= 0 {
			idx = int32(i)
		}
	}
	c.leader.Store(idx)
}

func (c *Client) requestID() string {
	return c.idPfx + strconv.FormatUint(c.seq.Add(1), 36)
}

// DefaultAttemptTimeout is Config.AttemptTimeout's default.
const DefaultAttemptTimeout = 2 * time.Second

// The connections' keepalive: a ping after keepaliveTime without traffic
// (gRPC's minimum; a node's server accepts one every 5 s), answered within
// KeepaliveTimeout (default defaultKeepaliveTimeout).
const (
	keepaliveTime           = 10 * time.Second
	defaultKeepaliveTimeout = 5 * time.Second
)

func (c *Client) current() int { return int(c.next.Load()) % len(c.kvs) }

// order lists the endpoints for one round of a call: from the preferred
// one around, those that answered their last attempt first, then the
// unresponsive ones, the one silent longest ago first; never prev (the
// endpoint of the call's previous attempt) first while another is left.
func (c *Client) order(prev int, write bool) []int {
	n := len(c.kvs)
	start := c.current()
	if l := int(c.leader.Load()); write && l >= 0 && l < n && c.silent[l].Load() == 0 {
		// A write goes to the leader first: through a follower it would
		// take one more hop.
		start = l
	}
	out := make([]int, 0, n)
	var quiet []int
	for i := range n {
		idx := (start + i) % n
		if c.silent[idx].Load() == 0 {
			out = append(out, idx)
		} else {
			quiet = append(quiet, idx)
		}
	}
	slices.SortStableFunc(quiet, func(a, b int) int { return cmp.Compare(c.silent[a].Load(), c.silent[b].Load()) })
	out = append(out, quiet...)
	if n > 1 && out[0] == prev {
		out = append(out[1:], prev)
	}
	return out
}

// attemptFunc makes one attempt of a call on endpoint idx, which must end
// by end (the attempt's timeout, or ctx's deadline if that is sooner), and
// sets p.Addr when the request may have left this process (grpc.Peer(p)
// does that for one RPC). ctx is the call's own context: an attempt that
// makes a gRPC call bounds it with context.WithDeadline(ctx, end); one that
// waits on a stream waits for end itself, with no context of its own (a
// context per operation, with its timer and its place among the parent's
// children, was a fifth of what a cached read allocated in the client).
type attemptFunc func(ctx context.Context, end time.Time, idx int, p *peer.Peer) error

// opName names a call in its errors ("get k"), built only for an error.
type opName struct{ verb, key string }

func (o opName) String() string {
	if o.key == "" {
		return o.verb
	}
	return o.verb + " " + o.key
}

// do runs call on one endpoint after another until it succeeds, fails for
// good, or ctx ends. For a write, an attempt that may
// have been applied (it left, and ended without an answer proving it was
// not) makes a later failure outcome-unknown; an attempt that never got a
// connection (refused, no route) sent nothing.
func (c *Client) do(ctx context.Context, op opName, write bool, call attemptFunc) error {
	_, err := c.doAt(ctx, op, write, call)
	return err
}

// doAt is do, returning the endpoint that answered.
func (c *Client) doAt(ctx context.Context, op opName, write bool, call attemptFunc) (int, error) {
	if c.closed.Load() {
		return 0, fmt.Errorf("client: %s: %w", op, ErrClosed)
	}
	start := time.Now()
	// A call whose ctx has no deadline ends after Timeout. Its first
	// attempt ends sooner (AttemptTimeout) and most calls take one: the
	// call's own context, a timer more per call, is made only once an
	// attempt failed.
	_, bounded := ctx.Deadline()
	lazy := !bounded && c.cfg.AttemptTimeout < c.cfg.Timeout
	if !bounded && !lazy {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, start.Add(c.cfg.Timeout))
		defer cancel()
	}
	var last error
	unknown := false
	prev := -1         // the endpoint of the previous attempt
	tlsRounds := 0     // consecutive rounds in which every endpoint failed over TLS
	connected := false // an attempt of this call reached a node
	for {
		tlsOnly := true
		refusedOnly := true
		wrongOnly := true // every endpoint is of another cluster (Config.Cluster)
		for _, idx := range c.order(prev, write) {
			if last != nil && tooLate(ctx) {
				// An attempt begun now could only be cut short, and a
				// write's then says less than the answer the call has.
				<-ctx.Done()
				return 0, c.fail(ctx, op, last, write && unknown)
			}
			prev = idx
			a := c.attempt(ctx, idx, call)
			if a.err == nil {
				// A write steered to the leader leaves the preference of
				// reads (which any node serves, from its cache) alone.
				if !write || idx != int(c.leader.Load()) {
					c.next.Store(uint32(idx))
				}
				return idx, nil
			}
			if lazy {
				lazy = false
				var cancel context.CancelFunc
				ctx, cancel = context.WithDeadline(ctx, start.Add(c.cfg.Timeout))
				defer cancel()
			}
			if write && a.sent && maybeApplied(a.err, a.typed) {
				unknown = true
			}
			if !errors.Is(a.err, ErrTLS) {
				tlsOnly = false
			}
			if !errors.Is(a.err, ErrWrongNode) {
				wrongOnly = false
			}
			if a.sent || a.typed {
				connected = true
			}
			if a.sent || !refused(a.err) {
				refusedOnly = false
			}
			// An attempt the call's own end cut short says less than the
			// answer before it, if there was one.
			if cutShort := ended(ctx) && !a.typed; last == nil || !cutShort {
				last = fmt.Errorf("%s: %w", c.cfg.Endpoints[idx], a.err)
			}
			move := failover(a.err)
			if move {
				// The leader may have moved: the next write's answer
				// will say where.
				c.leader.CompareAndSwap(int32(idx), -1)
			}
			if move || c.silent[idx].Load() != 0 {
				// The next call starts elsewhere.
				c.next.CompareAndSwap(uint32(idx), uint32(idx+1)%uint32(len(c.kvs)))
			}
			if ended(ctx) || !move {
				return 0, c.fail(ctx, op, last, write && unknown)
			}
			if !connected && c.cfg.DialTimeout > 0 && time.Since(start) >= c.cfg.DialTimeout {
				return 0, c.fail(ctx, op, unavailable(fmt.Errorf("no connection to %s within the dial timeout (%v): %w",
					strings.Join(c.cfg.Endpoints, ","), c.cfg.DialTimeout, last)), write && unknown)
			}
		}
		if refusedOnly && c.cfg.FailWhenRefused {
			return 0, c.fail(ctx, op, unavailable(fmt.Errorf("%w (%s): %w", ErrRefused, strings.Join(c.cfg.Endpoints, ","), last)), write && unknown)
		}
		// Nodes of another cluster, all of them: a matter of
		// configuration, which waiting will not cure.
		if wrongOnly {
			return 0, c.fail(ctx, op, last, write && unknown)
		}
		// A TLS mismatch is a matter of configuration: waiting will not
		// cure it. Twice in a row, so that a connection that happened to
		// close at the wrong moment does not count.
		if tlsOnly {
			tlsRounds++
		} else {
			tlsRounds = 0
		}
		if tlsRounds == 2 {
			return 0, c.fail(ctx, op, fmt.Errorf("%w: %w", ErrUnavailable, last), write && unknown)
		}
		select {
		case <-ctx.Done():
			return 0, c.fail(ctx, op, last, write && unknown)
		case <-time.After(c.cfg.RetryPause):
		}
	}
}

// unavailable makes err match ErrUnavailable, if it does not already.
func unavailable(err error) error {
	if errors.Is(err, ErrUnavailable) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// refused reports whether err is a connection the endpoint refused
// (nothing listens at its port). gRPC keeps only the text of the dial error.
func refused(err error) bool {
	return err != nil && (errors.Is(err, syscall.ECONNREFUSED) || strings.Contains(err.Error(), "connection refused"))
}

// ended reports whether the call's context is over: canceled, or past its
// deadline (gRPC fails a call at its deadline, at times before the
// context's timer has fired).
func ended(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}

// minAttempt is the least time left for which a call begins another
// attempt once it has an answer.
const minAttempt = 50 * time.Millisecond

// tooLate reports whether less than minAttempt is left of the call.
func tooLate(ctx context.Context) bool {
	dl, ok := ctx.Deadline()
	return ok && time.Until(dl) < minAttempt
}

// attemptResult is how one attempt ended.
type attemptResult struct {
	err   error // nil, or an error matching a sentinel
	typed bool  // the node answered with a sentinel of its own
	sent  bool  // the request may have left this process
}

// attempt runs call once on endpoint idx, bounded by AttemptTimeout, and
// records whether the endpoint answered.
func (c *Client) attempt(ctx context.Context, idx int, call attemptFunc) attemptResult {
	start := time.Now()
	end := start.Add(c.cfg.AttemptTimeout)
	own := true // end is the attempt's timeout, not the call's deadline
	if dl, ok := ctx.Deadline(); ok && dl.Before(end) {
		end, own = dl, false
	}
	var p peer.Peer
	raw := call(ctx, end, idx, &p)
	// gRPC fills p in only for an attempt that got a stream on a
	// connection: without one the request never left.
	r := attemptResult{typed: rpc.Typed(raw), sent: raw == nil || p.Addr != nil}
	switch {
	case raw == nil:
		c.silent[idx].Store(0)
	case r.typed:
		c.silent[idx].Store(0)
		r.err = rpc.FromStatus(raw)
	default:
		code := status.Code(raw)
		silent := code == codes.Unavailable || code == codes.DeadlineExceeded ||
			(own && !time.Now().Before(end) && ctx.Err() == nil) // the attempt's own timeout
		if silent {
			c.silent[idx].Store(time.Now().UnixNano())
		} else if code != codes.Canceled {
			c.silent[idx].Store(0) // it answered, with an error of gRPC's
		}
		r.err = c.explainTLS(untyped(ctx, raw))
	}
	if c.cfg.OnAttempt != nil {
		c.cfg.OnAttempt(c.cfg.Endpoints[idx], time.Since(start), r.err)
	}
	return r
}

// untyped maps an error that names no sentinel (gRPC's own: the transport,
// a deadline, a limit, or a server that is not a node) to the client
// sentinel that says what happened, keeping the error itself.
func untyped(ctx context.Context, raw error) error {
	var s error
	switch status.Code(raw) {
	case codes.DeadlineExceeded:
		s = ErrTimeout
	case codes.Canceled:
		if ctx.Err() != nil && errors.Is(ctx.Err(), context.Canceled) {
			s = ErrCanceled
		} else {
			s = ErrUnavailable // the server or the connection ended it
		}
	case codes.ResourceExhausted:
		s = ErrTooLarge // gRPC's message size limits
	case codes.InvalidArgument, codes.OutOfRange, codes.Unimplemented:
		s = ErrBadRequest // not a call this node knows
	case codes.PermissionDenied, codes.Unauthenticated:
		s = ErrTLS
	default: // Unavailable, Unknown, Internal, ... and non-gRPC errors
		s = ErrUnavailable
	}
	return &mappedError{sentinel: s, err: raw}
}

// mappedError is an error of gRPC's, matching the client sentinel that says
// what happened as well as the error itself.
type mappedError struct {
	sentinel error
	err      error
}

func (e *mappedError) Error() string   { return e.sentinel.Error() + ": " + e.err.Error() }
func (e *mappedError) Unwrap() []error { return []error{e.sentinel, e.err} }

// tlsError is a connection failure that looks like a TLS mismatch, with a
// hint of the cause. It matches ErrTLS and the failure itself.
type tlsError struct {
	err  error
	hint string
}

func (e *tlsError) Error() string   { return e.err.Error() + " (" + e.hint + ")" }
func (e *tlsError) Unwrap() []error { return []error{ErrTLS, e.err} }

// explainTLS marks a connection failure that looks like a TLS mismatch:
// without TLS, the node closing the connection before it spoke HTTP/2 (what
// a node with TLS on does to a plaintext client); with TLS, a failed
// handshake on either side (a certificate not trusted, not naming the
// endpoint's host, or a node without TLS).
func (c *Client) explainTLS(err error) error {
	if status.Code(err) != codes.Unavailable {
		var m *mappedError
		if !errors.As(err, &m) || status.Code(m.err) != codes.Unavailable {
			return err
		}
	}
	msg := err.Error()
	switch {
	case c.cfg.TLS == nil && (strings.Contains(msg, "error reading server preface: EOF") || strings.Contains(msg, "closed before server preface")):
		return &tlsError{err, "the node closed the connection at once: it may require TLS, and a client certificate, key and CA"}
	case c.cfg.TLS != nil && (strings.Contains(msg, "authentication handshake failed") || strings.Contains(msg, "remote error: tls:")):
		return &tlsError{err, "TLS handshake failed: check the client's certificate, key and CA, and that the node's certificate names the endpoint's host"}
	}
	return err
}

// fail builds a call's final error: last attempt's, with ErrTimeout (and
// ErrUnavailable) if the call's deadline ended before an answer, the
// context's error if the caller canceled it, and ErrOutcomeUnknown if a
// write may have been applied.
func (c *Client) fail(ctx context.Context, op opName, last error, unknown bool) error {
	err := last
	if ended(ctx) && !errors.Is(err, ErrTimeout) && !errors.Is(err, context.Canceled) {
		if ctx.Err() == nil || errors.Is(ctx.Err(), context.DeadlineExceeded) {
			err = fmt.Errorf("%w (%w): %w", ErrTimeout, ErrUnavailable, last)
		} else {
			err = fmt.Errorf("%w: %w", ctx.Err(), last)
		}
	}
	if unknown && !errors.Is(err, ErrOutcomeUnknown) {
		err = fmt.Errorf("%w: %w", ErrOutcomeUnknown, err)
	}
	return fmt.Errorf("client: %s: %w", op, err)
}

// failover reports whether another endpoint (or this one, later) may serve
// a call that failed with err, while the call's deadline allows: the node
// cannot serve now (unreachable, partitioned, stopped, not answering), the
// attempt ran out of time (another node may see a leader, or the election
// may end), or a write's outcome is unknown for a reason another node may
// not share (its leader went away mid-write); the request id makes the
// retry safe. Other errors (bad request, too large, no quorum) would be the
// same elsewhere; ErrBusy asks this client to slow down, not to move.
func failover(err error) bool {
	switch {
	case errors.Is(err, ErrBadRequest), errors.Is(err, ErrTooLarge), errors.Is(err, ErrBusy), errors.Is(err, ErrCanceled):
		return false
	case errors.Is(err, ErrTimeout), errors.Is(err, ErrNoLeader):
		return true
	case errors.Is(err, ErrNoQuorum):
		return false
	case errors.Is(err, ErrPartitioned), errors.Is(err, ErrStopped), errors.Is(err, ErrOutcomeUnknown),
		errors.Is(err, ErrNotLeader), errors.Is(err, ErrUnavailable), errors.Is(err, ErrTLS), errors.Is(err, ErrWrongNode):
		return true
	}
	return false
}

// definite are the answers of a node that prove a write was not applied,
// unless they come with ErrOutcomeUnknown: the node refused it before
// sending it to a leader, or the leader refused it before appending it.
var definite = []error{
	ErrBadRequest, ErrTooLarge, ErrBusy, ErrPartitioned, ErrStopped, ErrNoLeader,
	ErrNoQuorum, ErrTimeout, ErrNotLeader, ErrStaleEpoch, ErrRemoved,
	ErrNotVoter, ErrUnsafeRemoval, ErrRemoveLeader, ErrWrongNode,
}

// maybeApplied reports whether a write attempt that failed with err (typed:
// the node's own answer) may have been applied: anything but a definite
// answer of the node. A transport failure, or the attempt's deadline, may
// have come after the request left.
func maybeApplied(err error, typed bool) bool {
	if errors.Is(err, ErrOutcomeUnknown) || !typed {
		return true
	}
	for _, d := range definite {
		if errors.Is(err, d) {
			return false
		}
	}
	return true
}

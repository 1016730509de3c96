package etcdcoord

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/connectivity"

	"github.com/kvstore/kvstore/clock"
	"github.com/kvstore/kvstore/coord"
	"github.com/kvstore/kvstore/coord/internal/goroutines"
)

// Config configures a Coordinator. Zero fields take the defaults of
// DefaultConfig; Endpoints is required.
type Config struct {
	// Endpoints are the etcd client URLs ("http://127.0.0.1:2379") or
	// host:port pairs.
	Endpoints []string
	// Prefix is the cluster's key prefix; every key lives under it. It must
	// end in "/". Default "/kvstore/default/".
	Prefix string
	// DialTimeout bounds New's connection check. Default 5 s.
	DialTimeout time.Duration
	// DriftMargin is the fraction of the granted TTL subtracted from every
	// session deadline, to cover clock-rate differences between this machine
	// and etcd. In [0, 1); 0 means the default, 0.1.
	DriftMargin float64
	// KeepAliveTime is the gRPC transport ping interval that detects a
	// black-holed connection. grpc-go raises anything below 10 s to 10 s (with
	// a warning), so that is the default and the minimum. Session liveness
	// does not depend on it: the keep-alive loop notices within TTL/6.
	KeepAliveTime time.Duration
	// KeepAliveTimeout is how long a transport ping may go unanswered before
	// the connection is closed and redialed. Default 1 s.
	KeepAliveTimeout time.Duration
	// Logger receives the client's notices: a member marked stalled
	// (calls skip it) and back. Nil: discarded.
	Logger *slog.Logger
	// Clock is the clock session deadlines are measured on; nil means
	// clock.System() (CLOCK_BOOTTIME on Linux: it counts the time the
	// machine spends suspended). A node must read the same clock when it
	// compares Deadline with now.
	Clock clock.Clock
	// TLS, if set, is the client's TLS configuration: the connection to
	// every endpoint is TLS, the server's certificate is checked against
	// RootCAs (the system's CAs if nil) and the host dialed, and
	// Certificates, if any, are shown to a server that asks for a client
	// certificate (etcd's --client-cert-auth). Endpoints must then be
	// host:port or https:// URLs. Nil: plaintext, unless an endpoint is an
	// https:// URL (then TLS with the system's CAs and no client
	// certificate).
	TLS *tls.Config
}

// DefaultConfig returns the defaults: prefix "/kvstore/default/", dial timeout
// 5 s, drift margin 0.1, transport keep-alive 10 s / 1 s. Endpoints must still
// be set.
func DefaultConfig() Config {
	return Config{
		Prefix:           "/kvstore/default/",
		DialTimeout:      5 * time.Second,
		DriftMargin:      0.1,
		KeepAliveTime:    10 * time.Second,
		KeepAliveTimeout: time.Second,
	}
}

// withDefaults returns cfg with zero fields replaced by the defaults.
func (cfg Config) withDefaults() Config {
	d := DefaultConfig()
	if cfg.Prefix == "" {
		cfg.Prefix = d.Prefix
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = d.DialTimeout
	}
	if cfg.DriftMargin == 0 {
		cfg.DriftMargin = d.DriftMargin
	}
	if cfg.KeepAliveTime == 0 {
		cfg.KeepAliveTime = d.KeepAliveTime
	}
	if cfg.KeepAliveTimeout == 0 {
		cfg.KeepAliveTimeout = d.KeepAliveTimeout
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.System()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg
}

// Validate reports the first invalid field, by name. Zero fields are valid
// (they take defaults), except Endpoints.
func (cfg Config) Validate() error {
	switch {
	case len(cfg.Endpoints) == 0:
		return errors.New("etcdcoord: Config.Endpoints is empty")
	case cfg.Prefix != "" && !strings.HasSuffix(cfg.Prefix, "/"):
		return fmt.Errorf("etcdcoord: Config.Prefix %q must end in \"/\"", cfg.Prefix)
	case cfg.DialTimeout < 0:
		return fmt.Errorf("etcdcoord: Config.DialTimeout must not be negative, got %v", cfg.DialTimeout)
	case cfg.DriftMargin < 0 || cfg.DriftMargin >= 1 || math.IsNaN(cfg.DriftMargin):
		return fmt.Errorf("etcdcoord: Config.DriftMargin must be in [0, 1), got %v", cfg.DriftMargin)
	case cfg.KeepAliveTime < 0:
		return fmt.Errorf("etcdcoord: Config.KeepAliveTime must not be negative, got %v", cfg.KeepAliveTime)
	case cfg.KeepAliveTimeout < 0:
		return fmt.Errorf("etcdcoord: Config.KeepAliveTimeout must not be negative, got %v", cfg.KeepAliveTimeout)
	}
	if cfg.TLS != nil {
		for _, ep := range cfg.Endpoints {
			if strings.HasPrefix(ep, "http://") {
				// The etcd client would drop TLS for it without a word.
				return fmt.Errorf("etcdcoord: Config.Endpoints: %q is plaintext http, but Config.TLS is set: use https:// or host:port", ep)
			}
		}
	}
	return nil
}

// keys are the etcd keys of one cluster, all under its prefix.
type keys struct {
	prefix   string
	members  string // members/<id>
	election string // the election's prefix as concurrency.NewElection wants it (no trailing "/")
	elecDir  string // election + "/": every candidate key starts with it
	voters   string
	cluster  string // the name of the cluster that owns the prefix
	// incarnation is the cluster record's random id (ClaimCluster).
	incarnation string
	settings    string // the cluster's safety settings (coord.Settings)
	base        string // the epoch base (coord.Coordinator.EpochBase)
	probe       string // read, never written, to probe a member (probeStalled)
}

func newKeys(prefix string) keys {
	return keys{
		prefix:      prefix,
		members:     prefix + "members/",
		election:    prefix + "election",
		elecDir:     prefix + "election/",
		voters:      prefix + "voters",
		cluster:     prefix + "cluster",
		incarnation: prefix + "incarnation",
		settings:    prefix + "settings",
		base:        prefix + "epoch_base",
		probe:       prefix + "probe",
	}
}

// Coordinator is a coord.Coordinator backed by an etcd client. It is safe for
// concurrent use.
type Coordinator struct {
	cfg    Config
	keys   keys
	client *clientv3.Client
	conn   connState
	stalls *stalls // members that stopped answering: calls skip them (stall.go)

	// routines counts every goroutine started by the Coordinator or its
	// sessions.
	routines goroutines.Group

	closeOnce sync.Once
	closeErr  error
}

var _ coord.Coordinator = (*Coordinator)(nil)

// New dials etcd and checks, bounded by ctx and Config.DialTimeout, that it
// answers. The client reconnects with a backoff capped at 1 s, so a node
// notices quickly when a cut connection is restored.
func New(ctx context.Context, cfg Config) (*Coordinator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	st := newStalls(cfg.Logger)
	client, err := clientv3.New(clientv3.Config{
		Endpoints:            cfg.Endpoints,
		DialTimeout:          cfg.DialTimeout,
		DialKeepAliveTime:    cfg.KeepAliveTime,
		DialKeepAliveTimeout: cfg.KeepAliveTimeout,
		DialOptions: append([]grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  100 * time.Millisecond,
				Multiplier: 1.6,
				Jitter:     0.2,
				MaxDelay:   time.Second,
			},
			MinConnectTimeout: time.Second,
		})}, st.dialOptions()...),
		TLS:    cfg.TLS,
		Logger: zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcdcoord: dial %v: %w", cfg.Endpoints, err)
	}
	c := &Coordinator{cfg: cfg, keys: newKeys(cfg.Prefix), client: client, stalls: st}
	c.conn.changed = make(chan struct{})
	c.routines.Go(nil, c.watchConn)
	c.routines.Go(nil, c.probeStalled)

	cctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	// In attempts, as every repeatable call: a first attempt that lands
	// on a member that stopped answering marks it, and the next goes to
	// another (one such member of three failed New at its deadline).
	if err := c.retry(cctx, func(ctx context.Context) error {
		_, err := client.Get(ctx, c.keys.voters)
		return err
	}); err != nil {
		c.Close()
		// The client only says that the deadline passed: a TLS problem
		// is found by a handshake of our own.
		if perr := probeTLS(ctx, cfg); perr != nil {
			return nil, fmt.Errorf("etcdcoord: reach etcd at %v: %w; %w", cfg.Endpoints, err, perr)
		}
		return nil, fmt.Errorf("etcdcoord: reach etcd at %v: %w", cfg.Endpoints, err)
	}
	return c, nil
}

// probeTime bounds probeTLS.
const probeTime = 2 * time.Second

// probeTLS explains a failed first request by a TLS problem, if there is
// one: it connects to the first endpoint as the client would and returns
// why the handshake failed, or why the server refused the client's
// certificate right after it. Without Config.TLS it checks whether the
// server speaks TLS instead. It returns nil if it finds nothing wrong, or
// if ctx is done.
func probeTLS(ctx context.Context, cfg Config) error {
	if ctx.Err() != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, probeTime)
	defer cancel()
	ep := cfg.Endpoints[0]
	hostport, https := strings.CutPrefix(ep, "https://")
	hostport = strings.TrimPrefix(hostport, "http://")
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil
	}
	raw, err := (&net.Dialer{}).DialContext(ctx, "tcp", hostport)
	if err != nil {
		return nil // not a TLS problem
	}
	defer raw.Close()
	if d, ok := ctx.Deadline(); ok {
		_ = raw.SetDeadline(d)
	}
	tc := cfg.TLS
	if tc == nil {
		if https {
			tc = &tls.Config{}
		} else {
			// Does the server want TLS? Verification does not matter.
			conn := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}}) //nolint:gosec // a probe that sends nothing
			if conn.HandshakeContext(ctx) == nil {
				return fmt.Errorf("the server at %s speaks TLS, but the client was given no TLS configuration", hostport)
			}
			return nil
		}
	}
	tc = tc.Clone()
	if tc.ServerName == "" {
		tc.ServerName = host
	}
	tc.NextProtos = []string{"h2"}
	conn := tls.Client(raw, tc)
	if err := conn.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("TLS handshake with %s: %w", hostport, err)
	}
	// In TLS 1.3 the server checks the client's certificate after the
	// client's side of the handshake is done, and says so in an alert.
	_ = raw.SetReadDeadline(time.Now().Add(probeTime / 4))
	if _, err := conn.Read(make([]byte, 1)); err != nil {
		if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
			return nil // the server waits for the client: TLS is fine
		}
		return fmt.Errorf("TLS with %s: %w", hostport, err)
	}
	return nil
}

// Close closes the client, which ends every goroutine of the Coordinator and
// its sessions, and waits for them. It does not revoke sessions: a session
// that was not closed keeps its entries until its TTL runs out, as after a
// crash; its Done closes with coord.ErrSessionClosed. Close is idempotent.
func (c *Coordinator) Close() error {
	c.closeOnce.Do(func() {
		c.routines.Close()
		if err := c.client.Close(); err != nil && !errors.Is(err, context.Canceled) {
			c.closeErr = fmt.Errorf("etcdcoord: close client: %w", err)
		}
		c.routines.Wait()
	})
	return c.closeErr
}

// Voters reads the voter record; Version is the key's ModRevision. A record
// never written is Voters{} with no error.
func (c *Coordinator) Voters(ctx context.Context) (coord.Voters, error) {
	resp, err := c.get(ctx, c.keys.voters)
	if err != nil {
		return coord.Voters{}, fmt.Errorf("etcdcoord: read voters: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return coord.Voters{}, nil
	}
	kv := resp.Kvs[0]
	v, err := coord.DecodeVoters(kv.Value, kv.ModRevision)
	if err != nil {
		return coord.Voters{}, fmt.Errorf("etcdcoord: %w", err)
	}
	return v, nil
}

// get reads key, in attempts (retry).
func (c *Coordinator) get(ctx context.Context, key string) (*clientv3.GetResponse, error) {
	var resp *clientv3.GetResponse
	err := c.retry(ctx, func(ctx context.Context) error {
		var err error
		resp, err = c.client.Get(ctx, key)
		return err
	})
	return resp, err
}

// CreateVoters writes the first voter record, unsealed, or fails with
// coord.ErrConflict if one exists.
func (c *Coordinator) CreateVoters(ctx context.Context, ids []string) error {
	return c.createVoters(ctx, ids, true)
}

// createVoters writes the voter record if none exists, unsealed or not.
func (c *Coordinator) createVoters(ctx context.Context, ids []string, unsealed bool) error {
	val, err := coord.EncodeVoters(ids, unsealed)
	if err != nil {
		return fmt.Errorf("etcdcoord: %w", err)
	}
	resp, err := c.client.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(c.keys.voters), "=", 0)).
		Then(clientv3.OpPut(c.keys.voters, string(val))).
		Commit()
	if err != nil {
		return fmt.Errorf("etcdcoord: create voters: %w", err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("etcdcoord: create voters: record exists: %w", coord.ErrConflict)
	}
	return nil
}

// ClaimCluster records name under the prefix's cluster key, and a new
// incarnation under the incarnation key, if the cluster key does not
// exist, in one transaction that otherwise reads both; a different name
// fails with coord.ErrOtherCluster. A record without an incarnation
// (written by older code) gets one in a second transaction that creates
// the key only if it is still absent, and otherwise reads it.
func (c *Coordinator) ClaimCluster(ctx context.Context, name string) (string, error) {
	if name == "" {
		return "", errors.New("etcdcoord: claim cluster: empty name")
	}
	inc, err := coord.NewIncarnation()
	if err != nil {
		return "", err
	}
	resp, err := c.client.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(c.keys.cluster), "=", 0)).
		Then(clientv3.OpPut(c.keys.cluster, name), clientv3.OpPut(c.keys.incarnation, inc)).
		Else(clientv3.OpGet(c.keys.cluster), clientv3.OpGet(c.keys.incarnation)).
		Commit()
	if err != nil {
		return "", fmt.Errorf("etcdcoord: claim cluster %q: %w", name, err)
	}
	if resp.Succeeded {
		return inc, nil
	}
	kvs := resp.Responses[0].GetResponseRange().GetKvs()
	if len(kvs) != 1 {
		return "", fmt.Errorf("etcdcoord: claim cluster %q: key %s neither absent nor readable", name, c.keys.cluster)
	}
	if got := string(kvs[0].Value); got != name {
		return "", fmt.Errorf("etcdcoord: prefix %s belongs to cluster %q, not %q: %w", c.keys.prefix, got, name, coord.ErrOtherCluster)
	}
	if kvs := resp.Responses[1].GetResponseRange().GetKvs(); len(kvs) == 1 {
		return string(kvs[0].Value), nil
	}
	// A record from before incarnations: give it one, once.
	resp, err = c.client.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(c.keys.incarnation), "=", 0)).
		Then(clientv3.OpPut(c.keys.incarnation, inc)).
		Else(clientv3.OpGet(c.keys.incarnation)).
		Commit()
	if err != nil {
		return "", fmt.Errorf("etcdcoord: claim cluster %q: create its incarnation: %w", name, err)
	}
	if resp.Succeeded {
		return inc, nil
	}
	kvs = resp.Responses[0].GetResponseRange().GetKvs()
	if len(kvs) != 1 {
		return "", fmt.Errorf("etcdcoord: claim cluster %q: key %s neither absent nor readable", name, c.keys.incarnation)
	}
	return string(kvs[0].Value), nil
}

// Settings reads the settings record; Version is the key's ModRevision.
func (c *Coordinator) Settings(ctx context.Context) (coord.Settings, error) {
	resp, err := c.get(ctx, c.keys.settings)
	if err != nil {
		return coord.Settings{}, fmt.Errorf("etcdcoord: read settings: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return coord.Settings{}, nil
	}
	s, err := coord.DecodeSettings(resp.Kvs[0].Value, resp.Kvs[0].ModRevision)
	if err != nil {
		return coord.Settings{}, fmt.Errorf("etcdcoord: %w", err)
	}
	return s, nil
}

// ClaimSettings writes s if the settings key does not exist, in one
// transaction that otherwise reads the recorded settings.
func (c *Coordinator) ClaimSettings(ctx context.Context, s coord.Settings) (coord.Settings, error) {
	val, err := coord.EncodeSettings(s)
	if err != nil {
		return coord.Settings{}, err
	}
	resp, err := c.client.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(c.keys.settings), "=", 0)).
		Then(clientv3.OpPut(c.keys.settings, string(val))).
		Else(clientv3.OpGet(c.keys.settings)).
		Commit()
	if err != nil {
		return coord.Settings{}, fmt.Errorf("etcdcoord: claim settings: %w", err)
	}
	if resp.Succeeded {
		s.Version = resp.Header.Revision // the put's ModRevision
		return s, nil
	}
	kvs := resp.Responses[0].GetResponseRange().GetKvs()
	if len(kvs) != 1 {
		return coord.Settings{}, fmt.Errorf("etcdcoord: claim settings: key %s neither absent nor readable", c.keys.settings)
	}
	got, err := coord.DecodeSettings(kvs[0].Value, kvs[0].ModRevision)
	if err != nil {
		return coord.Settings{}, fmt.Errorf("etcdcoord: %w", err)
	}
	return got, nil
}

// SetSettings replaces the settings record if its ModRevision is still
// prev.Version.
func (c *Coordinator) SetSettings(ctx context.Context, prev, next coord.Settings) error {
	val, err := coord.EncodeSettings(next)
	if err != nil {
		return err
	}
	if prev.Version <= 0 {
		return fmt.Errorf("etcdcoord: set settings: version %d was never read from a record: %w", prev.Version, coord.ErrConflict)
	}
	resp, err := c.client.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(c.keys.settings), "=", prev.Version)).
		Then(clientv3.OpPut(c.keys.settings, string(val))).
		Commit()
	if err != nil {
		return fmt.Errorf("etcdcoord: set settings: %w", err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("etcdcoord: set settings: version %d is stale: %w", prev.Version, coord.ErrConflict)
	}
	return nil
}

// ReplaceVoters overwrites the voter record, sealed, if its mod revision
// is still prev.Version (or, with prev.Version 0, creates it), unfenced.
func (c *Coordinator) ReplaceVoters(ctx context.Context, prev coord.Voters, ids []string) error {
	if prev.Version == 0 {
		return c.createVoters(ctx, ids, false)
	}
	val, err := coord.EncodeVoters(ids, false)
	if err != nil {
		return fmt.Errorf("etcdcoord: %w", err)
	}
	resp, err := c.client.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(c.keys.voters), "=", prev.Version)).
		Then(clientv3.OpPut(c.keys.voters, string(val))).
		Commit()
	if err != nil {
		return fmt.Errorf("etcdcoord: replace voters: %w", err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("etcdcoord: replace voters: version %d is stale: %w", prev.Version, coord.ErrConflict)
	}
	return nil
}

// EpochBase reads the epoch base key (a decimal number); absent is 0.
func (c *Coordinator) EpochBase(ctx context.Context) (int64, error) {
	base, _, err := c.epochBase(ctx)
	return base, err
}

func (c *Coordinator) epochBase(ctx context.Context) (base, modRev int64, err error) {
	resp, err := c.get(ctx, c.keys.base)
	if err != nil {
		return 0, 0, fmt.Errorf("etcdcoord: read the epoch base: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return 0, 0, nil
	}
	kv := resp.Kvs[0]
	if base, err = strconv.ParseInt(string(kv.Value), 10, 64); err != nil || base < 0 {
		return 0, 0, fmt.Errorf("etcdcoord: decode the epoch base %q: bad number", kv.Value)
	}
	return base, kv.ModRevision, nil
}

// RaiseEpochBase raises the epoch base key to base with a compare-and-swap
// on its mod revision, retried until it holds base or more.
func (c *Coordinator) RaiseEpochBase(ctx context.Context, base int64) error {
	if base < 0 {
		return fmt.Errorf("etcdcoord: raise the epoch base: %d is negative", base)
	}
	for {
		cur, rev, err := c.epochBase(ctx)
		if err != nil {
			return err
		}
		if cur >= base {
			return nil
		}
		resp, err := c.client.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(c.keys.base), "=", rev)).
			Then(clientv3.OpPut(c.keys.base, strconv.FormatInt(base, 10))).
			Commit()
		if err != nil {
			return fmt.Errorf("etcdcoord: raise the epoch base to %d: %w", base, err)
		}
		if resp.Succeeded {
			return nil
		}
	}
}

// connState tracks whether the client's gRPC connection is ready.
type connState struct {
	mu      sync.Mutex
	ready   bool          // guarded by mu
	changed chan struct{} // guarded by mu; closed and replaced when ready changes
}

// get returns the current state and a channel closed when it next changes.
func (s *connState) get() (bool, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ready, s.changed
}

func (s *connState) set(ready bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ready != ready {
		s.ready = ready
		close(s.changed)
		s.changed = make(chan struct{})
	}
}

// watchConn follows the gRPC connection's state until the client closes.
func (c *Coordinator) watchConn() {
	conn := c.client.ActiveConnection()
	st := conn.GetState()
	for {
		c.conn.set(st == connectivity.Ready)
		if !conn.WaitForStateChange(c.client.Ctx(), st) {
			c.conn.set(false)
			return
		}
		st = conn.GetState()
	}
}

package zkcoord

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/kvstore/kvstore/clock"
	"github.com/kvstore/kvstore/coord"
	"github.com/kvstore/kvstore/coord/internal/goroutines"
)

// Config configures a Coordinator. Zero fields take the defaults of
// DefaultConfig; Servers is required.
type Config struct {
	// Servers are the ensemble's client addresses, host:port.
	Servers []string
	// Prefix is the cluster's znode path, chroot included: every znode lives
	// under it. It starts with "/" and does not end with one. Default
	// "/kvstore/default".
	Prefix string
	// DialTimeout bounds New's wait for a first session. Default 5 s.
	DialTimeout time.Duration
	// DriftMargin is the fraction of the negotiated session timeout
	// subtracted from every session deadline, to cover clock-rate
	// differences between this machine and the ensemble. In [0, 0.5); 0
	// means the default, 0.1.
	DriftMargin float64
	// Clock is the clock session deadlines are measured on; nil means
	// clock.System() (CLOCK_BOOTTIME on Linux: it counts the time the
	// machine spends suspended). A node must read the same clock when it
	// compares Deadline with now.
	Clock clock.Clock
	// Auth, if set, is "user:password" for ZooKeeper's digest scheme.
	// Every connection authenticates with it (the client re-sends it after
	// each reconnect, before any other request), and every znode created at
	// or under Prefix gets the ACL digest:user:<hash> with all permissions,
	// so that a client without these credentials can neither read nor
	// change nor delete anything of the cluster. Parents of Prefix that New
	// creates get world:anyone with READ and CREATE only, so that clusters
	// with other credentials can live beside it but nobody can change or
	// delete them. New refuses a Prefix whose existing znodes are open to
	// anyone. Empty: no credentials, and every znode is open to anyone
	// (world:anyone, all permissions).
	Auth string
	// TLS, if set, is the client's TLS configuration: every connection is
	// TLS, to the servers' secure client port (secureClientPort), the
	// server's certificate is checked against RootCAs (the system's CAs if
	// nil) and the host dialed, and Certificates are shown to a server that
	// asks for a client certificate (ssl.clientAuth). Nil: plaintext. TLS
	// also hides Auth's password, which the digest scheme sends in clear.
	TLS *tls.Config
}

// DefaultConfig returns the defaults: prefix "/kvstore/default", dial timeout
// 5 s, drift margin 0.1. Servers must still be set.
func DefaultConfig() Config {
	return Config{Prefix: "/kvstore/default", DialTimeout: 5 * time.Second, DriftMargin: 0.1}
}

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
	if cfg.Clock == nil {
		cfg.Clock = clock.System()
	}
	return cfg
}

// Validate reports the first invalid field, by name. Zero fields are valid
// (they take defaults), except Servers.
func (cfg Config) Validate() error {
	switch {
	case len(cfg.Servers) == 0:
		return errors.New("zkcoord: Config.Servers is empty")
	case cfg.Prefix != "" && validPath(cfg.Prefix) != nil:
		return fmt.Errorf("zkcoord: Config.Prefix: %w", validPath(cfg.Prefix))
	case cfg.DialTimeout < 0:
		return fmt.Errorf("zkcoord: Config.DialTimeout must not be negative, got %v", cfg.DialTimeout)
	case cfg.DriftMargin < 0 || cfg.DriftMargin >= 0.5 || math.IsNaN(cfg.DriftMargin):
		return fmt.Errorf("zkcoord: Config.DriftMargin must be in [0, 0.5), got %v", cfg.DriftMargin)
	}
	if cfg.Auth != "" {
		// The message never quotes the password.
		if user, pass, ok := strings.Cut(cfg.Auth, ":"); !ok || user == "" || pass == "" {
			return errors.New("zkcoord: Config.Auth must be user:password, both non-empty")
		}
	}
	for _, s := range cfg.Servers {
		if s == "" || strings.ContainsAny(s, "/, ") {
			return fmt.Errorf("zkcoord: Config.Servers: bad address %q (want host:port)", s)
		}
	}
	return nil
}

// validPath checks an absolute znode path of at least one component.
func validPath(p string) error {
	if !strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") || strings.Contains(p, "//") {
		return fmt.Errorf("%q must start with \"/\", not end with one, and have no empty component", p)
	}
	return nil
}

// ParseConnectString splits a ZooKeeper connect string,
// "host:port[,host:port...][/chroot]", into its servers and its chroot path
// ("" when there is none).
func ParseConnectString(s string) (servers []string, chroot string, err error) {
	hosts := s
	if i := strings.Index(s, "/"); i >= 0 {
		hosts, chroot = s[:i], s[i:]
		if chroot == "/" {
			chroot = ""
		} else if err := validPath(chroot); err != nil {
			return nil, "", fmt.Errorf("zkcoord: connect string %q: chroot %w", s, err)
		}
	}
	for _, h := range strings.Split(hosts, ",") {
		h = strings.TrimSpace(h)
		if h == "" {
			continue
		}
		if !strings.Contains(h, ":") {
			h += ":2181"
		}
		servers = append(servers, h)
	}
	if len(servers) == 0 {
		return nil, "", fmt.Errorf("zkcoord: connect string %q names no server", s)
	}
	return servers, chroot, nil
}

// paths are the znodes of one cluster, all under its prefix.
type paths struct {
	prefix    string
	members   string // members/<id>
	election  string // election/n_<guid>_<seq>
	candidate string // what a candidate's sequential znode is created as
	voters    string
	cluster   string // the name of the cluster that owns the prefix
	// incarnation is the cluster record's random id (ClaimCluster).
	incarnation string
	settings    string // the cluster's safety settings (coord.Settings)
	base        string // the epoch base (coord.Coordinator.EpochBase)
}

func newPaths(prefix string) paths {
	return paths{
		prefix:      prefix,
		members:     prefix + "/members",
		election:    prefix + "/election",
		candidate:   prefix + "/election/n_",
		voters:      prefix + "/voters",
		cluster:     prefix + "/cluster",
		incarnation: prefix + "/incarnation",
		settings:    prefix + "/settings",
		base:        prefix + "/epoch_base",
	}
}

// openACL is every znode's ACL without Config.Auth.
var openACL = zk.WorldACL(zk.PermAll)

// parentACL is the ACL of the parents of Prefix that New creates with
// Config.Auth: anyone may list them and create children (other clusters'
// prefixes), nobody may change or delete them.
var parentACL = zk.WorldACL(zk.PermRead | zk.PermCreate)

// acls returns the ACL of the znodes at and under the prefix, and of the
// parents New creates.
func (cfg Config) acls() (own, parents []zk.ACL) {
	if cfg.Auth == "" {
		return openACL, openACL
	}
	user, pass, _ := strings.Cut(cfg.Auth, ":")
	return zk.DigestACL(zk.PermAll, user, pass), parentACL
}

// Coordinator is a coord.Coordinator backed by a ZooKeeper ensemble. It is
// safe for concurrent use. Each Session has a ZooKeeper connection (and so a
// ZooKeeper session) of its own; the Coordinator keeps one more for the voter
// record.
type Coordinator struct {
	cfg   Config
	paths paths
	admin *link // Voters and CreateVoters

	acl       []zk.ACL // of every znode at or under the prefix
	parentACL []zk.ACL // of the prefix's parents that ensure creates

	// routines counts every goroutine started by the Coordinator or its
	// sessions.
	routines goroutines.Group

	// mu guards sessions, and orders routines.Close with the check of
	// routines.Closed in NewSession.
	mu       sync.Mutex
	sessions map[*session]struct{}

	closeOnce sync.Once
}

var _ coord.Coordinator = (*Coordinator)(nil)

// New connects to the ensemble, waits (bounded by ctx and DialTimeout) for a
// ZooKeeper session, and creates the cluster's parent znodes if they are
// missing.
func New(ctx context.Context, cfg Config) (*Coordinator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	c := &Coordinator{cfg: cfg, paths: newPaths(cfg.Prefix), sessions: map[*session]struct{}{}}
	c.acl, c.parentACL = cfg.acls()
	cctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	admin, err := dial(cctx, cfg, 10*time.Second, nil)
	if err != nil {
		return nil, fmt.Errorf("zkcoord: reach ZooKeeper at %v: %w", cfg.Servers, err)
	}
	c.admin = admin
	for _, p := range []string{c.paths.members, c.paths.election} {
		if err := c.ensure(cctx, p); err != nil {
			c.Close()
			return nil, err
		}
	}
	if cfg.Auth != "" {
		if err := c.checkClosed(cctx); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// ensure creates p and its missing ancestors as persistent znodes: those
// above the prefix with parentACL, the others with acl.
func (c *Coordinator) ensure(ctx context.Context, p string) error {
	for i := 1; i <= len(p); i++ {
		if i < len(p) && p[i] != '/' {
			continue
		}
		part := p[:i]
		acl := c.acl
		if len(part) < len(c.paths.prefix) {
			acl = c.parentACL
		}
		// Retried on a lost answer: a create that went through then
		// reports ErrNodeExists, which is what we want anyway.
		err := doIdempotent(ctx, c, func() error {
			_, err := c.admin.conn.Create(part, nil, 0, acl)
			return err
		})
		if err != nil && !errors.Is(err, zk.ErrNodeExists) {
			return fmt.Errorf("zkcoord: create %s: %w", part, err)
		}
	}
	return nil
}

// checkClosed makes sure that none of the cluster's persistent znodes that
// exist is open to anyone (world:anyone): a prefix created before
// Config.Auth was set keeps its open ACLs, and serving on it would protect
// nothing. Set their ACLs (zkCli: setAcl -R) or use a new prefix.
func (c *Coordinator) checkClosed(ctx context.Context) error {
	for _, p := range []string{c.paths.prefix, c.paths.members, c.paths.election, c.paths.voters, c.paths.cluster, c.paths.incarnation, c.paths.settings, c.paths.base} {
		var acl []zk.ACL
		err := doIdempotent(ctx, c, func() (err error) {
			acl, _, err = c.admin.conn.GetACL(p)
			return err
		})
		if errors.Is(err, zk.ErrNoNode) {
			continue
		}
		if err != nil {
			return fmt.Errorf("zkcoord: read the ACL of %s: %w", p, err)
		}
		for _, a := range acl {
			if a.Scheme == "world" {
				return fmt.Errorf("zkcoord: %s is open to anyone (ACL world:%s, permissions %#x) although Config.Auth is set: set the ACLs of the prefix's znodes to the digest of the credentials, or use a new prefix", p, a.ID, a.Perms)
			}
		}
	}
	return nil
}

// Close abandons every session that was not closed (its TCP connections are
// dropped without a closeSession request, so ZooKeeper keeps its ephemeral
// znodes until the session timeout, as after a crash; its Done closes with
// coord.ErrSessionClosed), closes the Coordinator's own connection and waits
// for every goroutine. Close is idempotent.
func (c *Coordinator) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.routines.Close()
		sessions := make([]*session, 0, len(c.sessions))
		for s := range c.sessions {
			sessions = append(sessions, s)
		}
		c.mu.Unlock()
		for _, s := range sessions {
			s.abandon()
		}
		if c.admin != nil {
			c.admin.close()
		}
		c.routines.Wait()
	})
	return nil
}

// errClosed is returned by calls made after Close.
var errClosed = errors.New("zkcoord: coordinator closed")

// do runs f, a blocking ZooKeeper call, in a goroutine owned by c and waits
// for it or for ctx. The client's calls take no context; each ends by itself
// once its connection answers, breaks or closes, so f never runs for long
// after ctx ends.
func do(ctx context.Context, c *Coordinator, f func() error) error {
	res := make(chan error, 1)
	if !c.routines.Go(nil, func() { res <- f() }) {
		return errClosed
	}
	select {
	case err := <-res:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// doIdempotent is do for a call that is safe to repeat (a read, or a
// create whose "already exists" the caller accepts): while the connection
// breaks under it (lostAnswer), it is retried every retryInterval until it
// gets an answer or ctx ends, so that a ZooKeeper server going away, or
// the ensemble electing a leader, costs time and not the call.
func doIdempotent(ctx context.Context, c *Coordinator, f func() error) error {
	err := do(ctx, c, f)
	for lostAnswer(err) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (after %w)", ctx.Err(), err)
		case <-time.After(retryInterval):
		}
		err = do(ctx, c, f)
	}
	return err
}

// Voters reads the voter record, linearizably (sync, then get). Version is
// the znode's data version plus one, so that 0 still means "never written".
// A record never written is Voters{} with no error.
func (c *Coordinator) Voters(ctx context.Context) (coord.Voters, error) {
	var data []byte
	var stat *zk.Stat
	read := func() (err error) {
		// The admin connection may sit on a lagging follower: sync first,
		// so that the read sees every write acknowledged before it began.
		if _, err := c.admin.conn.Sync(c.paths.prefix); err != nil {
			return err
		}
		data, stat, err = c.admin.conn.Get(c.paths.voters)
		return err
	}
	// A read is safe to retry while the client finds another server.
	err := doIdempotent(ctx, c, read)
	if errors.Is(err, zk.ErrNoNode) {
		return coord.Voters{}, nil
	}
	if err != nil {
		return coord.Voters{}, fmt.Errorf("zkcoord: read voters: %w", err)
	}
	v, err := coord.DecodeVoters(data, int64(stat.Version)+1)
	if err != nil {
		return coord.Voters{}, fmt.Errorf("zkcoord: %w", err)
	}
	return v, nil
}

// CreateVoters writes the first voter record, unsealed, or fails with
// coord.ErrConflict if one exists.
func (c *Coordinator) CreateVoters(ctx context.Context, ids []string) error {
	return c.createVoters(ctx, ids, true)
}

// createVoters creates the voter znode, unsealed or not, if it does not
// exist.
func (c *Coordinator) createVoters(ctx context.Context, ids []string, unsealed bool) error {
	val, err := coord.EncodeVoters(ids, unsealed)
	if err != nil {
		return fmt.Errorf("zkcoord: %w", err)
	}
	err = do(ctx, c, func() error {
		_, err := c.admin.conn.Create(c.paths.voters, val, 0, c.acl)
		return err
	})
	if errors.Is(err, zk.ErrNodeExists) {
		return fmt.Errorf("zkcoord: create voters: record exists: %w", coord.ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("zkcoord: create voters: %w", err)
	}
	return nil
}

// ClaimCluster creates the persistent cluster znode holding name and the
// incarnation znode holding a new incarnation in one multi-op if the
// cluster znode does not exist; if it does, it reads the recorded name (the
// znode never changes, so a read on the server that reported it is enough),
// and a different name fails with coord.ErrOtherCluster. Then it reads the
// incarnation, creating it if it is absent (a cluster znode created before
// incarnations). A create whose answer was lost is retried: if it was
// applied, the retry finds the znodes.
func (c *Coordinator) ClaimCluster(ctx context.Context, name string) (string, error) {
	if name == "" {
		return "", errors.New("zkcoord: claim cluster: empty name")
	}
	inc, err := coord.NewIncarnation()
	if err != nil {
		return "", err
	}
	for {
		err := do(ctx, c, func() error {
			// ErrNodeExists if either exists: the cluster znode, read
			// below (an incarnation without one fails that read).
			_, err := c.admin.conn.Multi(
				&zk.CreateRequest{Path: c.paths.cluster, Data: []byte(name), Acl: c.acl},
				&zk.CreateRequest{Path: c.paths.incarnation, Data: []byte(inc), Acl: c.acl},
			)
			return err
		})
		if err == nil {
			return inc, nil
		}
		if errors.Is(err, zk.ErrNodeExists) {
			var data []byte
			err = do(ctx, c, func() (err error) {
				data, _, err = c.admin.conn.Get(c.paths.cluster)
				return err
			})
			if err == nil {
				if got := string(data); got != name {
					return "", fmt.Errorf("zkcoord: prefix %s belongs to cluster %q, not %q: %w", c.paths.prefix, got, name, coord.ErrOtherCluster)
				}
				return c.claimIncarnation(ctx, name, inc)
			}
		}
		if !lostAnswer(err) {
			return "", fmt.Errorf("zkcoord: claim cluster %q: %w", name, err)
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("zkcoord: claim cluster %q: %w (after %w)", name, ctx.Err(), err)
		case <-time.After(retryInterval):
		}
	}
}

// claimIncarnation reads the incarnation znode of an existing cluster
// record, creating it with inc if it is absent. It never changes once
// created, so a read on the server that reported it is enough.
func (c *Coordinator) claimIncarnation(ctx context.Context, name, inc string) (string, error) {
	for {
		var data []byte
		err := do(ctx, c, func() (err error) {
			data, _, err = c.admin.conn.Get(c.paths.incarnation)
			return err
		})
		if err == nil {
			return string(data), nil
		}
		if errors.Is(err, zk.ErrNoNode) {
			err = do(ctx, c, func() error {
				_, err := c.admin.conn.Create(c.paths.incarnation, []byte(inc), 0, c.acl)
				return err
			})
			if err == nil {
				return inc, nil
			}
			if errors.Is(err, zk.ErrNodeExists) {
				continue // another claimer created it: read it
			}
		}
		if !lostAnswer(err) {
			return "", fmt.Errorf("zkcoord: claim cluster %q: incarnation: %w", name, err)
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("zkcoord: claim cluster %q: incarnation: %w (after %w)", name, ctx.Err(), err)
		case <-time.After(retryInterval):
		}
	}
}

// Settings reads the settings record, linearizably (sync, then get).
// Version is the znode's data version plus one, so that 0 still means
// "never written".
func (c *Coordinator) Settings(ctx context.Context) (coord.Settings, error) {
	var data []byte
	var stat *zk.Stat
	read := func() (err error) {
		if _, err := c.admin.conn.Sync(c.paths.prefix); err != nil {
			return err
		}
		data, stat, err = c.admin.conn.Get(c.paths.settings)
		return err
	}
	err := doIdempotent(ctx, c, read)
	if errors.Is(err, zk.ErrNoNode) {
		return coord.Settings{}, nil
	}
	if err != nil {
		return coord.Settings{}, fmt.Errorf("zkcoord: read settings: %w", err)
	}
	s, err := coord.DecodeSettings(data, int64(stat.Version)+1)
	if err != nil {
		return coord.Settings{}, fmt.Errorf("zkcoord: %w", err)
	}
	return s, nil
}

// ClaimSettings creates the persistent settings znode holding s if it does
// not exist, and otherwise reads it (Settings: sync, then get). A create
// whose answer was lost is retried: if it was applied, the retry finds the
// znode.
func (c *Coordinator) ClaimSettings(ctx context.Context, s coord.Settings) (coord.Settings, error) {
	val, err := coord.EncodeSettings(s)
	if err != nil {
		return coord.Settings{}, err
	}
	for {
		err := do(ctx, c, func() error {
			_, err := c.admin.conn.Create(c.paths.settings, val, 0, c.acl)
			return err
		})
		switch {
		case err == nil:
			s.Version = 1
			return s, nil
		case errors.Is(err, zk.ErrNodeExists):
			return c.Settings(ctx)
		case !lostAnswer(err):
			return coord.Settings{}, fmt.Errorf("zkcoord: claim settings: %w", err)
		}
		select {
		case <-ctx.Done():
			return coord.Settings{}, fmt.Errorf("zkcoord: claim settings: %w (after %w)", ctx.Err(), err)
		case <-time.After(retryInterval):
		}
	}
}

// SetSettings replaces the settings record with a versioned setData.
func (c *Coordinator) SetSettings(ctx context.Context, prev, next coord.Settings) error {
	val, err := coord.EncodeSettings(next)
	if err != nil {
		return err
	}
	if prev.Version <= 0 || prev.Version > 1<<31 {
		return fmt.Errorf("zkcoord: set settings: version %d was never read from a record: %w", prev.Version, coord.ErrConflict)
	}
	err = do(ctx, c, func() error {
		_, err := c.admin.conn.Set(c.paths.settings, val, int32(prev.Version-1))
		return err
	})
	switch {
	case errors.Is(err, zk.ErrBadVersion), errors.Is(err, zk.ErrNoNode):
		return fmt.Errorf("zkcoord: set settings: version %d is stale (%w): %w", prev.Version, err, coord.ErrConflict)
	case err != nil:
		return fmt.Errorf("zkcoord: set settings: %w", err)
	}
	return nil
}

// ReplaceVoters overwrites the voter znode, sealed, if its version still
// matches prev.Version (or, with prev.Version 0, creates it), unfenced.
func (c *Coordinator) ReplaceVoters(ctx context.Context, prev coord.Voters, ids []string) error {
	if prev.Version == 0 {
		return c.createVoters(ctx, ids, false)
	}
	if prev.Version < 0 || prev.Version > 1<<31 {
		return fmt.Errorf("zkcoord: replace voters: version %d was never read from a record: %w", prev.Version, coord.ErrConflict)
	}
	val, err := coord.EncodeVoters(ids, false)
	if err != nil {
		return fmt.Errorf("zkcoord: %w", err)
	}
	err = do(ctx, c, func() error {
		_, err := c.admin.conn.Set(c.paths.voters, val, int32(prev.Version-1))
		return err
	})
	if errors.Is(err, zk.ErrBadVersion) || errors.Is(err, zk.ErrNoNode) {
		return fmt.Errorf("zkcoord: replace voters: version %d is stale (%w): %w", prev.Version, err, coord.ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("zkcoord: replace voters: %w", err)
	}
	return nil
}

// EpochBase reads the epoch base znode (a decimal number), linearizably
// (sync, then get); absent is 0.
func (c *Coordinator) EpochBase(ctx context.Context) (int64, error) {
	base, _, err := c.epochBase(ctx)
	return base, err
}

// epochBase returns the base and the znode's version (-1: absent).
func (c *Coordinator) epochBase(ctx context.Context) (base int64, version int32, err error) {
	var data []byte
	var stat *zk.Stat
	read := func() (err error) {
		if _, err := c.admin.conn.Sync(c.paths.prefix); err != nil {
			return err
		}
		data, stat, err = c.admin.conn.Get(c.paths.base)
		return err
	}
	err = doIdempotent(ctx, c, read)
	if errors.Is(err, zk.ErrNoNode) {
		return 0, -1, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("zkcoord: read the epoch base: %w", err)
	}
	if base, err = strconv.ParseInt(string(data), 10, 64); err != nil || base < 0 {
		return 0, 0, fmt.Errorf("zkcoord: decode the epoch base %q: bad number", data)
	}
	return base, stat.Version, nil
}

// RaiseEpochBase raises the epoch base znode to base with a versioned
// create or set, retried until it holds base or more.
func (c *Coordinator) RaiseEpochBase(ctx context.Context, base int64) error {
	if base < 0 {
		return fmt.Errorf("zkcoord: raise the epoch base: %d is negative", base)
	}
	val := []byte(strconv.FormatInt(base, 10))
	for {
		cur, version, err := c.epochBase(ctx)
		if err != nil {
			return err
		}
		if cur >= base {
			return nil
		}
		err = do(ctx, c, func() error {
			if version < 0 {
				_, err := c.admin.conn.Create(c.paths.base, val, 0, c.acl)
				return err
			}
			_, err := c.admin.conn.Set(c.paths.base, val, version)
			return err
		})
		switch {
		case err == nil:
			return nil
		case errors.Is(err, zk.ErrNodeExists), errors.Is(err, zk.ErrBadVersion), lostAnswer(err):
			// Changed meanwhile, or the answer was lost: read again.
			select {
			case <-ctx.Done():
				return fmt.Errorf("zkcoord: raise the epoch base to %d: %w (after %w)", base, ctx.Err(), err)
			case <-time.After(retryInterval):
			}
		default:
			return fmt.Errorf("zkcoord: raise the epoch base to %d: %w", base, err)
		}
	}
}

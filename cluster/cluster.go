// Package cluster runs N KVStore nodes and their coordinator in one process,
// with every fault real and switchable per node: each node reaches the
// coordinator through its own TCP proxy (zk-down really cuts it), each
// node's inbound RPC can be switched off (rmi-down), and nodes can be killed
// (memory lost) and restarted with the same id. The shell, the tests and the
// benchmarks all use it, so each fault has one implementation.
//
// The coordinator is etcd or ZooKeeper (Options.Backend). Lifecycle: New
// starts the coordinator (an embedded etcd, or a ZooKeeper server from
// Debian's package, unless Options names external servers) and the first
// nodes; Close stops every node, then the proxies, then the coordinator, and
// removes temporary data.
package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/kvstore/kvstore/certs"
	"github.com/kvstore/kvstore/clock"
	"github.com/kvstore/kvstore/coord"
	"github.com/kvstore/kvstore/coord/etcdcoord"
	"github.com/kvstore/kvstore/coord/zkcoord"
	"github.com/kvstore/kvstore/etcdembed"
	"github.com/kvstore/kvstore/faultproxy"
	"github.com/kvstore/kvstore/node"
	"github.com/kvstore/kvstore/zkserver"
)

// ErrNoSuchNode is returned for a node number that was never created.
var ErrNoSuchNode = errors.New("cluster: no such node")

// ErrRetired is returned for a node number that was retired (Retire): it
// left the cluster for good and is never started again.
var ErrRetired = errors.New("cluster: node retired")

// Backend names a coordinator kind.
type Backend string

// The coordinator backends.
const (
	Etcd      Backend = "etcd"
	ZooKeeper Backend = "zookeeper"
)

// Backends lists every coordinator backend, for tests that run over all.
var Backends = []Backend{Etcd, ZooKeeper}

// Options configure a Cluster.
type Options struct {
	// Nodes is how many nodes New starts (default 1).
	Nodes int
	// Backend is the coordinator: Etcd (the default) or ZooKeeper. It is
	// ZooKeeper when ZooKeeper servers are given.
	Backend Backend
	// Etcd lists external etcd endpoints; empty (with Backend Etcd) starts
	// an embedded etcd with data in a temporary directory.
	Etcd []string
	// ZooKeeper lists the client addresses (host:port) of an external
	// ZooKeeper ensemble; empty with Backend ZooKeeper starts a standalone
	// ZooKeeper server from Debian's package, data in a temporary directory.
	ZooKeeper []string
	// Prefix is where the cluster lives in the coordinator: a key prefix for
	// etcd (default "/kvstore/<Cluster>/"), a znode path for ZooKeeper
	// (default "/kvstore/<Cluster>"; a chroot goes in front of it).
	Prefix string
	// Node adjusts each node's configuration (timeouts, faults) before it
	// starts; it sees the node's ID, which it may not change, and
	// Coordinator and Logger are set by the cluster. The node's
	// coordinator connection measures session deadlines on the node's
	// Clock.
	Node func(*node.Config)
	// WrapCoordinator, if set, wraps each node's coordinator connection
	// before the node gets it: for tests that bend what the coordinator
	// says (its epochs, say).
	WrapCoordinator func(coord.Coordinator) coord.Coordinator
	// Logger receives the nodes' logs (default: discarded).
	Logger *slog.Logger
	// DataDir, if set, makes the nodes durable: node n<i> keeps its state
	// in DataDir/n<i> (node.Config.DataDir), which Kill leaves in place and
	// Restart opens again; a coordinator the cluster starts itself keeps its
	// data in DataDir/coordinator, so that the voter record survives a
	// restart of the whole cluster. Empty: the nodes keep their state in
	// memory only.
	DataDir string
	// NoFsync, with DataDir, skips the fsync of each group commit.
	NoFsync bool
	// DirectLinks makes the nodes dial each other directly instead of
	// through the per-link fault proxies: for benchmarks, where the proxies'
	// extra copies would be measured too. Partitions and link delays then
	// act on no link. Coordinator faults (zk-down) still work.
	DirectLinks bool
	// TLS makes the nodes speak mutual TLS to each other and to clients
	// (node.Config.ServerTLS and PeerTLS), with certificates of a
	// throwaway CA that New makes in memory: one node certificate naming
	// 127.0.0.1, ::1 and localhost. CA and ClientTLS give tests the means to
	// call the nodes. False (the default): plaintext on loopback.
	TLS bool
}

// Cluster is a set of numbered nodes sharing one coordinator. Its methods
// are safe for concurrent use.
type Cluster struct {
	opts     Options
	etcd     *etcdembed.Server
	zk       *zkserver.Ensemble
	endpoint []string // the coordinator's client addresses

	links *links // node-to-node proxies

	ca      *certs.CA       // with Options.TLS
	nodeTLS tls.Certificate // every node's certificate, with Options.TLS

	mu      sync.Mutex // guards slots and lostGen
	slots   []*slot
	lostGen int // LoseCoordinatorData calls: the namespace generation
}

// slot is one node number: its fault switches survive kill and restart.
type slot struct {
	num int
	id  string
	// proxies stand between the node and the coordinator, one per
	// coordinator address; a coordinator fault acts on all of them.
	proxies []*faultproxy.Proxy

	mu      sync.Mutex // guards the fields below
	coord   coord.Coordinator
	node    *node.Node // nil while killed
	rmiDown bool
	zkDown  bool
	retired bool // left the cluster for good (Retire)
	// killedUnreconciled: whether the node's data directory kept its
	// unreconciled mark when it was last killed (node.Node.Unreconciled);
	// nil once it started again.
	killedUnreconciled *bool
	// paused is open while the node is paused (Pause): client calls
	// through the cluster wait on it.
	paused chan struct{}
}

// New starts the coordinator and opts.Nodes nodes, waiting until they serve.
// On error nothing is left running.
func New(ctx context.Context, opts Options) (_ *Cluster, err error) {
	if opts.Nodes <= 0 {
		opts.Nodes = 1
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Backend == "" && len(opts.ZooKeeper) > 0 {
		opts.Backend = ZooKeeper
	}
	if opts.Backend == "" {
		opts.Backend = Etcd
	}
	switch {
	case opts.Backend != Etcd && opts.Backend != ZooKeeper:
		return nil, fmt.Errorf("cluster: unknown coordinator backend %q (want %q or %q)", opts.Backend, Etcd, ZooKeeper)
	case len(opts.Etcd) > 0 && len(opts.ZooKeeper) > 0:
		return nil, errors.New("cluster: both etcd endpoints and ZooKeeper servers given; choose one coordinator")
	case opts.Backend == ZooKeeper && len(opts.Etcd) > 0:
		return nil, errors.New("cluster: etcd endpoints given for the ZooKeeper backend")
	}
	c := &Cluster{opts: opts}
	c.links = newLinks(c)
	if opts.TLS {
		if err := c.makeCerts(); err != nil {
			return nil, err
		}
	}
	defer func() {
		if err != nil {
			_ = c.Close()
		}
	}()
	if err := c.startCoordinator(ctx); err != nil {
		return nil, err
	}
	if opts.DataDir == "" {
		for i := 0; i < opts.Nodes; i++ {
			if _, err := c.NewNode(ctx); err != nil {
				return nil, err
			}
		}
		return c, nil
	}
	// Durable nodes may find each other's voter record from an earlier run:
	// then none serves until a majority of them is up, so start them
	// together.
	slots := make([]*slot, opts.Nodes)
	errs := make([]error, opts.Nodes)
	var wg sync.WaitGroup
	for i := range slots {
		if slots[i], err = c.addSlot(); err != nil {
			return nil, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if errs[i] = c.start(ctx, slots[i]); errs[i] == nil {
				errs[i] = c.waitVoter(ctx, slots[i])
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return c, nil
}

// startCoordinator uses the external coordinator named in the options, or
// starts one.
func (c *Cluster) startCoordinator(ctx context.Context) error {
	var err error
	switch c.opts.Backend {
	case ZooKeeper:
		c.endpoint = c.opts.ZooKeeper
		if len(c.endpoint) == 0 {
			cfg := zkserver.DefaultConfig()
			if c.opts.DataDir != "" {
				cfg.Dir = filepath.Join(c.opts.DataDir, "coordinator")
			}
			if c.zk, err = zkserver.Start(ctx, cfg); err != nil {
				return fmt.Errorf("cluster: start ZooKeeper: %w", err)
			}
			c.endpoint = c.zk.Servers()
		}
	default:
		c.endpoint = c.opts.Etcd
		if len(c.endpoint) == 0 {
			cfg := etcdembed.DefaultConfig()
			if c.opts.DataDir != "" {
				cfg.Dir = filepath.Join(c.opts.DataDir, "coordinator")
			}
			if c.etcd, err = etcdembed.Start(ctx, cfg); err != nil {
				return fmt.Errorf("cluster: start etcd: %w", err)
			}
			c.endpoint = []string{c.etcd.Endpoint()}
		}
	}
	return nil
}

// makeCerts makes the throwaway CA and the nodes' certificate.
func (c *Cluster) makeCerts() error {
	ca, err := certs.NewCA("KVStore test cluster CA")
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	kp, err := ca.Node([]string{"127.0.0.1", "::1", "localhost"})
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	if c.nodeTLS, err = kp.TLSCertificate(); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	c.ca = ca
	return nil
}

// CA is the certificate authority of a cluster with Options.TLS (nil
// without): tests issue certificates with it, their own or the nodes'.
func (c *Cluster) CA() *certs.CA { return c.ca }

// ClientTLS is a client TLS configuration for the nodes of a cluster with
// Options.TLS: a fresh client certificate with CommonName name, and the
// cluster's CA (for client.Config.TLS). Without Options.TLS it is nil, and
// clients dial in plaintext.
func (c *Cluster) ClientTLS(name string) (*tls.Config, error) {
	if c.ca == nil {
		return nil, nil
	}
	kp, err := c.ca.Client(name)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	cert, err := kp.TLSCertificate()
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	return certs.ClientConfig(cert, c.ca.Pool()), nil
}

// Backend is the coordinator kind.
func (c *Cluster) Backend() Backend { return c.opts.Backend }

// Endpoints are the coordinator's client endpoints (host:port).
func (c *Cluster) Endpoints() []string { return c.endpoint }

func (c *Cluster) nodeConfig(s *slot) node.Config {
	cfg := node.DefaultConfig()
	if c.ca != nil {
		cfg.ServerTLS = certs.ServerConfig(c.nodeTLS, c.ca.Pool())
		cfg.PeerTLS = certs.ClientConfig(c.nodeTLS, c.ca.Pool())
	}
	cfg.ID = s.id
	if c.opts.Node != nil {
		c.opts.Node(&cfg)
	}
	cfg.ID = s.id
	cfg.Logger = c.opts.Logger
	if c.opts.DataDir != "" {
		cfg.DataDir = filepath.Join(c.opts.DataDir, s.id)
		cfg.NoFsync = c.opts.NoFsync
	}
	if !c.opts.DirectLinks {
		cfg.Dial = c.links.dialer(s.id)
	}
	return cfg
}

func (c *Cluster) prefix(cfg node.Config) string {
	c.mu.Lock()
	gen := c.lostGen
	c.mu.Unlock()
	p := c.opts.Prefix
	if p == "" {
		p = "/kvstore/" + cfg.Cluster
		if c.opts.Backend != ZooKeeper {
			p += "/"
		}
	}
	if gen == 0 {
		return p
	}
	// A fresh namespace stands for a coordinator that lost its data.
	if strings.HasSuffix(p, "/") {
		return fmt.Sprintf("%slost%d/", p, gen)
	}
	return fmt.Sprintf("%s/lost%d", p, gen)
}

// LoseCoordinatorData makes the coordinator forget the cluster, as a
// coordinator rebuilt from nothing (a new etcd, a new ZooKeeper ensemble)
// would: nodes started from now on use a fresh, empty namespace, with no
// cluster record, voter record or epoch base. Every node must be stopped
// or killed first.
func (c *Cluster) LoseCoordinatorData() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.slots {
		s.mu.Lock()
		running := s.node != nil
		s.mu.Unlock()
		if running {
			return fmt.Errorf("cluster: node %d is running (stop every node before the coordinator loses its data)", s.num)
		}
	}
	c.lostGen++
	return nil
}

// dialCoordinator connects to the coordinator through the slot's proxies.
func (c *Cluster) dialCoordinator(ctx context.Context, s *slot, prefix string) (coord.Coordinator, error) {
	return c.dialCoordinatorOn(ctx, s, prefix, nil)
}

// dialCoordinatorOn is dialCoordinator with sessions that measure their
// deadlines on clk (nil: the default clock).
func (c *Cluster) dialCoordinatorOn(ctx context.Context, s *slot, prefix string, clk clock.Clock) (coord.Coordinator, error) {
	addrs := make([]string, len(s.proxies))
	for i, p := range s.proxies {
		addrs[i] = p.Addr()
	}
	if c.opts.Backend == ZooKeeper {
		return zkcoord.New(ctx, zkcoord.Config{Servers: addrs, Prefix: prefix, Clock: clk})
	}
	return etcdcoord.New(ctx, etcdcoord.Config{Endpoints: addrs, Prefix: prefix, Clock: clk})
}

// NewNode creates and starts one more node and waits until it serves and
// the leader has made it a voter. It returns the node's number.
func (c *Cluster) NewNode(ctx context.Context) (int, error) {
	s, err := c.addSlot()
	if err != nil {
		return s.num, err
	}
	if err := c.start(ctx, s); err != nil {
		return s.num, err
	}
	if err := c.waitVoter(ctx, s); err != nil {
		return s.num, err
	}
	return s.num, nil
}

// addSlot numbers one more node and makes its coordinator proxies.
func (c *Cluster) addSlot() (*slot, error) {
	c.mu.Lock()
	num := len(c.slots)
	s := &slot{num: num, id: fmt.Sprintf("n%d", num)}
	c.slots = append(c.slots, s)
	c.mu.Unlock()
	for _, ep := range c.endpoint {
		p, err := faultproxy.New(ep)
		if err != nil {
			return s, fmt.Errorf("cluster: node %d: proxy: %w", num, err)
		}
		s.proxies = append(s.proxies, p)
	}
	return s, nil
}

// start creates the slot's coordinator connection and node and starts it.
func (c *Cluster) start(ctx context.Context, s *slot) error {
	return c.startWith(ctx, s, nil)
}

// startWith is start with adjust (if not nil) applied to the configuration.
func (c *Cluster) startWith(ctx context.Context, s *slot, adjust func(*node.Config)) error {
	cfg := c.nodeConfig(s)
	if adjust != nil {
		adjust(&cfg)
	}
	co, err := c.dialCoordinatorOn(ctx, s, c.prefix(cfg), cfg.Clock)
	if err != nil {
		return fmt.Errorf("cluster: node %d: coordinator: %w", s.num, err)
	}
	cfg.Coordinator = co
	if c.opts.WrapCoordinator != nil {
		cfg.Coordinator = c.opts.WrapCoordinator(co)
	}
	n, err := node.New(cfg)
	if err != nil {
		_ = co.Close()
		return fmt.Errorf("cluster: node %d: %w", s.num, err)
	}
	s.mu.Lock()
	n.SetRPCDown(s.rmiDown)
	s.mu.Unlock()
	if err := n.Start(ctx); err != nil {
		n.Kill()
		_ = co.Close()
		return fmt.Errorf("cluster: node %d: %w", s.num, err)
	}
	s.mu.Lock()
	s.coord, s.node, s.killedUnreconciled = co, n, nil
	s.mu.Unlock()
	if err := n.WaitServing(ctx); err != nil {
		return fmt.Errorf("cluster: node %d: %w", s.num, err)
	}
	return nil
}

func (c *Cluster) waitVoter(ctx context.Context, s *slot) error {
	s.mu.Lock()
	co := s.coord
	s.mu.Unlock()
	var last error
	for {
		v, err := co.Voters(ctx)
		if err == nil && v.Contains(s.id) {
			return nil
		}
		if err != nil {
			last = err
		} else {
			last = fmt.Errorf("voters are %v", v.IDs)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster: node %d did not become a voter (%v): %w", s.num, last, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (c *Cluster) slot(n int) (*slot, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n < 0 || n >= len(c.slots) {
		return nil, fmt.Errorf("%w %d", ErrNoSuchNode, n)
	}
	return c.slots[n], nil
}

// Node returns node n, or an error if it does not exist or is killed.
func (c *Cluster) Node(n int) (*node.Node, error) {
	s, err := c.slot(n)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.retired {
		return nil, fmt.Errorf("%w: node %d", ErrRetired, n)
	}
	if s.node == nil {
		return nil, fmt.Errorf("cluster: node %d is killed", n)
	}
	return s.node, nil
}

// Size is how many node numbers exist (killed and retired ones included).
func (c *Cluster) Size() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.slots)
}

// Active lists, in order, the numbers of the nodes that belong to the
// cluster: every node but the retired ones, killed ones included.
func (c *Cluster) Active() []int {
	c.mu.Lock()
	slots := append([]*slot(nil), c.slots...)
	c.mu.Unlock()
	var out []int
	for _, s := range slots {
		s.mu.Lock()
		if !s.retired {
			out = append(out, s.num)
		}
		s.mu.Unlock()
	}
	return out
}

// Recovering reports whether node n runs and is recovering: it restarted
// without reconciled data and no leader has reconciled it yet.
func (c *Cluster) Recovering(n int) (bool, error) {
	nd, err := c.Node(n)
	if err != nil {
		return false, err
	}
	return nd.Recovering(), nil
}

// StartedRecovering reports whether running node n was recovering when it
// last started.
func (c *Cluster) StartedRecovering(n int) (bool, error) {
	nd, err := c.Node(n)
	if err != nil {
		return false, err
	}
	return nd.StartedRecovering(), nil
}

// Get reads key through node n.
func (c *Cluster) Get(ctx context.Context, n int, key string) (string, bool, error) {
	nd, err := c.serving(ctx, n)
	if err != nil {
		return "", false, err
	}
	return nd.Get(ctx, key)
}

// Put sets key through node n.
func (c *Cluster) Put(ctx context.Context, n int, key, value string) error {
	nd, err := c.serving(ctx, n)
	if err != nil {
		return err
	}
	return nd.Set(ctx, key, value)
}

// Delete removes key through node n.
func (c *Cluster) Delete(ctx context.Context, n int, key string) error {
	nd, err := c.serving(ctx, n)
	if err != nil {
		return err
	}
	return nd.Delete(ctx, key)
}

// NodeInfo describes one node for `list`.
type NodeInfo struct {
	Num   int
	ID    string
	Addr  string
	Role  string // "leader" or "follower"
	State string // "ok", "zk-down", "rmi-down", "suspended", "recovering", "stopped", "retired", ...
}

// List describes every node in number order.
func (c *Cluster) List() []NodeInfo {
	c.mu.Lock()
	slots := append([]*slot(nil), c.slots...)
	c.mu.Unlock()
	out := make([]NodeInfo, 0, len(slots))
	for _, s := range slots {
		s.mu.Lock()
		info := NodeInfo{Num: s.num, ID: s.id, Role: "follower", State: "stopped", Addr: "-"}
		if s.retired {
			info.State = "retired"
		}
		if nd := s.node; nd != nil {
			info.Addr = nd.Addr()
			if nd.IsLeader() {
				info.Role = "leader"
			}
			var states []string
			if s.zkDown {
				states = append(states, "zk-down")
			}
			if s.rmiDown {
				states = append(states, "rmi-down")
			}
			if s.paused != nil {
				states = append(states, "paused")
			}
			if st := nd.State(); nd.Removed() {
				states = append(states, "removed")
			} else if st != node.StateOK || len(states) == 0 {
				states = append(states, string(st))
			}
			if nd.Recovering() {
				states = append(states, "recovering")
			}
			info.State = join(states)
		}
		s.mu.Unlock()
		out = append(out, info)
	}
	return out
}

// Describe is the cluster's state, one line a node: what a failing test
// prints so that its failure explains itself. It names each node's role and
// state (as List), the leader and epoch it sees, the epoch it promised, the
// position of its store and whether it is recovering.
func (c *Cluster) Describe() string {
	c.mu.Lock()
	slots := append([]*slot(nil), c.slots...)
	c.mu.Unlock()
	infos := c.List()
	var b strings.Builder
	fmt.Fprintf(&b, "cluster state at %s (%s):\n", time.Now().Format("15:04:05.000"), c.opts.Backend)
	for i, info := range infos {
		fmt.Fprintf(&b, "  node %d %s %s %s %s", info.Num, info.ID, info.Addr, info.Role, info.State)
		if i >= len(slots) {
			b.WriteByte('\n')
			continue // added since slots was read
		}
		s := slots[i]
		s.mu.Lock()
		if nd := s.node; nd != nil {
			ld := nd.Leader()
			fmt.Fprintf(&b, " sees-leader=%q/%d promised=%d applied=%s", ld.ID, ld.Epoch, nd.AcceptedEpoch(), nd.Applied())
		}
		s.mu.Unlock()
		b.WriteByte('\n')
	}
	return b.String()
}

func join(ss []string) string {
	out := ""
	for i, s := range ss {
		if i > 0 {
			out += ","
		}
		out += s
	}
	return out
}

// RmiDown stops node n's inbound node-to-node RPC.
func (c *Cluster) RmiDown(n int) error { return c.setRmi(n, true) }

// RmiUp resumes node n's inbound node-to-node RPC.
func (c *Cluster) RmiUp(n int) error { return c.setRmi(n, false) }

func (c *Cluster) setRmi(n int, down bool) error {
	s, err := c.slot(n)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rmiDown = down
	if s.node != nil {
		s.node.SetRPCDown(down)
	}
	return nil
}

// ZkDown cuts node n's connection to the coordinator.
func (c *Cluster) ZkDown(n int) error { return c.setZk(n, true) }

// ZkUp restores node n's connection to the coordinator.
func (c *Cluster) ZkUp(n int) error { return c.setZk(n, false) }

// ZkStall makes node n's connection to the coordinator stop answering
// (bytes are swallowed, the connection stays open) until ZkUp: the node
// notices only when its keep-alives time out.
func (c *Cluster) ZkStall(n int) error {
	s, err := c.slot(n)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.zkDown = true
	for _, p := range s.proxies {
		p.SetBlackhole(true)
	}
	return nil
}

func (c *Cluster) setZk(n int, down bool) error {
	s, err := c.slot(n)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.zkDown = down
	for _, p := range s.proxies {
		if !down {
			p.SetBlackhole(false)
		}
		p.SetDown(down)
	}
	return nil
}

// Kill crashes node n: its memory is lost and its session expires by TTL.
func (c *Cluster) Kill(n int) error { _, err := c.kill(n, false); return err }

// PowerLoss is Kill as a power loss leaves node n's data directory: what it
// was committing when the power went is a torn group in its log
// (node.Node.PowerLoss). It returns how many submissions that group held.
func (c *Cluster) PowerLoss(n int) (torn int, err error) { return c.kill(n, true) }

func (c *Cluster) kill(n int, powerLoss bool) (torn int, err error) {
	s, err := c.slot(n)
	if err != nil {
		return 0, err
	}
	s.mu.Lock()
	nd, co, retired := s.node, s.coord, s.retired
	s.node, s.coord = nil, nil
	s.mu.Unlock()
	if retired {
		return 0, fmt.Errorf("%w: node %d", ErrRetired, n)
	}
	if nd == nil {
		return 0, fmt.Errorf("cluster: node %d is already killed", n)
	}
	if powerLoss {
		torn = nd.PowerLoss()
	} else {
		nd.Kill()
	}
	_ = co.Close()
	unrec := nd.Unreconciled() // final: its goroutines have ended
	s.mu.Lock()
	s.killedUnreconciled = &unrec
	s.mu.Unlock()
	return torn, nil
}

// UnreconciledWhenKilled reports whether node n's data directory surely
// kept its unreconciled mark when the node was killed last (Kill or
// PowerLoss): no leader, its own takeover included, had reconciled it
// since the directory was created. Call it after the kill returned and
// before the node starts again.
func (c *Cluster) UnreconciledWhenKilled(n int) (bool, error) {
	s, err := c.slot(n)
	if err != nil {
		return false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.node != nil || s.killedUnreconciled == nil {
		return false, fmt.Errorf("cluster: node %d was not killed since it last started", n)
	}
	return *s.killedUnreconciled, nil
}

// WipeData deletes killed node n's data directory, as a lost disk would:
// restarted, the node finds none and starts empty. It needs a cluster with
// Options.DataDir.
func (c *Cluster) WipeData(n int) error {
	s, err := c.slot(n)
	if err != nil {
		return err
	}
	if c.opts.DataDir == "" {
		return fmt.Errorf("cluster: wipe node %d: the cluster keeps no data directories", n)
	}
	s.mu.Lock()
	running := s.node != nil
	s.mu.Unlock()
	if running {
		return fmt.Errorf("cluster: wipe node %d: it runs (kill it first)", n)
	}
	if err := os.RemoveAll(filepath.Join(c.opts.DataDir, s.id)); err != nil {
		return fmt.Errorf("cluster: wipe node %d: %w", n, err)
	}
	return nil
}

// Retire takes node n out of the cluster for good, as an operator retires
// a machine: it is crashed if it still runs (or let go of if it stopped on
// its removal), and from then on it is not in Active, Heal does not restart
// it, WaitHealthy does not wait for it, and Node, Kill and Restart fail
// with ErrRetired. Its number is not reused: NewNode adds a node with a new
// number and id. Remove it from the voters first (Remove), or the cluster
// counts a voter that never comes back.
func (c *Cluster) Retire(n int) error {
	s, err := c.slot(n)
	if err != nil {
		return err
	}
	s.mu.Lock()
	nd, co := s.node, s.coord
	s.node, s.coord = nil, nil
	s.retired = true
	s.mu.Unlock()
	if nd != nil {
		nd.Kill()
		_ = co.Close()
	}
	return nil
}

// Stop stops node n gracefully: a leader resigns at once, so the next
// election needs no TTL to pass (a rolling restart). Restart starts it again.
func (c *Cluster) Stop(n int) error {
	s, err := c.slot(n)
	if err != nil {
		return err
	}
	s.mu.Lock()
	nd, co := s.node, s.coord
	s.node, s.coord = nil, nil
	s.mu.Unlock()
	if nd == nil {
		return fmt.Errorf("cluster: node %d is already stopped", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = nd.Close(ctx)
	_ = co.Close()
	return err
}

// Remove removes node n from the voter record (the shell's remove),
// through the first other node that runs: the leader makes the change, and
// node n, if it still runs, stops (node.Node.RemoveVoter).
func (c *Cluster) Remove(ctx context.Context, n int) error {
	target, err := c.slot(n)
	if err != nil {
		return err
	}
	for i := 0; i < c.Size(); i++ {
		if i == n {
			continue
		}
		nd, err := c.Node(i)
		if err != nil || nd.State() == node.StateStopped {
			continue
		}
		_, err = nd.RemoveVoter(ctx, target.id)
		return err
	}
	return fmt.Errorf("cluster: remove node %d: no other node runs", n)
}

// Resign makes node n hand leadership over if it leads.
func (c *Cluster) Resign(ctx context.Context, n int) error {
	nd, err := c.Node(n)
	if err != nil {
		return err
	}
	return nd.Resign(ctx)
}

// Restart starts killed node n again with the same id and waits until it
// serves: with an empty store, or with what its data directory holds when
// the cluster has one (Options.DataDir).
func (c *Cluster) Restart(ctx context.Context, n int) error {
	return c.RestartWith(ctx, n, nil)
}

// RestartWith is Restart with adjust applied to the node's configuration
// (after Options.Node) for this start only: e.g. the recovery command,
// node.Config.ForceNewCluster.
func (c *Cluster) RestartWith(ctx context.Context, n int, adjust func(*node.Config)) error {
	s, err := c.slot(n)
	if err != nil {
		return err
	}
	s.mu.Lock()
	running, removed, retired := s.node != nil, s.node != nil && s.node.Removed(), s.retired
	s.mu.Unlock()
	if retired {
		return fmt.Errorf("%w: node %d", ErrRetired, n)
	}
	if removed {
		// It stopped when removed: let go of its coordinator connection.
		if err := c.Kill(n); err != nil {
			return err
		}
	} else if running {
		return fmt.Errorf("cluster: node %d is running (kill it first)", n)
	}
	return c.startWith(ctx, s, adjust)
}

// Leader waits for a serving leader and returns its number and epoch.
func (c *Cluster) Leader(ctx context.Context) (int, int64, error) {
	for {
		c.mu.Lock()
		slots := append([]*slot(nil), c.slots...)
		c.mu.Unlock()
		for _, s := range slots {
			s.mu.Lock()
			nd := s.node
			s.mu.Unlock()
			if nd != nil && nd.IsLeader() {
				return s.num, nd.Leader().Epoch, nil
			}
		}
		select {
		case <-ctx.Done():
			return -1, 0, fmt.Errorf("cluster: no serving leader: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Close stops every node (gracefully), then the proxies and coordinator
// connections, then the embedded coordinator, removing its data.
func (c *Cluster) Close() error {
	c.mu.Lock()
	slots := c.slots
	c.slots = nil
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, s := range slots {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.mu.Lock()
			nd, co := s.node, s.coord
			s.node, s.coord = nil, nil
			s.mu.Unlock()
			if nd != nil {
				_ = nd.Close(ctx)
			}
			if co != nil {
				_ = co.Close()
			}
			for _, p := range s.proxies {
				_ = p.Close()
			}
		}()
	}
	wg.Wait()
	c.links.close()
	var errs []error
	if c.etcd != nil {
		errs = append(errs, c.etcd.Close())
	}
	if c.zk != nil {
		errs = append(errs, c.zk.Close())
	}
	return errors.Join(errs...)
}

// WaitHealthy waits until every node but the retired ones runs, serves, is not recovering, a
// leader serves, and every node has applied what the leader has.
func (c *Cluster) WaitHealthy(ctx context.Context) error {
	var last error
	for {
		last = c.healthy(ctx)
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster not healthy: %w (%v)", last, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (c *Cluster) healthy(ctx context.Context) error {
	ld, _, err := c.Leader(ctx)
	if err != nil {
		return err
	}
	lnode, err := c.Node(ld)
	if err != nil {
		return err
	}
	want := lnode.Applied()
	for _, i := range c.Active() {
		nd, err := c.Node(i)
		if err != nil {
			return err
		}
		if nd.State() != node.StateOK {
			return fmt.Errorf("node %d is %s", i, nd.State())
		}
		if nd.Recovering() {
			return fmt.Errorf("node %d is recovering", i)
		}
		if got := nd.Applied(); got != want {
			return fmt.Errorf("node %d applied %s, leader %d has %s", i, got, ld, want)
		}
	}
	return nil
}

package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"
	"unicode/utf8"

	"github.com/kvstore/kvstore/clock"
	"github.com/kvstore/kvstore/coord"
	"github.com/kvstore/kvstore/durable"
	"github.com/kvstore/kvstore/rpc"
)

// Config configures a Node. Start from DefaultConfig and set ID and
// Coordinator; Validate names the first bad field.
type Config struct {
	// ID names the node in the cluster; it must be stable across restarts.
	ID string
	// Cluster is the cluster name every node-to-node message carries; a node
	// refuses messages for another cluster.
	Cluster string
	// ListenAddr is where the node-to-node gRPC service listens
	// (default "127.0.0.1:0": a free loopback port).
	ListenAddr string
	// AdvertiseAddr is the address other nodes dial; empty means the
	// listener's address.
	AdvertiseAddr string
	// Coordinator is the coordination service. The node does not own it:
	// the caller closes it after the node has stopped.
	Coordinator coord.Coordinator
	// DataDir, if set, is where the node keeps a durable copy of its
	// replicated state (created if missing). A node restarted with it
	// rejoins with its state and counts toward majorities at once; without
	// it (the default) the state lives in memory only, and a voter that
	// restarts rejoins as recovering.
	DataDir string
	// NoFsync, with DataDir, skips the fsync of each group commit: faster,
	// but a machine crash (not a process crash) may lose acknowledged
	// writes. For benchmarks.
	NoFsync bool

	// SessionTTL is the coordinator session TTL (default 2s, at least 1s).
	SessionTTL time.Duration
	// LeaseDuration is how long a cached copy may be read after its fetch
	// was sent (default 2s).
	LeaseDuration time.Duration
	// ClockDrift bounds the relative clock rate difference between any two
	// nodes (default 0.05, i.e. 5%). The leader keeps a lease for
	// LeaseDuration*(1+ClockDrift) after granting it; a follower trusts it for
	// LeaseDuration after sending its request. Leases are safe only while
	// clock rates really differ by less than this.
	ClockDrift float64
	// OpTimeout bounds an operation with no deadline of its own, including
	// the wait for a leader during an election (default 15s).
	OpTimeout time.Duration
	// QuorumTimeout is how long a write waits for a majority before it fails
	// with ErrNoQuorum (outcome unknown) (default 5s).
	QuorumTimeout time.Duration
	// RPCTimeout bounds one node-to-node call (default 1s).
	RPCTimeout time.Duration
	// Heartbeat is how often the leader contacts an idle follower
	// (default 200ms).
	Heartbeat time.Duration
	// MaxBatch is the most entries the leader sends in one Append
	// (default 1024).
	MaxBatch int
	// MaxBatchBytes bounds the keys, values and request ids of the entries
	// in one Append, in bytes (default 4 MiB, at most rpc.MaxMsgSize/2); an
	// entry larger than that travels alone. With MaxBatch it keeps every Append under
	// rpc.MaxMsgSize, so that a follower far behind catches up.
	MaxBatchBytes int
	// AppendsInFlight is how many Appends carrying entries the leader keeps
	// in flight to one follower once it took one (0: the default,
	// DefaultAppendsInFlight; 1: one at a time), besides one that waits for
	// the follower's disk (docs/design.md, Replication: Pipelining).
	AppendsInFlight int
	// MaxLog is how many entries the leader keeps for followers that lag;
	// a follower further behind gets a snapshot (default 100000).
	MaxLog int
	// SnapshotChunkBytes bounds the keys and values of the items in one
	// snapshot chunk, in bytes (default 1 MiB, at most rpc.MaxMsgSize/2);
	// an item larger than that travels alone. A snapshot travels in
	// chunks, one in flight per follower (docs/design.md, Snapshots).
	SnapshotChunkBytes int
	// MaxRequests is how many request ids the store remembers to apply a
	// retried write once (default 65536).
	MaxRequests int

	// MaxKeySize is the longest key, in bytes, a client may read or write
	// (default 4 KiB, at most durable.MaxKeyLen).
	MaxKeySize int
	// MaxValueSize is the longest value, in bytes, a client may write
	// (default 1 MiB).
	MaxValueSize int
	// MaxRequestSize bounds one client API request as encoded on the wire,
	// in bytes (default 1.5 MiB). Node-to-node messages are bounded by
	// rpc.MaxMsgSize (16 MiB) instead, which also bounds what a client
	// request may cost before this limit is checked.
	MaxRequestSize int
	// MaxClientRequests is how many client API requests one client
	// connection may have in flight at this node; more fail at once with
	// ErrBusy (default 1024).
	MaxClientRequests int

	// Dial, if set, makes every outbound node-to-node connection; the test
	// cluster routes them through fault-injecting proxies.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// Transport, if set, carries the node's outbound node-to-node calls
	// instead of gRPC connections (Dial and PeerTLS are then unused): an
	// in-memory network in simulations (rpc/memtransport). The node
	// closes it on Close or Kill, so give each New its own.
	Transport Transport
	// NoListen, with Transport, runs the node without a TCP listener: its
	// node-to-node service is reached only through PeerService (an
	// in-memory transport), its client service only through its methods,
	// and AdvertiseAddr is the address other nodes' transports know it by.
	NoListen bool

	// ServerTLS, if set, makes the node's gRPC server (the node-to-node and
	// the client service, on one port) mutual TLS: its ClientAuth must be
	// tls.RequireAndVerifyClientCert (certs.ServerConfig), so that every
	// caller shows a certificate of the cluster's CA. The node-to-node
	// service then serves only callers whose certificate's CommonName is
	// certs.NodeName ("node"); others get PermissionDenied. nil: plaintext.
	ServerTLS *tls.Config
	// PeerTLS, if set, makes the node's outbound node-to-node connections
	// TLS (also through Dial): the node's certificate (CommonName "node")
	// and the CA it trusts (certs.ClientConfig). Leave its ServerName empty:
	// each connection checks that the peer's certificate names the host of
	// the peer's advertised address. Set with ServerTLS, or neither.
	PeerTLS *tls.Config

	// Logger receives structured logs (default: discard).
	Logger *slog.Logger
	// Clock is the clock leases and deadlines are measured on (default
	// clock.System(): CLOCK_BOOTTIME on Linux, which counts the time the
	// machine spends suspended, so that a lease or a session deadline
	// measured before a suspend has passed on resume). It must be the
	// clock Coordinator measures session deadlines on (its backend's
	// Config.Clock; both default to clock.System()).
	Clock clock.Clock
	// ForceNewCluster, set to this node's ID (the repetition is the
	// confirmation: any other non-empty value is refused), is the
	// disaster-recovery command, like etcd's --force-new-cluster: Start
	// writes a voter record naming only this node and raises the
	// coordinator's epoch base above every epoch this node has promised,
	// then starts normally; the other surviving nodes then start normally
	// and are reconciled to this node's state. Run it only on the most
	// up-to-date survivor, when the coordinator lost its data or a
	// majority of the voters is gone for good: writes acknowledged only by
	// the nodes that are gone are lost. Start refuses it while a majority
	// of the recorded voters (this node included) is alive.
	ForceNewCluster string
	// Faults break the protocol on purpose, for tests that prove the
	// checker catches the breakage. Never set in production: a build with
	// -tags nofaults (release binaries) drops them, and Validate refuses
	// a Config that sets them there.
	Faults Faults
}

// Faults are deliberate protocol bugs, switched on only by tests that show
// the linearizability checker notices them.
type Faults struct {
	// SkipInvalidation acknowledges each write without waiting for one of
	// the holders of a live cached copy to drop it.
	SkipInvalidation bool
	// IgnoreLease lets a follower serve a cached copy after its lease and
	// session have expired.
	IgnoreLease bool
	// SkipTakeoverWait lets a new leader serve before leases granted under
	// older epochs have expired.
	SkipTakeoverWait bool
	// LiveMajority counts a majority of reachable nodes instead of voters.
	LiveMajority bool
	// SkipReadGate lets the leader hand out a key's value once its write is
	// committed, without waiting until no older cached copy is readable.
	SkipReadGate bool
	// StalePrior answers reads of a key from the value it had before its
	// first write in flight, for good: the record of the latest visible
	// value (prior.go) never moves on.
	StalePrior bool
	// RenewWithoutHolding renews a follower's cached copies (Renew)
	// without recording it as their holder: the next write of such a key
	// is acknowledged without waiting for the follower to drop its copy.
	RenewWithoutHolding bool
	// SkipDurableWait acknowledges entries (a follower's Append of
	// entries, the leader's own count of its entries) before they are on
	// disk. Snapshots, promises and reconcile records are still waited for.
	SkipDurableWait bool
	// RotateForwardAnswers hands the answers of each message of a Forward
	// stream with several in it to the wrong writes (forward.go): a
	// write is acknowledged with another's answer, possibly before it
	// is visible.
	RotateForwardAnswers bool
	// IgnoreLeave makes a removed node refuse the leader's word to leave
	// (as a node the word cannot reach would), so that only the leader
	// keeps it out of the voter record.
	IgnoreLeave bool
	// BootstrapWithData lets a node whose data directory holds data
	// bootstrap a new voter record when the coordinator has none (a
	// rebuilt coordinator): the node then leads with its possibly stale
	// state and the others are reconciled to it.
	BootstrapWithData bool
	// ForgetUnreconciled ignores the durable unreconciled mark: a node
	// restarted with a data directory no leader reconciled since it was
	// created (a lost disk, restarted a second time) counts as restored
	// and as reconciled.
	ForgetUnreconciled bool
	// SkipIncarnationCheck lets a node whose data directory belongs to
	// another cluster incarnation than the coordinator's (a rebuilt
	// coordinator, another cluster) start anyway, and records the
	// coordinator's: the fence of ErrOtherIncarnation switched off.
	SkipIncarnationCheck bool
	// AcceptOtherIncarnation makes a node act on node-to-node messages
	// of another cluster incarnation (a node of another cluster with the
	// same name at an address this cluster still knows): the message
	// fence of Cluster identity and incarnation switched off.
	AcceptOtherIncarnation bool
	// IgnoreAddressee makes a node act on Prepare, Append, GetSnapshot,
	// snapshot chunks and probes meant for another node id (sent to an
	// address the sender still knows for that node): its answer then
	// counts as that node's too.
	IgnoreAddressee bool
	// IgnoreVoterSeal makes Start read every voter record as sealed
	// (coord.Voters.Unsealed ignored): a voter that restarts without its
	// data is recovering even when no leader ever served, so a new
	// in-memory cluster whose bootstrap lost its answer can never elect.
	IgnoreVoterSeal bool
	// SkipVoterSeal lets the first leader serve without sealing the voter
	// record: a voter that lost its data after writes were acknowledged
	// then counts as one that never held any.
	SkipVoterSeal bool
	// KeepForwardsOnLeaderChange lets a call in flight to the leader (a
	// forwarded write, a fetch) wait for its answer or its deadline even
	// after this node sees a newer leader: a paused old leader then holds
	// it to its deadline instead of its being retried at the new one.
	KeepForwardsOnLeaderChange bool
	// SuspendOnUnhealthy suspends the node the moment a keep-alive fails
	// or the coordinator connection drops (coord.Session.Healthy false),
	// before the session deadline is in doubt: every blip then ends
	// leadership and drops the cache.
	SuspendOnUnhealthy bool
	// WaitForGoneVoters makes a takeover wait out older leases whenever a
	// voter did not answer Prepare, even one with no live session (absent
	// from the view that shows the new leader): the older, slower rule,
	// which adds a lease to every failover after a crash.
	WaitForGoneVoters bool
	// NoCheckQuorum lets a leader that hears from no majority of the
	// voters lead on for 2 x QuorumTimeout instead of one quorum window
	// (about one lease) before it steps down.
	NoCheckQuorum bool
	// KeepSessionOnStepDown keeps the coordinator session of a leader
	// that stepped down for want of a majority (CheckQuorum): it stays a
	// member, so its successor waits for its answer to Prepare and, as it
	// cannot answer, out a whole lease.
	KeepSessionOnStepDown bool
	// NoPreVote lets a node stand for election, and stay a candidate,
	// while no majority of the voters answers it.
	NoPreVote bool
	// SlowDisk is not a bug but a slow disk: each group commit of the data
	// directory waits this long first (durable.Options.CommitDelay), so that
	// entries spend time between submission and disk.
	SlowDisk time.Duration
	// CountEarlyAnswers makes the leader count an early answer's received
	// position (entries a follower applied, maybe not yet on disk) toward
	// the commit, as if it were on disk.
	CountEarlyAnswers bool
	// NoEarlyAnswers is not a bug but the older replication: the leader
	// does not ask followers to answer entries before they are on disk,
	// so a write waits for the disk of every holder of its key.
	NoEarlyAnswers bool
}

// slowDisk is Faults.SlowDisk, or 0 in a build without faults.
func (c *Config) slowDisk() time.Duration {
	if !faultsOn {
		return 0
	}
	return c.Faults.SlowDisk
}

// Default limits (Config.MaxKeySize and the fields after it). Values are
// bounded like etcd's (1.5 MiB requests) and ZooKeeper's (1 MiB znodes).
const (
	DefaultMaxKeySize        = 4 << 10
	DefaultMaxValueSize      = 1 << 20
	DefaultMaxRequestSize    = 3 << 19 // 1.5 MiB
	DefaultMaxClientRequests = 1024

	// DefaultMaxBatchBytes is Config.MaxBatchBytes's default.
	DefaultMaxBatchBytes = 4 << 20
	// DefaultSnapshotChunkBytes is Config.SnapshotChunkBytes's default.
	DefaultSnapshotChunkBytes = 1 << 20
)

// entryOverhead bounds what an entry costs on the wire besides its key,
// value and request id (at most maxReqIDLen bytes).
const entryOverhead = maxReqIDLen + 64

// DefaultConfig returns a Config with every default filled in except ID and
// Coordinator.
func DefaultConfig() Config {
	return Config{
		Cluster:         "default",
		ListenAddr:      "127.0.0.1:0",
		SessionTTL:      2 * time.Second,
		LeaseDuration:   2 * time.Second,
		ClockDrift:      0.05,
		OpTimeout:       15 * time.Second,
		QuorumTimeout:   5 * time.Second,
		RPCTimeout:      time.Second,
		Heartbeat:       200 * time.Millisecond,
		MaxBatch:        1024,
		MaxBatchBytes:   DefaultMaxBatchBytes,
		MaxLog:          100000,
		AppendsInFlight: DefaultAppendsInFlight,
		MaxRequests:     65536,

		SnapshotChunkBytes: DefaultSnapshotChunkBytes,

		MaxKeySize:        DefaultMaxKeySize,
		MaxValueSize:      DefaultMaxValueSize,
		MaxRequestSize:    DefaultMaxRequestSize,
		MaxClientRequests: DefaultMaxClientRequests,
	}
}

// MaxIDLen is the longest node ID: with the nodes' request-id prefix, a
// random incarnation and a counter, the ids of a node's own writes stay
// within the request-id limit.
const MaxIDLen = 256

// Validate checks c and names the first bad field.
func (c Config) Validate() error {
	switch {
	case c.ID == "":
		return errors.New("node: config: ID is empty")
	case len(c.ID) > MaxIDLen || !utf8.ValidString(c.ID):
		return fmt.Errorf("node: config: ID must be valid UTF-8 of at most %d bytes (it names the node's own writes' request ids, of at most %d)", MaxIDLen, maxReqIDLen)
	case c.Cluster == "":
		return errors.New("node: config: Cluster is empty")
	case c.Coordinator == nil:
		return errors.New("node: config: Coordinator is nil")
	case c.ListenAddr == "" && !c.NoListen:
		return errors.New("node: config: ListenAddr is empty")
	case c.NoListen && (c.Transport == nil || c.AdvertiseAddr == ""):
		return errors.New("node: config: NoListen needs a Transport and an AdvertiseAddr (the address its peers know it by)")
	case (c.ServerTLS == nil) != (c.PeerTLS == nil):
		return errors.New("node: config: ServerTLS and PeerTLS must be set together (mutual TLS) or not at all")
	case c.ServerTLS != nil && c.ServerTLS.ClientAuth != tls.RequireAndVerifyClientCert:
		return fmt.Errorf("node: config: ServerTLS.ClientAuth is %v, want tls.RequireAndVerifyClientCert", c.ServerTLS.ClientAuth)
	case c.ServerTLS != nil && c.ServerTLS.ClientCAs == nil:
		return errors.New("node: config: ServerTLS.ClientCAs is nil (the system's roots would sign nodes): set the cluster's CA")
	case c.PeerTLS != nil && (c.PeerTLS.InsecureSkipVerify || c.PeerTLS.RootCAs == nil || c.PeerTLS.ServerName != ""):
		return errors.New("node: config: PeerTLS must verify peers against the cluster's CA (RootCAs set, no InsecureSkipVerify) by the host each dials (ServerName empty)")
	case c.SessionTTL < time.Second:
		return fmt.Errorf("node: config: SessionTTL %v is under 1s", c.SessionTTL)
	case c.LeaseDuration <= 0:
		return fmt.Errorf("node: config: LeaseDuration %v must be positive", c.LeaseDuration)
	case c.ClockDrift < 0 || c.ClockDrift >= 1:
		return fmt.Errorf("node: config: ClockDrift %v must be in [0, 1)", c.ClockDrift)
	case c.OpTimeout <= 0:
		return fmt.Errorf("node: config: OpTimeout %v must be positive", c.OpTimeout)
	case c.QuorumTimeout <= 0:
		return fmt.Errorf("node: config: QuorumTimeout %v must be positive", c.QuorumTimeout)
	case c.RPCTimeout <= 0:
		return fmt.Errorf("node: config: RPCTimeout %v must be positive", c.RPCTimeout)
	case c.Heartbeat <= 0 || c.Heartbeat >= c.SessionTTL:
		return fmt.Errorf("node: config: Heartbeat %v must be positive and under SessionTTL", c.Heartbeat)
	case c.MaxBatch <= 0:
		return fmt.Errorf("node: config: MaxBatch %d must be positive", c.MaxBatch)
	case c.MaxBatchBytes <= 0 || c.MaxBatchBytes > rpc.MaxMsgSize/2:
		return fmt.Errorf("node: config: MaxBatchBytes %d must be in [1, %d]", c.MaxBatchBytes, rpc.MaxMsgSize/2)
	case c.AppendsInFlight < 0:
		return fmt.Errorf("node: config: AppendsInFlight %d must not be negative", c.AppendsInFlight)
	case c.MaxLog <= 0:
		return fmt.Errorf("node: config: MaxLog %d must be positive", c.MaxLog)
	case c.SnapshotChunkBytes <= 0 || c.SnapshotChunkBytes > rpc.MaxMsgSize/2:
		return fmt.Errorf("node: config: SnapshotChunkBytes %d must be in [1, %d]", c.SnapshotChunkBytes, rpc.MaxMsgSize/2)
	case c.MaxKeySize <= 0 || c.MaxKeySize > durable.MaxKeyLen:
		return fmt.Errorf("node: config: MaxKeySize %d must be in [1, %d] (the longest key any node stores)", c.MaxKeySize, durable.MaxKeyLen)
	case c.MaxValueSize < 0:
		return fmt.Errorf("node: config: MaxValueSize %d must not be negative", c.MaxValueSize)
	case c.MaxRequestSize <= c.MaxKeySize:
		return fmt.Errorf("node: config: MaxRequestSize %d must exceed MaxKeySize %d", c.MaxRequestSize, c.MaxKeySize)
	case c.MaxKeySize+c.MaxValueSize+entryOverhead > rpc.MaxMsgSize/2:
		return fmt.Errorf("node: config: MaxKeySize %d + MaxValueSize %d must stay under %d (one entry must fit in a node-to-node message)", c.MaxKeySize, c.MaxValueSize, rpc.MaxMsgSize/2-entryOverhead)
	case c.MaxRequests <= 0:
		return fmt.Errorf("node: config: MaxRequests %d must be positive", c.MaxRequests)
	case c.ForceNewCluster != "" && c.ForceNewCluster != c.ID:
		return fmt.Errorf("node: config: ForceNewCluster %q must repeat the node's ID %q (the confirmation)", c.ForceNewCluster, c.ID)
	case c.ForceNewCluster != "" && c.DataDir == "":
		return errors.New("node: config: ForceNewCluster needs DataDir: it restarts the cluster from this node's data")
	case c.MaxClientRequests <= 0:
		return fmt.Errorf("node: config: MaxClientRequests %d must be positive", c.MaxClientRequests)
	case !faultsOn && c.Faults != (Faults{}):
		return errors.New("node: config: Faults are set, but this binary was built without them (-tags nofaults)")
	}
	return nil
}

// Settings are the config's values that must be the same on every node of
// the cluster (coord.Settings): the first node records them, the others
// must match.
func (c Config) Settings() coord.Settings {
	return coord.Settings{LeaseDuration: c.LeaseDuration, ClockDrift: c.ClockDrift, MaxRequests: c.MaxRequests, MaxLease: c.LeaseDuration}
}

// checkSettings compares the config with the cluster's settings record and
// names the first field that differs, with its command-line flag, both
// values and how to change a setting. The error matches
// coord.ErrSettingsMismatch.
func (c Config) checkSettings(rec coord.Settings) error {
	const how = "every node must run with the cluster's recorded value: start this node with it, or change the setting for the whole cluster with `kvstore cluster settings set` (docs/operations.md: Change a timing setting)"
	switch {
	case c.LeaseDuration != rec.LeaseDuration:
		return fmt.Errorf("%w: LeaseDuration (--lease) is %v here, %v in the cluster's record; %s", coord.ErrSettingsMismatch, c.LeaseDuration, rec.LeaseDuration, how)
	case c.ClockDrift != rec.ClockDrift:
		return fmt.Errorf("%w: ClockDrift (--clock-drift) is %v here, %v in the cluster's record; %s", coord.ErrSettingsMismatch, c.ClockDrift, rec.ClockDrift, how)
	case c.MaxRequests != rec.MaxRequests:
		return fmt.Errorf("%w: MaxRequests (--max-requests) is %d here, %d in the cluster's record; %s", coord.ErrSettingsMismatch, c.MaxRequests, rec.MaxRequests, how)
	}
	return nil
}

// takeoverWait is how long after its election a new leader waits before it
// serves when not every voter answered its Prepare: the longest lease any
// node may have granted under an older epoch (its own, or rec.MaxLease while
// a change of the lease is rolled out), counted with the larger drift
// margin.
func (c Config) takeoverWait(rec coord.Settings) time.Duration {
	return time.Duration(float64(max(c.LeaseDuration, rec.MaxLease)) * (1 + max(c.ClockDrift, rec.ClockDrift)))
}

// quorumWindow is how long a leader may go without hearing from a
// majority of the voters before it steps down (CheckQuorum), and how
// recent a probe's answer must be for a candidate to count it (pre-vote):
// one lease, but at least an RPC timeout and two heartbeats, so that a
// slow answer is not taken for a lost one.
func (c Config) quorumWindow() time.Duration {
	return max(c.LeaseDuration, c.RPCTimeout+2*c.Heartbeat)
}

// leaderLease is how long the leader counts a lease it grants now.
func (c Config) leaderLease() time.Duration {
	return time.Duration(float64(c.LeaseDuration) * (1 + c.ClockDrift))
}

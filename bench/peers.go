package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/kvstore/kvstore/zkserver"
)

// PeerOptions configures the peer systems NewPeers starts.
type PeerOptions struct {
	// Members is the size of each peer cluster: etcd members, ZooKeeper
	// servers. 0 means 3.
	Members int
	// Fsync makes the peers fsync before acknowledging a write (the default
	// of both etcd and ZooKeeper). False starts etcd with --unsafe-no-fsync
	// and ZooKeeper with forceSync=no.
	Fsync bool
	// Conns is the number of client connections each peer system's targets
	// share; benchmark client i uses connection i % Conns, and connection j
	// talks to member j % Members. 0 means the system's default: one per
	// member for etcd (gRPC multiplexes the concurrent requests of many
	// clients on each), 8 for ZooKeeper (whose sessions are pipelined but
	// served in order).
	Conns int
	// Binary, if set, is a kvstore executable: etcd's members then run as
	// processes of their own (`kvstore coordinator`, always with fsync),
	// so that their memory can be measured (NodeRSS). Empty: in this
	// process.
	Binary string
}

// members returns the cluster size, defaulted.
func (o PeerOptions) members() int {
	if o.Members <= 0 {
		return 3
	}
	return o.Members
}

// conns returns the connection count, defaulted to dflt.
func (o PeerOptions) conns(dflt int) int {
	if o.Conns <= 0 {
		return dflt
	}
	return o.Conns
}

// ErrPeerUnavailable is wrapped by NewPeers's error when a peer system is not
// installed here: ZooKeeper without Debian's zookeeper package (the error
// says what to install). Callers may skip that peer and go on.
var ErrPeerUnavailable = errors.New("peer unavailable")

// PeerNames are the names NewPeers accepts.
var PeerNames = []string{"etcd", "zookeeper"}

// NewPeers starts the named peer systems and returns their targets:
//
//   - "etcd": an in-process etcd cluster of opts.Members members on loopback
//     (package etcdembed), driven through clientv3, as two targets sharing
//     it: "etcd (linearizable)" (Get's default, a quorum read) and
//     "etcd (serializable)" (WithSerializable, answered by the member the
//     client talks to).
//   - "zookeeper": an ensemble of opts.Members servers from Debian's
//     zookeeper package (package zkserver), driven through go-zookeeper, as
//     two targets sharing it: "zookeeper" (Get, answered by the server the
//     session is connected to: ZooKeeper's sequential consistency) and
//     "zookeeper (sync+get)" (Sync, then Get). Where ZooKeeper is not
//     installed, NewPeers fails at once, with an error that wraps
//     ErrPeerUnavailable and names the Debian package (zkserver.Available's).
//
// Closing the last target of a system stops it. On error, whatever NewPeers
// started is stopped again.
func NewPeers(ctx context.Context, names []string, opts PeerOptions) ([]Target, error) {
	for _, name := range names {
		switch name {
		case "etcd":
		case "zookeeper":
			// Before anything starts, so that a missing ZooKeeper costs
			// no etcd start.
			if err := zkserver.Available(); err != nil {
				return nil, fmt.Errorf("bench: start %s: %w: %w", name, ErrPeerUnavailable, err)
			}
		default:
			return nil, fmt.Errorf("bench: unknown peer %q (want one of %q)", name, PeerNames)
		}
	}
	var targets []Target
	for _, name := range names {
		var ts []Target
		var err error
		switch name {
		case "etcd":
			ts, err = newEtcdTargets(ctx, opts)
		case "zookeeper":
			ts, err = newZooKeeperTargets(ctx, opts)
		}
		if err != nil {
			for _, t := range targets {
				_ = t.Close()
			}
			return nil, fmt.Errorf("bench: start %s: %w", name, err)
		}
		targets = append(targets, ts...)
	}
	return targets, nil
}

// shared stops a peer system once every target using it was closed.
type shared struct {
	mu   sync.Mutex
	refs int
	stop func() error
}

// release drops one reference; the last one stops the system and returns
// stop's error.
func (s *shared) release() error {
	s.mu.Lock()
	s.refs--
	last := s.refs == 0
	s.mu.Unlock()
	if last {
		return s.stop()
	}
	return nil
}

// closeOnce makes a target's Close idempotent: the first call releases its
// reference to the shared system, later calls return the first's result.
type closeOnce struct {
	once sync.Once
	err  error
}

func (c *closeOnce) close(s *shared) error {
	c.once.Do(func() { c.err = s.release() })
	return c.err
}

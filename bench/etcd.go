package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/kvstore/kvstore/etcdembed"
)

const (
	// etcdHeartbeat and etcdElection are etcd's default raft timing
	// (--heartbeat-interval 100, --election-timeout 1000), not etcdembed's
	// shorter test timing: the peers run as shipped.
	etcdHeartbeat = 100 * time.Millisecond
	etcdElection  = time.Second
	// etcdStartAttempts bounds the retries when a picked port was taken
	// before etcd bound it.
	etcdStartAttempts = 5
)

// etcdCluster is an in-process etcd cluster and the client connections the
// etcd targets share.
type etcdCluster struct {
	members    []etcdMember
	clients    []*clientv3.Client // client i talks to member i % len(members)
	durability string
}

// newEtcdTargets starts an etcd cluster and returns its two targets:
// linearizable and serializable reads.
func newEtcdTargets(ctx context.Context, opts PeerOptions) ([]Target, error) {
	c, err := startEtcdCluster(ctx, opts)
	if err != nil {
		return nil, err
	}
	sh := &shared{refs: 2, stop: c.close}
	return []Target{
		&etcdTarget{name: "etcd (linearizable)", c: c, sh: sh},
		&etcdTarget{name: "etcd (serializable)", c: c, sh: sh, getOpts: []clientv3.OpOption{clientv3.WithSerializable()}},
	}, nil
}

// startEtcdCluster starts opts.Members members on free loopback ports, all at
// once (each waits for a quorum), and connects the client pool.
func startEtcdCluster(ctx context.Context, opts PeerOptions) (*etcdCluster, error) {
	n := opts.members()
	var members []etcdMember
	var err error
	for attempt := 1; attempt <= etcdStartAttempts; attempt++ {
		if opts.Binary != "" {
			members, err = startEtcdProcessesOnce(ctx, n, opts.Binary)
		} else {
			members, err = startEtcdMembersOnce(ctx, n, !opts.Fsync)
		}
		if err == nil || !isPortTaken(err) || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	c := &etcdCluster{members: members, durability: fmt.Sprintf("fsync, %d members", n)}
	if !opts.Fsync {
		c.durability = fmt.Sprintf("no fsync, %d members", n)
	}
	for i := range opts.conns(n) {
		dialCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		cli, err := clientv3.New(clientv3.Config{
			Endpoints:   members[i%n].ClientURLs(),
			DialTimeout: 10 * time.Second,
			Logger:      zap.NewNop(),
		})
		if err == nil {
			// Wait until the connection works, so that the first measured
			// requests do not pay for it.
			_, err = cli.Get(dialCtx, "bench-ready", clientv3.WithSerializable())
			if err != nil {
				_ = cli.Close()
			}
		}
		cancel()
		if err != nil {
			_ = c.close()
			return nil, fmt.Errorf("etcd client %d: %w", i, err)
		}
		c.clients = append(c.clients, cli)
	}
	return c, nil
}

// startEtcdMembersOnce makes one attempt to start an n-member cluster on
// freshly picked ports. A member that fails ends the attempt at once, so
// that the others do not wait for it until ctx ends.
func startEtcdMembersOnce(ctx context.Context, n int, noFsync bool) ([]etcdMember, error) {
	ports, err := pickLoopbackPorts(2 * n)
	if err != nil {
		return nil, fmt.Errorf("pick ports: %w", err)
	}
	token := fmt.Sprintf("kvstore-bench-%d", time.Now().UnixNano())
	cfgs := make([]etcdembed.MemberConfig, n)
	initial := make([]string, n)
	for i := range cfgs {
		cfg := etcdembed.DefaultMemberConfig()
		cfg.Name = fmt.Sprintf("bench%d", i)
		cfg.HeartbeatInterval = etcdHeartbeat
		cfg.ElectionTimeout = etcdElection
		cfg.ListenClientURLs = []url.URL{{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[2*i])}}
		cfg.ListenPeerURLs = []url.URL{{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[2*i+1])}}
		cfg.ClusterToken = token
		cfg.UnsafeNoFsync = noFsync
		initial[i] = cfg.Name + "=" + cfg.ListenPeerURLs[0].String()
		cfgs[i] = cfg
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	members := make([]*etcdembed.Server, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range cfgs {
		cfgs[i].InitialCluster = strings.Join(initial, ",")
		wg.Go(func() {
			if members[i], errs[i] = etcdembed.StartMember(ctx, cfgs[i]); errs[i] != nil {
				cancel()
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, m := range members {
			if m != nil {
				_ = m.Close()
			}
		}
		// Prefer the port error to the cancellations it caused.
		for _, e := range errs {
			if e != nil && isPortTaken(e) {
				return nil, e
			}
		}
		return nil, err
	}
	out := make([]etcdMember, n)
	for i, m := range members {
		out[i] = m
	}
	return out, nil
}

// close closes the clients, then the members: the followers first, so that
// the leader, closed last, finds no running peer to hand its leadership to
// and does not wait for a transfer to a member that is stopping.
func (c *etcdCluster) close() error {
	var errs []error
	leader := -1
	if len(c.clients) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		for i, m := range c.members {
			st, err := c.clients[0].Status(ctx, m.ClientURL())
			if err == nil && st.Header != nil && st.Leader == st.Header.MemberId {
				leader = i
				break
			}
		}
		cancel()
	}
	for _, cli := range c.clients {
		if err := cli.Close(); err != nil && !errors.Is(err, context.Canceled) {
			errs = append(errs, err)
		}
	}
	c.clients = nil
	// Each member's Close takes about a second (etcd gives its peer
	// connections that long to drain), so the followers close together.
	var mu sync.Mutex
	closeMember := func(m etcdMember) {
		if err := m.Close(); err != nil {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		}
	}
	var wg sync.WaitGroup
	for i, m := range c.members {
		if i != leader {
			wg.Go(func() { closeMember(m) })
		}
	}
	wg.Wait()
	if leader >= 0 {
		closeMember(c.members[leader])
	}
	return errors.Join(errs...)
}

// etcdTarget drives the shared cluster through clientv3; getOpts selects
// the read consistency.
type etcdTarget struct {
	name    string
	c       *etcdCluster
	sh      *shared
	getOpts []clientv3.OpOption
	closer  closeOnce
}

func (t *etcdTarget) Name() string       { return t.name }
func (t *etcdTarget) Durability() string { return t.c.durability }

func (t *etcdTarget) client(client int) *clientv3.Client {
	return t.c.clients[pick(client, len(t.c.clients))]
}

func (t *etcdTarget) Get(ctx context.Context, client int, key string) error {
	_, err := t.client(client).Get(ctx, key, t.getOpts...)
	return err
}

func (t *etcdTarget) Put(ctx context.Context, client int, key string, value []byte) error {
	_, err := t.client(client).Put(ctx, key, string(value))
	return err
}

// Close releases the target; closing the last etcd target stops the cluster.
func (t *etcdTarget) Close() error { return t.closer.close(t.sh) }

// pick maps a client number to one of n connections.
func pick(client, n int) int {
	i := client % n
	if i < 0 {
		i += n
	}
	return i
}

// pickLoopbackPorts returns n distinct loopback TCP ports that were free a
// moment ago; someone else may take one before the peer binds it.
func pickLoopbackPorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		// Keep it open until all are picked so the n ports differ.
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// isPortTaken reports whether err says a port was taken. etcd does not
// always keep the error chain, so the message is checked too.
func isPortTaken(err error) bool {
	return errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use")
}

// Servers is the number of members: client i talks to member i % Servers
// (with the default one connection per member).
func (t *etcdTarget) Servers() int { return len(t.c.members) }

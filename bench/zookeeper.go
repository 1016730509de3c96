package bench

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/kvstore/kvstore/zkserver"
)

const (
	// zkRoot is the znode under which the benchmark keys live: key k is
	// zkRoot + "/" + k (escaped, see zkPath).
	zkRoot = "/bench"
	// zkSessionTimeout is the session timeout the clients ask for: ten
	// ticks of ZooKeeper's default 2 s tick (zkTickTime), generous enough
	// that a loaded machine does not expire sessions mid-run.
	zkSessionTimeout = 20 * time.Second
	// zkTickTime is ZooKeeper's default tickTime (zoo_sample.cfg): the peers
	// run as shipped, not with zkserver's short test tick.
	zkTickTime = 2 * time.Second
	// zkDefaultConns is the default size of the connection pool.
	zkDefaultConns = 8
)

// zkACL gives every znode the benchmark creates full access for everyone.
var zkACL = zk.WorldACL(zk.PermAll)

// zkEnsemble is a ZooKeeper ensemble and the sessions the ZooKeeper targets
// share.
type zkEnsemble struct {
	ens        *zkserver.Ensemble
	conns      []*zk.Conn // connection i talks to server i % ensemble size
	events     []<-chan zk.Event
	durability string
}

// newZooKeeperTargets starts a ZooKeeper ensemble and returns its two
// targets: plain reads and sync+read.
func newZooKeeperTargets(ctx context.Context, opts PeerOptions) ([]Target, error) {
	z, err := startZKEnsemble(ctx, opts)
	if err != nil {
		return nil, err
	}
	sh := &shared{refs: 2, stop: z.close}
	return []Target{
		&zkTarget{name: "zookeeper", z: z, sh: sh},
		&zkTarget{name: "zookeeper (sync+get)", z: z, sh: sh, sync: true},
	}, nil
}

// startZKEnsemble starts opts.Members servers, connects the session pool and
// creates zkRoot.
func startZKEnsemble(ctx context.Context, opts PeerOptions) (*zkEnsemble, error) {
	n := opts.members()
	cfg := zkserver.DefaultConfig()
	cfg.TickTime = zkTickTime
	cfg.ForceSync = opts.Fsync
	ens, err := zkserver.StartEnsemble(ctx, cfg, n)
	if err != nil {
		return nil, err
	}
	z := &zkEnsemble{ens: ens, durability: fmt.Sprintf("fsync, %d servers", n)}
	if !opts.Fsync {
		z.durability = fmt.Sprintf("no fsync, %d servers", n)
	}
	servers := ens.Servers()
	for i := range opts.conns(zkDefaultConns) {
		conn, events, err := zk.Connect([]string{servers[i%n]}, zkSessionTimeout,
			zk.WithLogger(nopZKLogger{}), zk.WithLogInfo(false))
		if err != nil {
			_ = z.close()
			return nil, fmt.Errorf("ZooKeeper session %d: %w", i, err)
		}
		z.conns = append(z.conns, conn)
		z.events = append(z.events, events)
		if err := waitSession(ctx, events); err != nil {
			_ = z.close()
			return nil, fmt.Errorf("ZooKeeper session %d to %s: %w", i, servers[i%n], err)
		}
	}
	if _, err := z.conns[0].Create(zkRoot, nil, 0, zkACL); err != nil && !errors.Is(err, zk.ErrNodeExists) {
		_ = z.close()
		return nil, fmt.Errorf("create %s: %w", zkRoot, err)
	}
	return z, nil
}

// waitSession waits until a session is established, bounded by ctx and a
// minute.
func waitSession(ctx context.Context, events <-chan zk.Event) error {
	timer := time.NewTimer(time.Minute)
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				return errors.New("connection closed")
			}
			if ev.State == zk.StateHasSession {
				return nil
			}
			if ev.State == zk.StateAuthFailed || ev.State == zk.StateExpired {
				return fmt.Errorf("session: %v", ev.State)
			}
		case <-timer.C:
			return errors.New("no session after a minute")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// close ends the sessions, waiting for each connection's goroutines, then
// stops the servers.
func (z *zkEnsemble) close() error {
	var wg sync.WaitGroup
	for i, conn := range z.conns {
		wg.Go(func() {
			conn.Close()
			for range z.events[i] { // closed once the connection's loop ended
			}
		})
	}
	wg.Wait()
	z.conns, z.events = nil, nil
	return z.ens.Close()
}

// zkTarget drives the shared ensemble through go-zookeeper; sync makes Get
// call Sync first, so that the read sees every write acknowledged before it.
type zkTarget struct {
	name   string
	z      *zkEnsemble
	sh     *shared
	sync   bool
	closer closeOnce
}

func (t *zkTarget) Name() string       { return t.name }
func (t *zkTarget) Durability() string { return t.z.durability }

func (t *zkTarget) conn(client int) *zk.Conn {
	return t.z.conns[pick(client, len(t.z.conns))]
}

// Get reads key's znode from the server the client's session is connected
// to (after a Sync, for the sync+get target). go-zookeeper's calls take no
// context: ctx is checked before the call only.
func (t *zkTarget) Get(ctx context.Context, client int, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	conn, path := t.conn(client), zkPath(key)
	if t.sync {
		if _, err := conn.Sync(path); err != nil {
			return err
		}
	}
	_, _, err := conn.Get(path)
	if errors.Is(err, zk.ErrNoNode) {
		return nil
	}
	return err
}

// Put sets key's znode, creating it if it is missing (the load phase).
func (t *zkTarget) Put(ctx context.Context, client int, key string, value []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	conn, path := t.conn(client), zkPath(key)
	_, err := conn.Set(path, value, -1)
	if !errors.Is(err, zk.ErrNoNode) {
		return err
	}
	_, err = conn.Create(path, value, 0, zkACL)
	if errors.Is(err, zk.ErrNodeExists) { // another client created it first
		_, err = conn.Set(path, value, -1)
	}
	return err
}

// Close releases the target; closing the last ZooKeeper target stops the
// ensemble.
func (t *zkTarget) Close() error { return t.closer.close(t.sh) }

// zkPath returns the znode of key: zkRoot/key, with the key escaped
// (url.PathEscape, which escapes '/' and '%') unless it is a plain name of
// printable ASCII without '/' or '%'. "", "." and ".." get names of their
// own.
func zkPath(key string) string {
	if plainZNodeName(key) {
		return zkRoot + "/" + key
	}
	switch key {
	case "": // no escaped key is a lone '%'
		return zkRoot + "/%"
	case ".":
		return zkRoot + "/%2E"
	case "..":
		return zkRoot + "/%2E%2E"
	}
	return zkRoot + "/" + url.PathEscape(key)
}

// plainZNodeName reports whether key can name a znode as it is.
func plainZNodeName(key string) bool {
	if key == "" || key == "." || key == ".." {
		return false
	}
	for i := 0; i < len(key); i++ {
		if c := key[i]; c <= ' ' || c >= 0x7f || c == '/' || c == '%' {
			return false
		}
	}
	return true
}

// nopZKLogger silences go-zookeeper, which logs every connection event.
type nopZKLogger struct{}

func (nopZKLogger) Printf(string, ...any) {}

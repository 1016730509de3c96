package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/kvstore/kvstore/client"
	"github.com/kvstore/kvstore/cluster"
	"github.com/kvstore/kvstore/node"
)

// inProcess is KVStore embedded: an in-process cluster whose clients call
// the nodes' Go API (node.Get, node.Set) directly, as a program embedding a
// node does. Client i uses node i % nodes.
type inProcess struct {
	c     *cluster.Cluster
	nodes []*node.Node
	mode  string // Memory, Fsync or NoFsync
	dir   string // the data directories' parent (removed on Close), if any
}

// Durability modes of an in-process KVStore target.
const (
	Memory  = "memory"  // state in memory only (the default)
	Fsync   = "fsync"   // each node keeps its state in a data directory, fsync per group commit
	NoFsync = "nofsync" // a data directory without fsync
)

// Durabilities lists the modes, for flags.
var Durabilities = []string{Memory, Fsync, NoFsync}

// NewInProcess starts an in-process KVStore cluster of nodes nodes (0 means
// 3) on the given coordinator backend ("" means etcd, embedded) with the
// given durability mode ("" means Memory; the data directories are
// temporary) and returns it as a Target named "kvstore (in-process)", with
// the mode in the name unless it is Memory. It waits until every node serves
// and is a voter. Close stops the cluster and removes its data.
func NewInProcess(ctx context.Context, nodes int, backend cluster.Backend, durability string) (Target, error) {
	if nodes <= 0 {
		nodes = 3
	}
	opts := cluster.Options{Nodes: nodes, Backend: backend, DirectLinks: true}
	t := &inProcess{mode: durability}
	switch durability {
	case "", Memory:
		t.mode = Memory
	case Fsync, NoFsync:
		dir, err := os.MkdirTemp("", "kvstore-bench-")
		if err != nil {
			return nil, fmt.Errorf("bench: start KVStore: %w", err)
		}
		t.dir, opts.DataDir, opts.NoFsync = dir, dir, durability == NoFsync
	default:
		return nil, fmt.Errorf("bench: durability %q: want one of %v", durability, Durabilities)
	}
	c, err := cluster.New(ctx, opts)
	if err != nil {
		t.removeDir()
		return nil, fmt.Errorf("bench: start KVStore: %w", err)
	}
	t.c = c
	for i := 0; i < nodes; i++ {
		n, err := c.Node(i)
		if err != nil {
			_ = t.Close()
			return nil, fmt.Errorf("bench: start KVStore: %w", err)
		}
		t.nodes = append(t.nodes, n)
	}
	return t, nil
}

func (t *inProcess) Name() string {
	switch t.mode {
	case Fsync:
		return "kvstore (in-process, fsync)"
	case NoFsync:
		return "kvstore (in-process, no fsync)"
	}
	return "kvstore (in-process)"
}

func (t *inProcess) Durability() string {
	switch t.mode {
	case Fsync:
		return fmt.Sprintf("fsync, %d replicas (majority acknowledged)", len(t.nodes))
	case NoFsync:
		return fmt.Sprintf("disk without fsync, %d replicas (majority acknowledged)", len(t.nodes))
	}
	return fmt.Sprintf("memory, %d replicas (majority acknowledged)", len(t.nodes))
}

func (t *inProcess) removeDir() {
	if t.dir != "" {
		_ = os.RemoveAll(t.dir)
	}
}

func (t *inProcess) Get(ctx context.Context, client int, key string) error {
	_, _, err := t.nodes[client%len(t.nodes)].Get(ctx, key)
	return err
}

func (t *inProcess) Put(ctx context.Context, client int, key string, value []byte) error {
	return t.nodes[client%len(t.nodes)].Set(ctx, key, string(value))
}

// CacheCounts sums the nodes' cache hits and misses. Reads a leader
// answers itself count as neither.
func (t *inProcess) CacheCounts() (hits, misses uint64) {
	for _, n := range t.nodes {
		s := n.Stats()
		hits += s.CacheHits
		misses += s.CacheMisses
	}
	return hits, misses
}

func (t *inProcess) Close() error {
	err := t.c.Close()
	t.removeDir()
	return err
}

// endpoints is a running KVStore cluster reached through the Go client: one
// client.Client per endpoint, benchmark client i using client i % len; each
// client.Client lists every endpoint, its own first, so it fails over to
// the others.
type endpoints struct {
	clients    []*client.Client
	durability string // what the nodes said of themselves (describeNodes)
}

// NewEndpoints returns a Target named "kvstore" for the running cluster
// whose nodes' client addresses (host:port) are given; tlsConfig, if not
// nil, is the clients' TLS configuration (client.Config.TLS). It asks each
// endpoint for its Status, for the durability statement (the nodes' storage
// and the number of voters, see describeNodes), and fails if no endpoint
// answers within 10 s.
func NewEndpoints(eps []string, tlsConfig *tls.Config) (Target, error) {
	if len(eps) == 0 {
		return nil, errors.New("bench: no KVStore endpoints")
	}
	t := &endpoints{}
	for i := range eps {
		rotated := append(append([]string(nil), eps[i:]...), eps[:i]...)
		c, err := client.New(client.Config{Endpoints: rotated, TLS: tlsConfig})
		if err != nil {
			_ = t.Close()
			return nil, fmt.Errorf("bench: %w", err)
		}
		t.clients = append(t.clients, c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Each client asks its own endpoint first; one that fails over to
	// another node reports that node, which describeNodes counts once.
	var sts []client.Status
	var firstErr error
	for _, c := range t.clients {
		st, err := c.Status(ctx)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		sts = append(sts, st)
	}
	if len(sts) == 0 {
		_ = t.Close()
		return nil, fmt.Errorf("bench: KVStore status: %w", firstErr)
	}
	t.durability = describeNodes(sts)
	return t, nil
}

// describeNodes states what an acknowledged write survives on the nodes
// whose Status answered, as the targets' Durability does: the storage the
// nodes report ("fsync", "disk without fsync" or "memory"; each node's when
// they differ; "storage unknown" for a node too old to say) and the number
// of voters, e.g. "fsync, 3 replicas (majority acknowledged)". When fewer
// nodes answered than there are voters it says how many it saw.
func describeNodes(sts []client.Status) string {
	seen := map[string]bool{}
	var kinds []string // per node, in the order they answered
	var ids []string
	voters := 0
	for _, st := range sts {
		voters = max(voters, len(st.Voters))
		if seen[st.ID] {
			continue
		}
		seen[st.ID] = true
		kind := "storage unknown"
		switch p := st.Storage; {
		case p == nil:
		case p.DataDir && p.Fsync:
			kind = Fsync
		case p.DataDir:
			kind = "disk without fsync"
		default:
			kind = Memory
		}
		kinds, ids = append(kinds, kind), append(ids, st.ID)
	}
	storage := kinds[0]
	for _, k := range kinds[1:] {
		if k != kinds[0] {
			var each []string
			for i := range kinds {
				each = append(each, ids[i]+" "+kinds[i])
			}
			storage = "mixed storage (" + strings.Join(each, ", ") + ")"
			break
		}
	}
	if voters > len(ids) {
		storage += fmt.Sprintf(" (%d of %d voters reported)", len(ids), voters)
	}
	if voters == 0 {
		return storage + ", majority of replicas acknowledged"
	}
	return fmt.Sprintf("%s, %d replicas (majority acknowledged)", storage, voters)
}

func (t *endpoints) Name() string { return "kvstore" }

func (t *endpoints) Durability() string { return t.durability }

func (t *endpoints) Get(ctx context.Context, c int, key string) error {
	_, _, err := t.clients[c%len(t.clients)].Get(ctx, key)
	return err
}

func (t *endpoints) Put(ctx context.Context, c int, key string, value []byte) error {
	return t.clients[c%len(t.clients)].Put(ctx, key, string(value))
}

func (t *endpoints) Close() error {
	var errs []error
	for _, c := range t.clients {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

// CacheCounts sums the cache counters the nodes report in Status, each
// node once; a node that does not answer within 2 s is left out (the
// runner then reports no ratio if the sums went back).
func (t *endpoints) CacheCounts() (hits, misses uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	seen := map[string]bool{}
	for _, c := range t.clients {
		st, err := c.Status(ctx)
		if err != nil || st.Cache == nil || seen[st.ID] {
			continue
		}
		seen[st.ID] = true
		hits += st.Cache.Hits
		misses += st.Cache.Misses
	}
	return hits, misses
}

// Servers is the number of endpoints: client i asks endpoint i % Servers
// first.
func (t *endpoints) Servers() int { return len(t.clients) }

// Servers is the number of nodes: client i calls node i % Servers.
func (t *inProcess) Servers() int { return len(t.nodes) }

package bench

import (
	"context"
	"errors"
	"fmt"
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
}

// NewInProcess starts an in-process KVStore cluster of nodes nodes (0 means
// 3) on the given coordinator backend ("" means etcd, embedded) and returns
// it as a Target named "kvstore (in-process)". It waits until every node
// serves and is a voter. Close stops the cluster.
func NewInProcess(ctx context.Context, nodes int, backend cluster.Backend) (Target, error) {
	if nodes <= 0 {
		nodes = 3
	}
	c, err := cluster.New(ctx, cluster.Options{Nodes: nodes, Backend: backend, DirectLinks: true})
	if err != nil {
		return nil, fmt.Errorf("bench: start KVStore: %w", err)
	}
	t := &inProcess{c: c}
	for i := 0; i < nodes; i++ {
		n, err := c.Node(i)
		if err != nil {
			_ = c.Close()
			return nil, fmt.Errorf("bench: start KVStore: %w", err)
		}
		t.nodes = append(t.nodes, n)
	}
	return t, nil
}

func (t *inProcess) Name() string { return "kvstore (in-process)" }

func (t *inProcess) Durability() string {
	return fmt.Sprintf("memory, %d replicas (majority acknowledged)", len(t.nodes))
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

func (t *inProcess) Close() error { return t.c.Close() }

// endpoints is a running KVStore cluster reached through the Go client: one
// client.Client per endpoint, benchmark client i using client i % len; each
// client.Client lists every endpoint, its own first, so it fails over to
// the others.
type endpoints struct {
	clients  []*client.Client
	replicas int // voters, as one node reported them (0: unknown)
}

// NewEndpoints returns a Target named "kvstore" for the running cluster
// whose nodes' client addresses (host:port) are given. It asks the cluster
// for its voters, for the durability statement, and fails if no endpoint
// answers within 10 s.
func NewEndpoints(eps []string) (Target, error) {
	if len(eps) == 0 {
		return nil, errors.New("bench: no KVStore endpoints")
	}
	t := &endpoints{}
	for i := range eps {
		rotated := append(append([]string(nil), eps[i:]...), eps[:i]...)
		c, err := client.New(client.Config{Endpoints: rotated})
		if err != nil {
			_ = t.Close()
			return nil, fmt.Errorf("bench: %w", err)
		}
		t.clients = append(t.clients, c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := t.clients[0].Status(ctx)
	if err != nil {
		_ = t.Close()
		return nil, fmt.Errorf("bench: KVStore status: %w", err)
	}
	t.replicas = len(st.Voters)
	return t, nil
}

func (t *endpoints) Name() string { return "kvstore" }

func (t *endpoints) Durability() string {
	if t.replicas == 0 {
		return "memory, majority of replicas acknowledged"
	}
	return fmt.Sprintf("memory, %d replicas (majority acknowledged)", t.replicas)
}

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

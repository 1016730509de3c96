package node_test

import (
	"context"
	"fmt"
	"time"

	"github.com/kvstore/kvstore/coord/etcdcoord"
	"github.com/kvstore/kvstore/etcdembed"
	"github.com/kvstore/kvstore/node"
)

// Example embeds a node in a Go program: open a coordinator connection,
// start the node, use it locally (reads are answered from the node's memory
// whenever it may, still linearizably), close it. Here the
// coordinator is an in-process etcd; a real program passes its etcd
// endpoints (or uses zkcoord for ZooKeeper), and every other node of the
// cluster runs with the same Cluster name and coordinator.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	etcd, err := etcdembed.Start(ctx, etcdembed.DefaultConfig())
	if err != nil {
		panic(err)
	}
	defer etcd.Close()

	co, err := etcdcoord.New(ctx, etcdcoord.Config{Endpoints: []string{etcd.Endpoint()}, Prefix: "/kvstore/example/"})
	if err != nil {
		panic(err)
	}
	defer co.Close() // after the node: the node does not own its coordinator

	cfg := node.DefaultConfig()
	cfg.ID = "app-1"
	cfg.Cluster = "example"
	cfg.Coordinator = co
	n, err := node.New(cfg)
	if err != nil {
		panic(err)
	}
	if err := n.Start(ctx); err != nil {
		panic(err)
	}
	defer n.Close(context.Background())
	if err := n.WaitServing(ctx); err != nil {
		panic(err)
	}

	if err := n.Set(ctx, "greeting", "hello"); err != nil {
		panic(err)
	}
	v, found, err := n.Get(ctx, "greeting")
	if err != nil {
		panic(err)
	}
	fmt.Println(v, found)
	// A leader answers from its own store; a follower from its cache once
	// it holds the key. Either way, no network round trip.
	st := n.Stats()
	fmt.Println("answered locally:", st.LeaderReads+st.CacheHits)
	// Output:
	// hello true
	// answered locally: 1
}

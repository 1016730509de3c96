package cluster

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kvstore/kvstore/client"
)

// TestTLSCluster: a three-node cluster speaking mutual TLS, node to node
// through the fault proxies (TLS over the proxied connection, checked
// against the real peer's name) and to clients, serves writes and reads
// through every node; a client without a certificate is refused with an
// error that says TLS.
func TestTLSCluster(t *testing.T) {
	eachBackend(t, func(t *testing.T, b Backend) {
		c := newCluster(t, b, 3, func(o *Options) { o.TLS = true })
		if c.CA() == nil {
			t.Fatal("no CA in a TLS cluster")
		}
		// Through the nodes: follower writes and misses go to the leader
		// over node-to-node TLS.
		for i := 0; i < 3; i++ {
			mustPut(t, c, i, "k", "v"+string(rune('0'+i)))
			for j := 0; j < 3; j++ {
				expectGet(t, c, j, "k", "v"+string(rune('0'+i)))
			}
		}

		var eps []string
		for i := 0; i < 3; i++ {
			nd, err := c.Node(i)
			if err != nil {
				t.Fatal(err)
			}
			eps = append(eps, nd.Addr())
		}
		cfg, err := c.ClientTLS("tester")
		if err != nil || cfg == nil {
			t.Fatalf("ClientTLS: %v, %v", cfg, err)
		}
		for i, ep := range eps {
			cl, err := client.New(client.Config{Endpoints: []string{ep}, TLS: cfg})
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			key := "c" + string(rune('0'+i))
			if err := cl.Put(ctxT(t, 20*time.Second), key, "over tls"); err != nil {
				t.Fatalf("client put through node %d: %v", i, err)
			}
			for j := 0; j < 3; j++ {
				expectGet(t, c, j, key, "over tls")
			}
			if v, found, err := cl.Get(ctxT(t, 20*time.Second), "k"); err != nil || !found || v != "v2" {
				t.Fatalf("client get through node %d: %q %v %v", i, v, found, err)
			}
		}

		plain, err := client.New(client.Config{Endpoints: eps})
		if err != nil {
			t.Fatal(err)
		}
		defer plain.Close()
		_, _, err = plain.Get(ctxT(t, 10*time.Second), "k")
		if !errors.Is(err, client.ErrTLS) || !errors.Is(err, client.ErrUnavailable) || !strings.Contains(err.Error(), "TLS") {
			t.Fatalf("plaintext client: %v; want ErrTLS and ErrUnavailable, saying TLS", err)
		}
		t.Logf("plaintext client: %v", err)
	})
}

// TestClientTLSWithoutTLS: a plaintext cluster hands out no client TLS
// configuration.
func TestClientTLSWithoutTLS(t *testing.T) {
	c := &Cluster{}
	if cfg, err := c.ClientTLS("x"); cfg != nil || err != nil || c.CA() != nil {
		t.Fatalf("ClientTLS of a plaintext cluster: %v, %v", cfg, err)
	}
}

package zkcoord_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/kvstore/kvstore/coord"
	"github.com/kvstore/kvstore/coord/coordtest"
	"github.com/kvstore/kvstore/coord/zkcoord"
	"github.com/kvstore/kvstore/faultproxy"
)

// testAuth is the digest credentials of the tests' authenticated clusters.
const testAuth = "kvstore:s3cret"

func newAuthCoord(t *testing.T, servers []string, auth string) (*zkcoord.Coordinator, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return zkcoord.New(ctx, zkcoord.Config{Servers: servers, Prefix: prefixFor(t), Auth: auth})
}

func mustAuthCoord(t *testing.T, servers []string) *zkcoord.Coordinator {
	t.Helper()
	c, err := newAuthCoord(t, servers, testAuth)
	if err != nil {
		t.Fatalf("zkcoord.New with Auth: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// The whole suite passes with digest credentials and closed ACLs.
func TestConformanceWithAuth(t *testing.T) {
	srv := standalone(t)
	coordtest.Run(t, func(t *testing.T) coord.Coordinator {
		c, err := newAuthCoord(t, srv.Servers(), testAuth)
		if err != nil {
			t.Fatalf("zkcoord.New with Auth: %v", err)
		}
		return c
	})
}

func TestConfigAuthValidate(t *testing.T) {
	for _, auth := range []string{"user", ":Xyzzy", "user:", ":"} {
		err := zkcoord.Config{Servers: []string{"127.0.0.1:2181"}, Auth: auth}.Validate()
		if err == nil {
			t.Errorf("Auth %q accepted", auth)
		} else if strings.Contains(err.Error(), "Xyzzy") {
			t.Errorf("Auth %q: the error %q quotes the password", auth, err)
		}
	}
	if err := (zkcoord.Config{Servers: []string{"127.0.0.1:2181"}, Auth: "u:p:q"}).Validate(); err != nil {
		t.Errorf("Auth with a colon in the password: %v", err)
	}
}

// With Auth, every znode of the cluster is closed to a client without the
// credentials and to one with other credentials: it can neither read the
// voter record or the cluster name, nor list, create or delete members or
// candidates, nor change the record or the ACLs. A client with the same
// credentials can.
func TestAuthKeepsOthersOut(t *testing.T) {
	srv := standalone(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := mustAuthCoord(t, srv.Servers())
	if _, err := c.ClaimCluster(ctx, "a"); err != nil {
		t.Fatalf("ClaimCluster: %v", err)
	}
	if err := c.CreateVoters(ctx, []string{"n1"}); err != nil {
		t.Fatalf("CreateVoters: %v", err)
	}
	s := newSession(t, c)
	if err := s.Register(ctx, coord.Member{ID: "n1", Addr: "a1"}); err != nil {
		t.Fatalf("Register: %v", err)
	}
	if _, err := s.Campaign(ctx, "n1"); err != nil {
		t.Fatalf("Campaign: %v", err)
	}

	prefix := prefixFor(t)
	owner := rawConn(t, srv.Servers())
	if err := owner.AddAuth("digest", []byte(testAuth)); err != nil {
		t.Fatalf("AddAuth: %v", err)
	}
	candidates, _, err := owner.Children(prefix + "/election")
	if err != nil || len(candidates) != 1 {
		t.Fatalf("election children with the credentials = %v, %v; want one", candidates, err)
	}
	leaderZnode := prefix + "/election/" + candidates[0]
	if data, _, err := owner.Get(prefix + "/voters"); err != nil || !strings.Contains(string(data), "n1") {
		t.Fatalf("voters with the credentials = %q, %v", data, err)
	}

	// checks are the operations no outsider may do; each returns the
	// server's answer.
	checks := []struct {
		what string
		do   func(*zk.Conn) error
	}{
		{"read voters", func(z *zk.Conn) error { _, _, err := z.Get(prefix + "/voters"); return err }},
		{"read the cluster name", func(z *zk.Conn) error { _, _, err := z.Get(prefix + "/cluster"); return err }},
		{"read the leader's znode", func(z *zk.Conn) error { _, _, err := z.Get(leaderZnode); return err }},
		{"read a member", func(z *zk.Conn) error { _, _, err := z.Get(prefix + "/members/n1"); return err }},
		{"list members", func(z *zk.Conn) error { _, _, err := z.Children(prefix + "/members"); return err }},
		{"list candidates", func(z *zk.Conn) error { _, _, err := z.Children(prefix + "/election"); return err }},
		{"list the prefix", func(z *zk.Conn) error { _, _, err := z.Children(prefix); return err }},
		{"write voters", func(z *zk.Conn) error { _, err := z.Set(prefix+"/voters", []byte(`{"ids":["evil"]}`), -1); return err }},
		{"delete voters", func(z *zk.Conn) error { return z.Delete(prefix+"/voters", -1) }},
		{"register a member", func(z *zk.Conn) error {
			_, err := z.Create(prefix+"/members/evil", []byte("x"), zk.FlagEphemeral, zk.WorldACL(zk.PermAll))
			return err
		}},
		{"delete a member", func(z *zk.Conn) error { return z.Delete(prefix+"/members/n1", -1) }},
		{"enter the election", func(z *zk.Conn) error {
			_, err := z.Create(prefix+"/election/n_evil_", []byte("evil"), zk.FlagEphemeral|zk.FlagSequence, zk.WorldACL(zk.PermAll))
			return err
		}},
		{"delete the leader's znode", func(z *zk.Conn) error { return z.Delete(leaderZnode, -1) }},
		{"delete the election", func(z *zk.Conn) error { return z.Delete(prefix+"/election", -1) }},
		{"change the prefix's ACL", func(z *zk.Conn) error { _, err := z.SetACL(prefix, zk.WorldACL(zk.PermAll), -1); return err }},
		{"delete the prefix", func(z *zk.Conn) error { return z.Delete(prefix, -1) }},
	}
	outsiders := map[string]*zk.Conn{"no credentials": rawConn(t, srv.Servers())}
	wrong := rawConn(t, srv.Servers())
	if err := wrong.AddAuth("digest", []byte("kvstore:wrong")); err != nil {
		t.Fatalf("AddAuth: %v", err)
	}
	outsiders["wrong password"] = wrong
	other := rawConn(t, srv.Servers())
	if err := other.AddAuth("digest", []byte("intruder:s3cret")); err != nil {
		t.Fatalf("AddAuth: %v", err)
	}
	outsiders["other user"] = other
	for name, z := range outsiders {
		for _, chk := range checks {
			if err := chk.do(z); !errors.Is(err, zk.ErrNoAuth) {
				t.Errorf("%s: %s = %v, want zk.ErrNoAuth", name, chk.what, err)
			}
		}
	}

	// Nothing changed: the record, the member and the leader are there.
	if v, err := c.Voters(ctx); err != nil || len(v.IDs) != 1 || !v.Contains("n1") {
		t.Errorf("Voters after the attempts = %+v, %v", v, err)
	}
	coordtest.WaitView(t, s.Watch(ctx), coordtest.Slack, "n1 still member and leader", func(v coord.View) error {
		if v.Members["n1"] != "a1" || v.Leader.ID != "n1" || len(v.Members) != 1 {
			return fmt.Errorf("View %+v", v)
		}
		return nil
	})

	// A Coordinator without the credentials, or with wrong ones, cannot
	// even open the prefix.
	for _, auth := range []string{"", "kvstore:wrong"} {
		bad, err := newAuthCoord(t, srv.Servers(), auth)
		if err == nil {
			bad.Close()
			t.Errorf("zkcoord.New with Auth %q on the closed prefix succeeded", auth)
		} else if !errors.Is(err, zk.ErrNoAuth) {
			t.Errorf("zkcoord.New with Auth %q = %v, want zk.ErrNoAuth", auth, err)
		}
	}

	// The same credentials see everything.
	for _, chk := range checks[:7] {
		if err := chk.do(owner); err != nil {
			t.Errorf("with the credentials: %s: %v", chk.what, err)
		}
	}
}

// The client re-sends the credentials after a reconnect, before anything
// else: after a cut, the session and the Coordinator's own connection still
// act on the closed znodes.
func TestAuthSurvivesReconnect(t *testing.T) {
	srv := standalone(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	proxy, err := faultproxy.New(srv.Servers()[0])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	c := mustAuthCoord(t, []string{proxy.Addr()})
	// The longest session the test server grants, as in TestConnectionCut:
	// what is checked is that credentials survive a reconnect, and a
	// reconnect on a busy machine (client backoff, a loaded JVM) may take
	// a good part of a 2 s TTL (it took over 3 s under load).
	const ttl = 4 * time.Second
	s := newSessionTTL(t, c, ttl)
	if err := s.Register(ctx, coord.Member{ID: "n1", Addr: "a1"}); err != nil {
		t.Fatalf("Register: %v", err)
	}
	views := s.Watch(ctx)

	proxy.SetDown(true)
	coordtest.WaitFor(t, coordtest.Slack, "unhealthy after the cut", func() error {
		if s.Healthy() {
			return errors.New("still Healthy")
		}
		return nil
	})
	restored := time.Now()
	proxy.SetDown(false)
	// Healthy again before the session could have expired.
	coordtest.WaitFor(t, ttl, "healthy after the connection is restored", func() error {
		if !s.Healthy() {
			return errors.New("not Healthy")
		}
		return nil
	})
	t.Logf("healthy again %v after the connection was restored", time.Since(restored).Round(time.Millisecond))
	if err := s.Err(); err != nil {
		t.Fatalf("session ended by a short cut: %v", err)
	}
	if err := s.Register(ctx, coord.Member{ID: "n2", Addr: "a2"}); err != nil {
		t.Fatalf("Register after the reconnect: %v", err)
	}
	if _, err := s.Campaign(ctx, "n1"); err != nil {
		t.Fatalf("Campaign after the reconnect: %v", err)
	}
	if err := c.CreateVoters(ctx, []string{"n1"}); err != nil {
		t.Fatalf("CreateVoters after the reconnect: %v", err)
	}
	if v, err := c.Voters(ctx); err != nil || !v.Contains("n1") {
		t.Fatalf("Voters after the reconnect = %+v, %v", v, err)
	}
	coordtest.WaitView(t, views, coordtest.Slack, "the watch, re-set after the reconnect, sees n2 and the leader", func(v coord.View) error {
		if v.Members["n2"] != "a2" || v.Leader.ID != "n1" {
			return fmt.Errorf("View %+v", v)
		}
		return nil
	})
}

// A prefix created without credentials keeps its open ACLs: a Coordinator
// with Auth refuses it rather than run unprotected.
func TestAuthRefusesAnOpenPrefix(t *testing.T) {
	srv := standalone(t)
	open := newCoord(t, srv.Servers())
	open.Close()
	_, err := newAuthCoord(t, srv.Servers(), testAuth)
	if err == nil || !strings.Contains(err.Error(), "open to anyone") {
		t.Fatalf("zkcoord.New with Auth on an open prefix = %v, want a refusal naming the open ACL", err)
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("the error %q quotes the password", err)
	}
}

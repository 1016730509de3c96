package main

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvstore/kvstore/internal/soon"
	"github.com/kvstore/kvstore/internal/testpki"
	"github.com/kvstore/kvstore/zkserver"
)

// runExit runs the binary with args (and the environment without KVSTORE_
// variables) and returns its combined output and exit code.
func runExit(t *testing.T, bin string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = coordEnv()
	cmd.Dir = t.TempDir()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	code, err := processExit(cmd.Run())
	if err != nil {
		t.Fatalf("kvstore %v: %v", args, err)
	}
	return out.String(), code
}

// `kvstore coordinator` with TLS and client certificate authentication on
// its client URL serves a `kvstore node` that shows its certificate; nodes
// without a client certificate, with one of another CA, or without TLS at
// all are refused within the dial timeout, saying why.
func TestNodeOnCoordinatorWithTLS(t *testing.T) {
	bin := buildBinary(t)
	p := testpki.New(t, "coordinator CA")
	other := testpki.New(t, "another CA")
	ports := coordPorts(t, 2)
	etcd := fmt.Sprintf("127.0.0.1:%d", ports[0])

	c := &coordProc{name: "c1", exited: make(chan struct{})}
	c.cmd = exec.Command(bin, "coordinator", "--name", "c1",
		"--listen-client-urls", "https://"+etcd,
		"--listen-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", ports[1]),
		"--cert-file", p.ServerCert, "--key-file", p.ServerKey, "--trusted-ca-file", p.CAFile)
	c.cmd.Dir = t.TempDir()
	c.cmd.Env = coordEnv("KVSTORE_HEARTBEAT_INTERVAL=50")
	c.cmd.Stdout, c.cmd.Stderr = &c.stdout, &c.stderr
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		c.waitErr = c.cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-c.exited:
		default:
			_ = c.cmd.Process.Kill()
			<-c.exited
		}
		if t.Failed() {
			t.Log(c.output())
		}
	})
	soon.Succeeds(t, 30*time.Second, func() error {
		select {
		case <-c.exited:
			t.Fatalf("coordinator exited: %v\n%s", c.waitErr, c.output())
		default:
		}
		if !strings.Contains(c.stdout.String(), "ready, client URLs: https://"+etcd) {
			return fmt.Errorf("not ready: %q", c.stdout.String())
		}
		return nil
	})

	n := startNode(t, bin, "n1", "KVSTORE_ETCD="+etcd, "KVSTORE_CLUSTER=tls",
		"KVSTORE_ETCD_CERT="+p.ClientCert, "KVSTORE_ETCD_KEY="+p.ClientKey, "KVSTORE_ETCD_CA="+p.CAFile)
	soon.Succeeds(t, 30*time.Second, func() error {
		if out, code := ctl(t, bin, "put", "--endpoints", n.addr, "--timeout", "5s", "k", "over TLS"); code != 0 {
			return fmt.Errorf("put: exit %d, %q", code, out)
		}
		return nil
	})
	if out, code := ctl(t, bin, "get", "--endpoints", n.addr, "k"); code != 0 || out != "over TLS\n" {
		t.Fatalf("get: exit %d, %q", code, out)
	}

	refusals := []struct {
		name  string
		flags []string
		want  string
	}{
		{"no client certificate", []string{"--etcd-ca", p.CAFile}, "certificate required"},
		{"client certificate of another CA", []string{"--etcd-cert", other.ClientCert, "--etcd-key", other.ClientKey, "--etcd-ca", p.CAFile}, "unknown certificate authority"},
		{"server of an untrusted CA", []string{"--etcd-cert", p.ClientCert, "--etcd-key", p.ClientKey, "--etcd-ca", other.CAFile}, "certificate signed by unknown authority"},
		{"plaintext", nil, "speaks TLS"},
	}
	var wg sync.WaitGroup
	for i, r := range refusals {
		wg.Go(func() {
			args := append([]string{"node", "--id", fmt.Sprintf("x%d", i), "--cluster", "tls", "--listen", freeAddr(t), "--etcd", etcd}, r.flags...)
			start := time.Now()
			out, code := runExit(t, bin, args...)
			took := time.Since(start)
			if code != exitFailed || !strings.Contains(out, r.want) {
				t.Errorf("%s: exit %d after %v, output %q; want exit %d saying %q", r.name, code, took, out, exitFailed, r.want)
			} else {
				t.Logf("%s: refused after %v: %s", r.name, took.Round(time.Millisecond), strings.TrimSpace(out))
			}
		})
	}
	wg.Wait()

	// The refused nodes changed nothing.
	// One member line (n1), then the settings line.
	if out, code := ctl(t, bin, "members", "--endpoints", n.addr); code != 0 || !strings.HasPrefix(out, "n1 ") ||
		strings.Count(out, "\n") != 2 || !strings.Contains(out, "\nsettings: ") {
		t.Errorf("members: exit %d, %q; want n1 alone", code, out)
	}
	n.stop(t)
}

// Bad combinations of the coordinator security flags are usage errors
// (exit 2) that name the flags; none of them reaches a coordinator.
func TestCoordinatorAccessFlagErrors(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	f := func(name string) string { return filepath.Join(dir, name) }
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"node", "--id", "a", "--etcd", "127.0.0.1:1", "--etcd-cert", f("c")}, "--etcd-cert and --etcd-key go together"},
		{[]string{"node", "--id", "a", "--etcd", "127.0.0.1:1", "--etcd-key", f("k"), "--etcd-ca", f("ca")}, "--etcd-cert and --etcd-key go together"},
		{[]string{"node", "--id", "a", "--zookeeper", "127.0.0.1:1", "--etcd-ca", f("ca")}, "not with --zookeeper"},
		{[]string{"node", "--id", "a", "--etcd", "127.0.0.1:1", "--zookeeper-auth", "u:p"}, "not with --etcd"},
		{[]string{"node", "--id", "a", "--zookeeper", "127.0.0.1:1", "--zookeeper-auth", "Xyzzy"}, "want user:password"},
		{[]string{"node", "--id", "a", "--zookeeper", "127.0.0.1:1", "--zookeeper-auth", "u:"}, "want user:password"},
		{[]string{"node", "--id", "a", "--etcd", "http://127.0.0.1:1", "--etcd-ca", f("ca")}, "plaintext http"},
		{[]string{"node", "--id", "a", "--zookeeper", "127.0.0.1:1", "--zookeeper-key", f("k")}, "--zookeeper-cert and --zookeeper-key go together"},
		{[]string{"node", "--id", "a", "--etcd", "127.0.0.1:1", "--zookeeper-ca", f("ca")}, "not with --etcd"},
		{[]string{"coordinator", "--cert-file", f("c")}, "--cert-file and --key-file go together"},
		{[]string{"coordinator", "--trusted-ca-file", f("ca")}, "--trusted-ca-file needs --cert-file"},
		{[]string{"coordinator", "--peer-key-file", f("k")}, "--peer-cert-file and --peer-key-file go together"},
		{[]string{"coordinator", "--cert-file", f("c"), "--key-file", f("k")}, "--listen-client-urls http://127.0.0.1:2379: want https://"},
		{[]string{"coordinator", "--listen-client-urls", "https://127.0.0.1:2379"}, "is https://: give --cert-file"},
		{[]string{"coordinator", "--listen-client-urls", "https://127.0.0.1:2379", "--cert-file", f("c"), "--key-file", f("k"), "--advertise-client-urls", "http://127.0.0.1:2379"}, "--advertise-client-urls http://127.0.0.1:2379: want https://"},
		{[]string{"coordinator", "--peer-cert-file", f("c"), "--peer-key-file", f("k")}, "--listen-peer-urls http://127.0.0.1:2380: want https://"},
	} {
		out, code := runExit(t, bin, tc.args...)
		if code != exitUsage || !strings.Contains(out, tc.want) {
			t.Errorf("kvstore %q: exit %d, output %q; want exit %d mentioning %q", tc.args, code, out, exitUsage, tc.want)
		}
		if strings.Contains(out, "Xyzzy") {
			t.Errorf("kvstore %q: the output quotes the password: %q", tc.args, out)
		}
	}
}

// `kvstore node --zookeeper-auth` serves with its cluster's znodes closed
// to everyone else: a node without the credentials, or with a wrong
// password, cannot start on the same cluster.
func TestNodeOnZooKeeperWithAuth(t *testing.T) {
	servers := startZooKeeper(t) // skips, or fails under KVSTORE_REQUIRE_ZOOKEEPER, without ZooKeeper
	bin := buildBinary(t)
	zk := strings.Join(servers, ",") + "/authtest"
	n := startNode(t, bin, "z0", "KVSTORE_ZOOKEEPER="+zk, "KVSTORE_CLUSTER=zkauth", "KVSTORE_ZOOKEEPER_AUTH=kvstore:s3cret")
	soon.Succeeds(t, 30*time.Second, func() error {
		if out, code := ctl(t, bin, "put", "--endpoints", n.addr, "--timeout", "5s", "k", "closed"); code != 0 {
			return fmt.Errorf("put: exit %d, %q", code, out)
		}
		return nil
	})
	for _, auth := range []string{"", "kvstore:wrong"} {
		args := []string{"node", "--id", "intruder", "--cluster", "zkauth", "--listen", freeAddr(t), "--zookeeper", zk}
		if auth != "" {
			args = append(args, "--zookeeper-auth", auth)
		}
		out, code := runExit(t, bin, args...)
		if code != exitFailed || !strings.Contains(out, "not authenticated") {
			t.Errorf("node with --zookeeper-auth %q: exit %d, output %q; want exit %d, not authenticated", auth, code, out, exitFailed)
		}
		if strings.Contains(out, "wrong") {
			t.Errorf("the output quotes the password: %q", out)
		}
	}
	if out, code := ctl(t, bin, "get", "--endpoints", n.addr, "k"); code != 0 || out != "closed\n" {
		t.Fatalf("get: exit %d, %q", code, out)
	}
	n.stop(t)
}

// `kvstore node` reaches a ZooKeeper secure client port with
// --zookeeper-cert, --zookeeper-key and --zookeeper-ca (and credentials);
// a node without a client certificate is refused, saying why.
func TestNodeOnZooKeeperWithTLS(t *testing.T) {
	zkserver.SkipIfUnavailable(t)
	bin := buildBinary(t)
	p := testpki.New(t, "ZooKeeper CA")
	cfg := zkserver.DefaultConfig()
	cfg.TLS = zkserver.TLSFiles{CertFile: p.ServerCert, KeyFile: p.ServerKey, CAFile: p.CAFile}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv, err := zkserver.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start ZooKeeper with TLS: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("close ZooKeeper: %v", err)
		}
	})
	zk := strings.Join(srv.SecureServers(), ",")
	n := startNode(t, bin, "z0", "KVSTORE_ZOOKEEPER="+zk, "KVSTORE_CLUSTER=zktls", "KVSTORE_ZOOKEEPER_AUTH=kvstore:s3cret",
		"KVSTORE_ZOOKEEPER_CERT="+p.ClientCert, "KVSTORE_ZOOKEEPER_KEY="+p.ClientKey, "KVSTORE_ZOOKEEPER_CA="+p.CAFile)
	soon.Succeeds(t, 30*time.Second, func() error {
		if out, code := ctl(t, bin, "put", "--endpoints", n.addr, "--timeout", "5s", "k", "over TLS"); code != 0 {
			return fmt.Errorf("put: exit %d, %q", code, out)
		}
		return nil
	})
	out, code := runExit(t, bin, "node", "--id", "intruder", "--cluster", "zktls", "--listen", freeAddr(t),
		"--zookeeper", zk, "--zookeeper-auth", "kvstore:s3cret", "--zookeeper-ca", p.CAFile)
	if code != exitFailed || !strings.Contains(out, "TLS handshake") {
		t.Errorf("node without a client certificate: exit %d, output %q; want exit %d, a failed TLS handshake", code, out, exitFailed)
	}
	if out, code := ctl(t, bin, "get", "--endpoints", n.addr, "k"); code != 0 || out != "over TLS\n" {
		t.Fatalf("get: exit %d, %q", code, out)
	}
	n.stop(t)
}

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kvstore/kvstore/certs"
	"github.com/kvstore/kvstore/client"
	"github.com/kvstore/kvstore/internal/soon"
)

// runCmd runs the kvstore command line in this process and returns its
// output and exit code.
func runCmd(args ...string) (string, int, error) {
	cmd := newRootCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), exitCode(err), err
}

// TestCertsCommand: kvstore certs makes a CA, node and client
// certificates, never overwrites, writes keys 0600, and its command line
// errors are usage errors.
func TestCertsCommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	for _, args := range [][]string{
		{"certs", "ca", "--dir", dir},
		{"certs", "node", "--dir", dir, "--hosts", "127.0.0.1,localhost,n1.example"},
		{"certs", "node", "--dir", dir, "--hosts", "10.0.0.2", "--out", "n2"},
		{"certs", "client", "--dir", dir, "--name", "alice"},
	} {
		if out, code, err := runCmd(args...); code != exitOK || !strings.Contains(out, "wrote ") {
			t.Fatalf("kvstore %v: exit %d (%v), output %q", args, code, err, out)
		}
	}
	for file, perm := range map[string]os.FileMode{
		"ca.crt": 0o644, "ca.key": 0o600, "node.crt": 0o644, "node.key": 0o600,
		"n2.crt": 0o644, "n2.key": 0o600, "client.alice.crt": 0o644, "client.alice.key": 0o600,
	} {
		fi, err := os.Stat(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&^perm != 0 {
			t.Errorf("%s: mode %v, want at most %v", file, fi.Mode().Perm(), perm)
		}
	}
	// The files work together: node and client configurations load, and
	// the node certificate names the hosts given.
	node := certs.Files{Cert: filepath.Join(dir, "node.crt"), Key: filepath.Join(dir, "node.key"), CA: filepath.Join(dir, "ca.crt")}
	scfg, err := node.ServerConfig()
	if err != nil {
		t.Fatal(err)
	}
	leaf := scfg.Certificates[0].Leaf
	if leaf == nil || leaf.Subject.CommonName != certs.NodeName || leaf.VerifyHostname("n1.example") != nil || leaf.VerifyHostname("127.0.0.1") != nil {
		t.Fatalf("node certificate: %+v", leaf)
	}
	alice := certs.Files{Cert: filepath.Join(dir, "client.alice.crt"), Key: filepath.Join(dir, "client.alice.key"), CA: filepath.Join(dir, "ca.crt")}
	if _, err := alice.ClientConfig(); err != nil {
		t.Fatal(err)
	}
	caBefore, err := os.ReadFile(filepath.Join(dir, "ca.key"))
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		args []string
		want int
		says string
	}{
		{[]string{"certs", "ca", "--dir", dir}, exitFailed, "refusing to overwrite"},
		{[]string{"certs", "node", "--dir", dir, "--hosts", "127.0.0.1"}, exitFailed, "refusing to overwrite"},
		{[]string{"certs", "client", "--dir", dir, "--name", "alice"}, exitFailed, "refusing to overwrite"},
		{[]string{"certs", "ca"}, exitUsage, "--dir"},
		{[]string{"certs", "node", "--dir", dir}, exitUsage, "--hosts"},
		{[]string{"certs", "node", "--dir", dir, "--hosts", "127.0.0.1:7000", "--out", "n3"}, exitUsage, "without port"},
		{[]string{"certs", "node", "--dir", dir, "--hosts", "h", "--out", "../x"}, exitUsage, "--out"},
		{[]string{"certs", "client", "--dir", dir}, exitUsage, "--name"},
		{[]string{"certs", "client", "--dir", dir, "--name", "node"}, exitUsage, "node role"},
		{[]string{"certs", "client", "--dir", t.TempDir(), "--name", "bob"}, exitFailed, "ca.crt"},
		{[]string{"certs", "ca", "--dir", dir, "extra"}, exitUsage, ""},
	} {
		_, code, err := runCmd(tc.args...)
		if code != tc.want || err == nil || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("kvstore %v: exit %d, %v; want exit %d saying %q", tc.args, code, err, tc.want, tc.says)
		}
	}
	if caAfter, err := os.ReadFile(filepath.Join(dir, "ca.key")); err != nil || !bytes.Equal(caAfter, caBefore) {
		t.Fatalf("the CA key changed (%v)", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "n3.crt")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused node certificate was written (%v)", err)
	}
}

// ctlFull runs a command-line client command and returns stdout, stderr
// and the exit code.
func ctlFull(t *testing.T, bin string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	code, err := processExit(cmd.Run())
	if err != nil {
		t.Fatalf("kvstore %v: %v", args, err)
	}
	return out.String(), errOut.String(), code
}

// TestNodeProcessesTLS runs two `kvstore node` processes with mutual TLS
// (certificates from `kvstore certs`, given through KVSTORE_CERT,
// KVSTORE_KEY and KVSTORE_CA) and drives them with the command-line client:
// with a client certificate, a write through the follower (forwarded to
// the leader over node-to-node TLS) is read through the leader; without
// certificates, or with a certificate of another CA, the client fails at
// once saying TLS; a partial set of flags is a usage error.
func TestNodeProcessesTLS(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	otherDir := t.TempDir()
	for _, args := range [][]string{
		{"certs", "ca", "--dir", dir},
		{"certs", "node", "--dir", dir, "--hosts", "127.0.0.1"},
		{"certs", "client", "--dir", dir, "--name", "alice"},
		{"certs", "ca", "--dir", otherDir},
		{"certs", "client", "--dir", otherDir, "--name", "mallory"},
	} {
		if out, errOut, code := ctlFull(t, bin, args...); code != exitOK {
			t.Fatalf("kvstore %v: exit %d: %s%s", args, code, out, errOut)
		}
	}
	etcd := startEtcd(t)
	env := []string{
		"KVSTORE_ETCD=" + etcd.Endpoint(), "KVSTORE_CLUSTER=tls",
		"KVSTORE_CERT=" + filepath.Join(dir, "node.crt"),
		"KVSTORE_KEY=" + filepath.Join(dir, "node.key"),
		"KVSTORE_CA=" + filepath.Join(dir, "ca.crt"),
	}
	asAlice := []string{"--cert", filepath.Join(dir, "client.alice.crt"), "--key", filepath.Join(dir, "client.alice.key"), "--ca", filepath.Join(dir, "ca.crt")}
	withTLS := func(args ...string) []string { return append(args, asAlice...) }

	first := startNode(t, bin, "t0", env...)
	soon.Succeeds(t, 30*time.Second, func() error {
		if out, errOut, code := ctlFull(t, bin, withTLS("leader", "--endpoints", first.addr, "--timeout", "5s")...); code != 0 || !strings.HasPrefix(out, "t0 ") {
			return fmt.Errorf("leader (exit %d): %q %s", code, out, errOut)
		}
		return nil
	})
	second := startNode(t, bin, "t1", env...)
	soon.Succeeds(t, 30*time.Second, func() error {
		out, errOut, code := ctlFull(t, bin, withTLS("members", "--endpoints", second.addr, "--timeout", "5s")...)
		if code != 0 || !strings.Contains(out, "t0 "+first.addr+" leader voter devel\n") || !strings.Contains(out, "t1 "+second.addr+" follower voter devel\n") {
			return fmt.Errorf("members (exit %d): %q %s", code, out, errOut)
		}
		return nil
	})
	if out, errOut, code := ctlFull(t, bin, withTLS("put", "--endpoints", second.addr, "k", "over tls")...); code != 0 || out != "OK\n" {
		t.Fatalf("put through the follower: exit %d, %q %s", code, out, errOut)
	}
	for _, n := range []*nodeProc{first, second} {
		if out, errOut, code := ctlFull(t, bin, withTLS("get", "--endpoints", n.addr, "k")...); code != 0 || out != "over tls\n" {
			t.Fatalf("get through %s: exit %d, %q %s", n.id, code, out, errOut)
		}
	}

	both := first.addr + "," + second.addr
	for _, tc := range []struct {
		name string
		args []string
		want int
		says []string
	}{
		{"no certificates", []string{"get", "--endpoints", both, "k"}, exitFailed, []string{"TLS", "--cert"}},
		{"another CA's certificate", []string{"get", "--endpoints", both, "k",
			"--cert", filepath.Join(otherDir, "client.mallory.crt"), "--key", filepath.Join(otherDir, "client.mallory.key"), "--ca", filepath.Join(dir, "ca.crt")},
			exitFailed, []string{"TLS", "unknown certificate authority"}},
		{"a CA that did not sign the nodes", []string{"get", "--endpoints", both, "k",
			"--cert", filepath.Join(dir, "client.alice.crt"), "--key", filepath.Join(dir, "client.alice.key"), "--ca", filepath.Join(otherDir, "ca.crt")},
			exitFailed, []string{"TLS", "certificate signed by unknown authority"}},
		{"--cert alone", []string{"get", "--endpoints", both, "--cert", filepath.Join(dir, "client.alice.crt"), "k"}, exitUsage, []string{"--cert, --key and --ca go together"}},
		{"--key and --ca", []string{"put", "--endpoints", both, "--key", "x", "--ca", "y", "k", "v"}, exitUsage, []string{"--cert, --key and --ca go together"}},
	} {
		start := time.Now()
		out, errOut, code := ctlFull(t, bin, tc.args...)
		missing := false
		for _, s := range tc.says {
			missing = missing || !strings.Contains(errOut, s)
		}
		if code != tc.want || out != "" || missing {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want exit %d saying %q", tc.name, code, out, errOut, tc.want, tc.says)
		}
		// The default --timeout is 20 s: a TLS mismatch does not wait it out.
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("%s: took %v", tc.name, took)
		}
		t.Logf("%s: %s", tc.name, strings.TrimSpace(errOut))
	}

	// A node with a partial set is a usage error (and does not start:
	// killed after a while if it does).
	nctx, ncancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer ncancel()
	cmd := exec.CommandContext(nctx, bin, "node", "--id", "x", "--etcd", etcd.Endpoint(), "--listen", freeAddr(t), "--cert", filepath.Join(dir, "node.crt"))
	var errOut bytes.Buffer
	cmd.Stderr = &errOut
	code, err := processExit(cmd.Run())
	if err != nil || code != exitUsage || !strings.Contains(errOut.String(), "--cert, --key and --ca go together") {
		t.Errorf("node with --cert alone: exit %d (%v), %q; want %d", code, err, errOut.String(), exitUsage)
	}
}

// TestShellTLS: with --tls the shell's nodes speak mutual TLS to each
// other (a write through one node is read through another, and a node
// added later joins) and refuse a plaintext client; without --tls the same
// client is served.
func TestShellTLS(t *testing.T) {
	bin := buildBinary(t)
	for _, on := range []bool{true, false} {
		t.Run(fmt.Sprintf("tls=%v", on), func(t *testing.T) {
			args := []string{"--nodes", "2"}
			if on {
				args = append(args, "--tls")
			}
			s := startShell(t, bin, nil, args...)
			s.expectOut("put 0 a 1", "OK")
			s.expectOut("get 1 a", "1")
			s.expectOut("new-client", "2")
			s.expectOut("put 2 b 2", "OK")
			s.expectOut("get 0 b", "2")
			fields := strings.Fields(s.expectOut("list", "0 n0 "))
			plain, err := client.New(client.Config{Endpoints: []string{fields[2]}, Timeout: 10 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer plain.Close()
			v, _, err := plain.Get(context.Background(), "a")
			if on && !errors.Is(err, client.ErrTLS) {
				t.Errorf("plaintext client of a --tls shell's node: %q, %v; want ErrTLS", v, err)
			}
			if !on && (err != nil || v != "1") {
				t.Errorf("plaintext client of a plaintext shell's node: %q, %v; want 1", v, err)
			}
			s.send("quit")
			s.wait(30 * time.Second)
		})
	}
}

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kvstore/kvstore/internal/soon"
)

// TestReplaceNodeThatLostItsDisk follows docs/operations.md's procedure "Replace a
// node that lost its disk" with real node processes: a voter crashes and
// its data directory is gone; the operator removes it (`kvstore members
// remove`), starts a new node under a new id with an empty data directory,
// and waits until `kvstore members` lists it as a voter. Then another of
// the original nodes fails: the cluster still serves every acknowledged
// write, which it could not if the dead voter were still counted (two live
// of four) or the new node held nothing. Refusals exit 1 and change nothing.
func TestReplaceNodeThatLostItsDisk(t *testing.T) {
	bin := buildBinary(t)
	etcd := startEtcd(t)
	dirs := t.TempDir()
	env := []string{"KVSTORE_ETCD=" + etcd.Endpoint(), "KVSTORE_CLUSTER=replace", "KVSTORE_SESSION_TTL=2s"}
	dataEnv := func(id string) string { return "KVSTORE_DATA_DIR=" + filepath.Join(dirs, id) }
	first := startNode(t, bin, "r0", append(env, dataEnv("r0"))...)
	soon.Succeeds(t, 30*time.Second, func() error {
		if out, code := ctl(t, bin, "leader", "--endpoints", first.addr, "--timeout", "5s"); code != 0 || !strings.HasPrefix(out, "r0 ") {
			return fmt.Errorf("leader (exit %d): %q", code, out)
		}
		return nil
	})
	nodes := []*nodeProc{first, startNode(t, bin, "r1", append(env, dataEnv("r1"))...), startNode(t, bin, "r2", append(env, dataEnv("r2"))...)}
	waitMembers(t, bin, nodes, 30*time.Second)
	const keys = 20
	for i := 0; i < keys; i++ {
		if out, code := ctl(t, bin, "put", "--endpoints", addrs(nodes), fmt.Sprint("k", i), fmt.Sprint("v", i)); code != 0 {
			t.Fatalf("put k%d: exit %d, %q", i, code, out)
		}
	}
	leader := leaderOf(t, bin, nodes)
	lost := without(nodes, leader)[0]

	// The disk is lost: the process dies and its data directory is gone.
	if err := lost.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-lost.done
	if err := os.RemoveAll(filepath.Join(dirs, lost.id)); err != nil {
		t.Fatal(err)
	}
	rest := without(nodes, lost)
	soon.Succeeds(t, 20*time.Second, func() error {
		out, code := ctl(t, bin, "members", "--endpoints", addrs(rest), "--timeout", "5s")
		if code != 0 || !strings.Contains(out, lost.id+" - down voter\n") {
			return fmt.Errorf("members (exit %d) does not show %s as a down voter:\n%s", code, lost.id, out)
		}
		return nil
	})

	// Refused, nothing changed: the leader itself, a node that is no voter.
	for _, id := range []string{leader.id, "nosuch"} {
		if out, code := ctl(t, bin, "members", "remove", "--endpoints", addrs(rest), id); code != exitFailed {
			t.Fatalf("members remove %s: exit %d, %q; want %d", id, code, out, exitFailed)
		}
	}
	// Step 1: remove the dead voter.
	out, code := ctl(t, bin, "members", "remove", "--endpoints", addrs(rest), lost.id)
	if code != 0 || strings.Contains(out, lost.id+" ") || !strings.HasPrefix(out, "removed "+lost.id+"; voters ") {
		t.Fatalf("members remove %s: exit %d, %q", lost.id, code, out)
	}
	// Step 2: a new node, new id, empty data directory.
	repl := startNode(t, bin, "r3", append(env, dataEnv("r3"))...)
	nodes = append(rest, repl)
	// Step 3: wait until it is a voter, and every node is ok.
	waitMembers(t, bin, nodes, 30*time.Second)

	// One more original node fails: the leader and the new node are two
	// of three voters.
	victim := without(rest, leader)[0]
	if err := victim.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-victim.done
	live := []*nodeProc{leader, repl}
	if out, code := ctl(t, bin, "put", "--endpoints", repl.addr, "after", "replace"); code != 0 {
		t.Fatalf("put after the second failure: exit %d, %q", code, out)
	}
	for _, n := range live {
		for i := 0; i < keys; i++ {
			if out, code := ctl(t, bin, "get", "--endpoints", n.addr, fmt.Sprint("k", i)); code != 0 || out != fmt.Sprint("v", i)+"\n" {
				t.Fatalf("get k%d through %s: exit %d, %q; want v%d", i, n.id, code, out, i)
			}
		}
	}
	for _, n := range live {
		n.stop(t)
	}
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kvstore/kvstore/client"
	"github.com/kvstore/kvstore/etcdembed"
	"github.com/kvstore/kvstore/internal/soon"
	"github.com/kvstore/kvstore/internal/syncbuf"
)

// startEtcd starts an embedded etcd for one test (waiting at most a minute)
// and closes it when the test ends.
func startEtcd(t *testing.T) *etcdembed.Server {
	t.Helper()
	return startEtcdWith(t, func(ctx context.Context) (*etcdembed.Server, error) {
		return etcdembed.Start(ctx, etcdembed.DefaultConfig())
	})
}

// startEtcdWith starts an etcd for one test with start (waiting at most a
// minute) and closes it when the test ends.
func startEtcdWith(t *testing.T, start func(context.Context) (*etcdembed.Server, error)) *etcdembed.Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	etcd, err := start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { etcd.Close() })
	return etcd
}

// freeAddr is a loopback address with a port nothing listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// nodeProc is one `kvstore node` process.
type nodeProc struct {
	id, addr string
	cmd      *exec.Cmd
	log      *syncbuf.Buffer // the process writes it, the test reads it
	done     chan error      // the process's exit, sent once
	exited   chan struct{}   // closed when the process has exited
}

func startNode(t *testing.T, bin, id string, env ...string) *nodeProc {
	t.Helper()
	return startNodeArgs(t, bin, id, nil, env...)
}

// startNodeArgs is startNode with more command-line arguments.
func startNodeArgs(t *testing.T, bin, id string, args []string, env ...string) *nodeProc {
	t.Helper()
	addr := freeAddr(t)
	return launchNode(t, id, addr, exec.Command(bin, append([]string{"node", "--listen", addr}, args...)...), env...)
}

// launchNode starts cmd, a `kvstore node` command that serves addr, as node
// id (the command runs the binary directly or through a wrapper such as `ip
// netns exec` that execs it: signals to the process reach the node), and
// kills it when the test ends.
func launchNode(t *testing.T, id, addr string, cmd *exec.Cmd, env ...string) *nodeProc {
	t.Helper()
	p := &nodeProc{id: id, addr: addr, cmd: cmd, log: &syncbuf.Buffer{}, done: make(chan error, 1), exited: make(chan struct{})}
	// Flags through the environment, as a container would set them.
	p.cmd.Env = append(os.Environ(), append([]string{"KVSTORE_ID=" + id}, env...)...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := p.cmd.Wait()
		close(p.exited)
		p.done <- err
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("node %s log:\n%s", id, p.log.String())
		}
	})
	return p
}

// stop sends SIGTERM and waits for a clean exit.
func (p *nodeProc) stop(t *testing.T) { p.stopWith(t, syscall.SIGTERM) }

// stopWith sends sig and waits for a clean exit.
func (p *nodeProc) stopWith(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("node %s exited with %v after %v\n%s", p.id, err, sig, p.log.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("node %s did not exit 20s after %v", p.id, sig)
	}
}

// processExit turns the error of cmd.Run into the process's exit code; err is
// set only if the process did not run or exit normally.
func processExit(runErr error) (code int, err error) {
	var ee *exec.ExitError
	if errors.As(runErr, &ee) {
		return ee.ExitCode(), nil
	}
	return 0, runErr
}

// ctl runs a command-line client command and returns stdout and exit code.
func ctl(t *testing.T, bin string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	code, err := processExit(cmd.Run())
	if err != nil {
		t.Fatalf("kvstore %v: %v", args, err)
	}
	if code != exitOK && code != exitNotFound {
		t.Logf("kvstore %v: exit %d: %s", args, code, strings.TrimSpace(errOut.String()))
	}
	return out.String(), code
}

// addrs joins the nodes' addresses for --endpoints.
func addrs(nodes []*nodeProc) string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.addr)
	}
	return strings.Join(out, ",")
}

// without is nodes without n.
func without(nodes []*nodeProc, n *nodeProc) []*nodeProc {
	var out []*nodeProc
	for _, x := range nodes {
		if x != n {
			out = append(out, x)
		}
	}
	return out
}

// waitMembers waits until `kvstore members` lists exactly nodes, each a
// voter at its current address, one of them the leader, and each node
// reports state ok (a node restarted without its data is "ok,recovering"
// until a leader reconciled it, and does not count toward a majority).
func waitMembers(t *testing.T, bin string, nodes []*nodeProc, within time.Duration) {
	t.Helper()
	soon.Succeeds(t, within, func() error {
		for _, n := range nodes {
			out, code := ctl(t, bin, "members", "--json", "--endpoints", n.addr, "--timeout", "5s")
			var st client.Status
			if code != 0 || json.Unmarshal([]byte(out), &st) != nil || st.State != "ok" {
				return fmt.Errorf("%s: members --json (exit %d): %s", n.id, code, out)
			}
		}
		out, code := ctl(t, bin, "members", "--endpoints", addrs(nodes), "--timeout", "5s")
		// One line a node, then the cluster-wide settings.
		if code != 0 || strings.Count(out, "\n") != len(nodes)+1 || strings.Count(out, " leader ") != 1 ||
			!regexp.MustCompile(`(?m)^settings: lease \S+, clock drift \S+, request-id window \d+, max lease \S+$`).MatchString(out) {
			return fmt.Errorf("members (exit %d):\n%s", code, out)
		}
		for _, n := range nodes {
			if !strings.Contains(out, n.id+" "+n.addr+" ") || !regexp.MustCompile(`(?m)^`+n.id+` \S+ \S+ voter devel$`).MatchString(out) {
				return fmt.Errorf("members (exit %d) without voter %s at %s:\n%s", code, n.id, n.addr, out)
			}
		}
		return nil
	})
}

// startNodes starts n nodes named prefix0, prefix1, ...: the first alone
// until it leads, then the others. (Started together, a node other than
// the one that bootstrapped the voter record may win the election, and a
// leader never adds itself to the voter record: it would lead as a
// non-voter.)
func startNodes(t *testing.T, bin, prefix string, n int, env ...string) []*nodeProc {
	t.Helper()
	return startNodesWith(t, bin, n, func(i int) *nodeProc {
		return startNode(t, bin, fmt.Sprintf("%s%d", prefix, i), env...)
	})
}

// startNodesWith is startNodes with start(i) starting node i.
func startNodesWith(t *testing.T, bin string, n int, start func(i int) *nodeProc) []*nodeProc {
	t.Helper()
	first := start(0)
	soon.Succeeds(t, 30*time.Second, func() error {
		if out, code := ctl(t, bin, "leader", "--endpoints", first.addr, "--timeout", "5s"); code != 0 || !strings.HasPrefix(out, first.id+" ") {
			return fmt.Errorf("leader (exit %d): %q", code, out)
		}
		return nil
	})
	nodes := []*nodeProc{first}
	for i := 1; i < n; i++ {
		nodes = append(nodes, start(i))
	}
	return nodes
}

// leaderOf asks the nodes who leads and returns that node.
func leaderOf(t *testing.T, bin string, nodes []*nodeProc) *nodeProc {
	t.Helper()
	out, code := ctl(t, bin, "leader", "--endpoints", addrs(nodes))
	for _, n := range nodes {
		if code == 0 && strings.HasPrefix(out, n.id+" epoch ") {
			return n
		}
	}
	t.Fatalf("leader (exit %d) %q is none of the nodes", code, out)
	return nil
}

// checkHandover stops the leader with sig and checks the rolling-restart
// promise: the leader resigns, and the next write through another node is
// acknowledged before the leader's session TTL could have ended (without
// the handover the others would wait for it to expire before electing),
// and within one lease (had the leader left before its successor's
// takeover reached it, the successor would wait out the old leases).
// Measured from the signal, so the leader's own shutdown is included.
func checkHandover(t *testing.T, bin string, nodes []*nodeProc, leader *nodeProc, sig syscall.Signal, ttl time.Duration) {
	t.Helper()
	sent := time.Now()
	leader.stopWith(t, sig)
	key := "after-" + sig.String()
	if out, code := ctl(t, bin, "put", "--endpoints", addrs(without(nodes, leader)), key, "handover"); code != 0 {
		t.Fatalf("put after %v to the leader: exit %d, %q", sig, code, out)
	}
	took := time.Since(sent)
	t.Logf("first write acknowledged %v after %v to the leader %s (session TTL %v)", took.Round(time.Millisecond), sig, leader.id, ttl)
	if !strings.Contains(leader.log.String(), "leadership handed over") {
		t.Fatalf("the leader did not hand over on %v:\n%s", sig, leader.log.String())
	}
	if took >= ttl {
		t.Fatalf("the write after %v to the leader took %v, not less than the session TTL %v: the others waited for its session to expire", sig, took, ttl)
	}
	// Nor for the old epoch's leases (--lease, 2 s): the leader leaves only
	// once its successor's takeover counted it.
	const lease = 2 * time.Second
	if took >= lease {
		t.Fatalf("the write after %v to the leader took %v, not less than one lease %v: the successor waited out the old leases", sig, took, lease)
	}
}

// TestNodeProcessesAndClient runs three `kvstore node` processes on an etcd
// and drives them with the command-line client: writes through one node are
// read through another, exit codes and --json output mean what they say, a
// SIGTERM or SIGINT to the leader hands leadership over at once (no wait for
// its session to expire), and a follower that leaves on SIGTERM leaves the
// membership at once.
func TestNodeProcessesAndClient(t *testing.T) {
	// A session TTL long enough that a write waiting for the old leader's
	// session to expire cannot pass for a handover.
	const ttl = 5 * time.Second
	bin := buildBinary(t)
	etcd := startEtcd(t)
	env := []string{"KVSTORE_ETCD=" + etcd.Endpoint(), "KVSTORE_CLUSTER=proc", "KVSTORE_SESSION_TTL=" + ttl.String()}
	nodes := startNodes(t, bin, "p", 3, env...)
	waitMembers(t, bin, nodes, 30*time.Second)

	if out, code := ctl(t, bin, "put", "--endpoints", nodes[1].addr, "k", "v 1"); code != 0 || out != "OK\n" {
		t.Fatalf("put: exit %d, %q", code, out)
	}
	if out, code := ctl(t, bin, "get", "--endpoints", nodes[2].addr, "k"); code != 0 || out != "v 1\n" {
		t.Fatalf("get: exit %d, %q", code, out)
	}
	out, code := ctl(t, bin, "get", "--json", "--endpoints", nodes[0].addr, "k")
	var got struct {
		Key   string `json:"key"`
		Value string `json:"value"`
		Found bool   `json:"found"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &got) != nil || got.Key != "k" || got.Value != "v 1" || !got.Found {
		t.Fatalf("get --json: exit %d, %q", code, out)
	}
	if out, code := ctl(t, bin, "get", "--endpoints", nodes[0].addr, "missing"); code != exitNotFound || out != "" {
		t.Fatalf("get of a missing key: exit %d, %q; want %d and nothing", code, out, exitNotFound)
	}
	got.Found = true
	if out, code := ctl(t, bin, "get", "--json", "--endpoints", nodes[0].addr, "missing"); code != exitNotFound || json.Unmarshal([]byte(out), &got) != nil || got.Found || got.Value != "" || got.Key != "missing" {
		t.Fatalf("get --json of a missing key: exit %d, %q; want %d and found false", code, out, exitNotFound)
	}
	if _, code := ctl(t, bin, "put", "--endpoints", nodes[0].addr, "only-key"); code != exitUsage {
		t.Fatalf("put without a value: exit %d, want %d", code, exitUsage)
	}
	if out, code := ctl(t, bin, "put", "--json", "--endpoints", nodes[2].addr, "j", "json value"); code != 0 || out != `{"ok":true}`+"\n" {
		t.Fatalf("put --json: exit %d, %q", code, out)
	}
	if out, code := ctl(t, bin, "get", "--endpoints", nodes[1].addr, "j"); code != 0 || out != "json value\n" {
		t.Fatalf("get after put --json: exit %d, %q", code, out)
	}
	if out, code := ctl(t, bin, "delete", "--json", "--endpoints", nodes[0].addr, "j"); code != 0 || out != `{"ok":true}`+"\n" {
		t.Fatalf("delete --json: exit %d, %q", code, out)
	}
	if out, code := ctl(t, bin, "get", "--endpoints", nodes[2].addr, "j"); code != exitNotFound {
		t.Fatalf("get after delete --json: exit %d, %q; want %d", code, out, exitNotFound)
	}
	// --cluster names the cluster the endpoints must belong to: these
	// nodes are of "proc", so they refuse a command for another, which
	// writes nothing.
	if out, code := ctl(t, bin, "put", "--endpoints", nodes[0].addr, "--cluster", "proc", "c", "1"); code != 0 || out != "OK\n" {
		t.Fatalf("put --cluster proc: exit %d, %q", code, out)
	}
	if out, code := ctl(t, bin, "put", "--endpoints", nodes[0].addr, "--cluster", "prod", "c", "2"); code != exitFailed {
		t.Fatalf("put --cluster prod to nodes of proc: exit %d, %q; want %d", code, out, exitFailed)
	}
	if out, code := ctl(t, bin, "get", "--endpoints", nodes[0].addr, "c"); code != 0 || out != "1\n" {
		t.Fatalf("get after a refused put: exit %d, %q; want 1", code, out)
	}
	if out, code := ctl(t, bin, "delete", "--endpoints", nodes[2].addr, "k"); code != 0 || out != "OK\n" {
		t.Fatalf("delete: exit %d, %q", code, out)
	}

	leader := leaderOf(t, bin, nodes)
	out, code = ctl(t, bin, "leader", "--json", "--endpoints", nodes[1].addr)
	var ld struct {
		Leader string `json:"leader"`
		Epoch  int64  `json:"epoch"`
		SeenBy string `json:"seen_by"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &ld) != nil || ld.Leader != leader.id || ld.Epoch <= 0 || ld.SeenBy != nodes[1].id {
		t.Fatalf("leader --json through %s: exit %d, %q; want leader %s, a positive epoch, seen by %s", nodes[1].id, code, out, leader.id, nodes[1].id)
	}
	out, code = ctl(t, bin, "members", "--json", "--endpoints", nodes[2].addr)
	var st client.Status
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil {
		t.Fatalf("members --json: exit %d, %q", code, out)
	}
	var ids []string
	for _, m := range st.Members {
		ids = append(ids, m.ID+"@"+m.Addr)
	}
	slices.Sort(st.Voters)
	wantIDs := []string{"p0@" + nodes[0].addr, "p1@" + nodes[1].addr, "p2@" + nodes[2].addr}
	if st.ID != nodes[2].id || st.Endpoint != nodes[2].addr || st.Leader != leader.id || st.Epoch != ld.Epoch ||
		!slices.Equal(ids, wantIDs) || !slices.Equal(st.Voters, []string{"p0", "p1", "p2"}) || st.IsLeader != (leader == nodes[2]) {
		t.Fatalf("members --json: %q; want members %v (sorted), voters p0 p1 p2, leader %s in epoch %d, seen by %s", out, wantIDs, leader.id, ld.Epoch, nodes[2].id)
	}

	// SIGTERM to the leader: it resigns, a successor is elected at once.
	checkHandover(t, bin, nodes, leader, syscall.SIGTERM, ttl)
	i := slices.Index(nodes, leader)
	nodes[i] = startNode(t, bin, leader.id, env...)
	waitMembers(t, bin, nodes, 30*time.Second)

	// A follower that leaves on SIGTERM revokes its session: it leaves
	// the membership at once, not after its session TTL.
	leader = leaderOf(t, bin, nodes)
	follower := without(nodes, leader)[0]
	follower.stop(t)
	exited := time.Now()
	rest := addrs(without(nodes, follower))
	// Gone within half a TTL: a session left to expire could vanish as
	// early as two thirds of a TTL after the exit (its last keep-alive
	// may have come a third of a TTL before), so this still tells a
	// revocation from an expiry, with room for a busy machine.
	soon.Succeeds(t, ttl/2, func() error {
		out, code := ctl(t, bin, "members", "--endpoints", rest, "--timeout", "1s")
		if code != 0 || strings.Contains(out, follower.id+" "+follower.addr) {
			return fmt.Errorf("members (exit %d) %v after %s exited:\n%s", code, time.Since(exited), follower.id, out)
		}
		return nil
	})
	t.Logf("%s left the membership within %v of its exit (session TTL %v)", follower.id, time.Since(exited).Round(time.Millisecond), ttl)
	i = slices.Index(nodes, follower)
	nodes[i] = startNode(t, bin, follower.id, env...)
	waitMembers(t, bin, nodes, 30*time.Second)

	// SIGINT (Ctrl-C) to the leader: the same handover as SIGTERM.
	leader = leaderOf(t, bin, nodes)
	checkHandover(t, bin, nodes, leader, syscall.SIGINT, ttl)
	for _, n := range without(nodes, leader) {
		n.stop(t)
	}
}

// TestNodeProcessesOnZooKeeper runs `kvstore node --zookeeper` processes
// against a real ZooKeeper server (Debian's package, through zkserver),
// under a chroot, and reads through one node what was written through
// another with the command-line client.
func TestNodeProcessesOnZooKeeper(t *testing.T) {
	servers := startZooKeeper(t) // skips, or fails under KVSTORE_REQUIRE_ZOOKEEPER, without ZooKeeper
	bin := buildBinary(t)
	// The longest session timeout the server grants (20 ticks), for the
	// handover check.
	const ttl = 4 * time.Second
	env := []string{"KVSTORE_ZOOKEEPER=" + strings.Join(servers, ",") + "/proctest", "KVSTORE_CLUSTER=zkproc", "KVSTORE_SESSION_TTL=" + ttl.String()}
	nodes := startNodes(t, bin, "z", 3, env...)
	waitMembers(t, bin, nodes, 30*time.Second)
	if out, code := ctl(t, bin, "put", "--endpoints", nodes[0].addr, "zk", "value on zookeeper"); code != 0 || out != "OK\n" {
		t.Fatalf("put: exit %d, %q", code, out)
	}
	for _, n := range nodes[1:] {
		if out, code := ctl(t, bin, "get", "--endpoints", n.addr, "zk"); code != 0 || out != "value on zookeeper\n" {
			t.Fatalf("get through %s: exit %d, %q", n.id, code, out)
		}
	}
	if out, code := ctl(t, bin, "delete", "--endpoints", nodes[2].addr, "zk"); code != 0 || out != "OK\n" {
		t.Fatalf("delete: exit %d, %q", code, out)
	}
	if _, code := ctl(t, bin, "get", "--endpoints", nodes[1].addr, "zk"); code != exitNotFound {
		t.Fatalf("get after delete: exit %d, want %d", code, exitNotFound)
	}
	leader := leaderOf(t, bin, nodes)
	checkHandover(t, bin, nodes, leader, syscall.SIGTERM, ttl)
	for _, n := range without(nodes, leader) {
		n.stop(t)
	}
}

// TestCtlExitCodes checks the client's exit codes that need no cluster:
// 2 for every kind of bad command line, 1 for an operation that fails.
func TestCtlExitCodes(t *testing.T) {
	bin := buildBinary(t)
	dead := freeAddr(t)
	for _, tc := range []struct {
		args []string
		env  []string
		want int
	}{
		{[]string{"get"}, nil, exitUsage},
		{[]string{"get", "a", "b"}, nil, exitUsage},
		{[]string{"delete"}, nil, exitUsage},
		{[]string{"leader", "extra"}, nil, exitUsage},
		{[]string{"members", "extra"}, nil, exitUsage},
		{[]string{"get", "--bogus", "k"}, nil, exitUsage},
		{[]string{"put", "--timeout", "soon", "k", "v"}, nil, exitUsage},
		{[]string{"get", "k"}, []string{"KVSTORE_TIMEOUT=soon"}, exitUsage},
		{[]string{"frobnicate"}, nil, exitUsage},
		{[]string{"get", "--endpoints", dead, "--timeout", "1s", "k"}, nil, exitFailed},
		{[]string{"put", "--endpoints", dead, "--timeout", "1s", "k", "v"}, nil, exitFailed},
		{[]string{"delete", "--endpoints", dead, "--timeout", "1s", "k"}, nil, exitFailed},
		{[]string{"leader", "--endpoints", dead, "--timeout", "1s"}, nil, exitFailed},
		{[]string{"members", "--json", "--endpoints", dead, "--timeout", "1s"}, nil, exitFailed},
	} {
		cmd := exec.Command(bin, tc.args...)
		cmd.Env = append(os.Environ(), tc.env...)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		code, err := processExit(cmd.Run())
		if err != nil {
			t.Fatal(err)
		}
		if code != tc.want || out.Len() != 0 || !strings.HasPrefix(errOut.String(), "error: ") {
			t.Errorf("%v %v: exit %d, stdout %q, stderr %q; want exit %d, nothing on stdout and an error on stderr", tc.env, tc.args, code, out.String(), errOut.String(), tc.want)
		}
	}
}

func TestNodeFlagErrors(t *testing.T) {
	bin := buildBinary(t)
	for _, tc := range []struct {
		args []string
		env  []string
		want string
	}{
		{[]string{"node", "--etcd", "127.0.0.1:1"}, nil, "--id is required"},
		{[]string{"node", "--id", "a"}, nil, "no coordinator"},
		{[]string{"node", "--id", "a", "--etcd", "x:1", "--zookeeper", "y:2"}, nil, "choose one coordinator"},
		{[]string{"node", "--id", "a", "--etcd", "x:1"}, []string{"KVSTORE_SESSION_TTL=soon"}, "KVSTORE_SESSION_TTL"},
		{[]string{"node", "--id", "a", "--etcd", "x:1", "--log-format", "xml"}, nil, "--log-format"},
		{[]string{"node", "--id", "a", "--etcd", "x:1", "--data-dir", "d", "--force-new-cluster", "b"}, nil, "must repeat --id"},
		{[]string{"node", "--id", "a", "--etcd", "x:1", "--force-new-cluster=a"}, nil, "needs --data-dir"},
	} {
		cmd := exec.Command(bin, tc.args...)
		cmd.Env = append(os.Environ(), tc.env...)
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("kvstore %v: %v, output %q; want a failure mentioning %q", tc.args, err, out, tc.want)
		}
	}
}

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
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kvstore/kvstore/etcdembed"
	"github.com/kvstore/kvstore/internal/soon"
)

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
	log      *bytes.Buffer
	done     chan error
}

func startNode(t *testing.T, bin, id string, env ...string) *nodeProc {
	t.Helper()
	p := &nodeProc{id: id, addr: freeAddr(t), log: &bytes.Buffer{}, done: make(chan error, 1)}
	p.cmd = exec.Command(bin, "node", "--listen", p.addr)
	// Flags through the environment, as a container would set them.
	p.cmd.Env = append(os.Environ(), append([]string{"KVSTORE_ID=" + id}, env...)...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("node %s log:\n%s", id, p.log.String())
		}
	})
	return p
}

// stop sends SIGTERM and waits for a clean exit.
func (p *nodeProc) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("node %s exited with %v\n%s", p.id, err, p.log.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("node %s did not exit 20s after SIGTERM", p.id)
	}
}

// ctl runs a command-line client command and returns stdout and exit code.
func ctl(t *testing.T, bin string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("kvstore %v: %v", args, err)
	}
	return out.String(), code
}

// TestNodeProcessesAndClient runs three `kvstore node` processes on an etcd
// and drives them with the command-line client: writes through one node are
// read through another, exit codes mean what they say, and a SIGTERM to the
// leader hands leadership over at once (no wait for its session to expire).
func TestNodeProcessesAndClient(t *testing.T) {
	bin := buildBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	etcd, err := etcdembed.Start(ctx, etcdembed.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { etcd.Close() })
	env := []string{"KVSTORE_ETCD=" + etcd.Endpoint(), "KVSTORE_CLUSTER=proc"}
	var nodes []*nodeProc
	for i := 0; i < 3; i++ {
		nodes = append(nodes, startNode(t, bin, fmt.Sprintf("p%d", i), env...))
	}
	all := nodes[0].addr + "," + nodes[1].addr + "," + nodes[2].addr
	soon.Succeeds(t, 30*time.Second, func() error {
		out, code := ctl(t, bin, "members", "--endpoints", all)
		if code != 0 || strings.Count(out, " voter\n") != 3 || !strings.Contains(out, " leader ") {
			return fmt.Errorf("members (exit %d):\n%s", code, out)
		}
		return nil
	})

	if out, code := ctl(t, bin, "put", "--endpoints", nodes[1].addr, "k", "v 1"); code != 0 || out != "OK\n" {
		t.Fatalf("put: exit %d, %q", code, out)
	}
	if out, code := ctl(t, bin, "get", "--endpoints", nodes[2].addr, "k"); code != 0 || out != "v 1\n" {
		t.Fatalf("get: exit %d, %q", code, out)
	}
	out, code := ctl(t, bin, "get", "--json", "--endpoints", nodes[0].addr, "k")
	var got struct {
		Value string `json:"value"`
		Found bool   `json:"found"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &got) != nil || got.Value != "v 1" || !got.Found {
		t.Fatalf("get --json: exit %d, %q", code, out)
	}
	if out, code := ctl(t, bin, "get", "--endpoints", nodes[0].addr, "missing"); code != exitNotFound || out != "" {
		t.Fatalf("get of a missing key: exit %d, %q; want %d and nothing", code, out, exitNotFound)
	}
	if _, code := ctl(t, bin, "put", "--endpoints", nodes[0].addr, "only-key"); code != exitUsage {
		t.Fatalf("put without a value: exit %d, want %d", code, exitUsage)
	}
	if _, code := ctl(t, bin, "get", "--endpoints", freeAddr(t), "--timeout", "1s", "k"); code != exitFailed {
		t.Fatalf("get with no live endpoint: exit %d, want %d", code, exitFailed)
	}
	if _, code := ctl(t, bin, "delete", "--endpoints", nodes[2].addr, "k"); code != 0 {
		t.Fatalf("delete: exit %d", code)
	}

	// SIGTERM to the leader: it resigns, a successor is elected at once,
	// and writes go on through the others.
	out, _ = ctl(t, bin, "leader", "--endpoints", all)
	var leader *nodeProc
	for _, n := range nodes {
		if strings.HasPrefix(out, n.id+" ") {
			leader = n
		}
	}
	if leader == nil {
		t.Fatalf("leader %q is none of the nodes", out)
	}
	stopped := time.Now()
	leader.stop(t)
	var rest []string
	for _, n := range nodes {
		if n != leader {
			rest = append(rest, n.addr)
		}
	}
	if out, code := ctl(t, bin, "put", "--endpoints", strings.Join(rest, ","), "after", "handover"); code != 0 {
		t.Fatalf("put after the leader stopped: exit %d, %q", code, out)
	}
	// Without the handover the others would wait for the leader's session
	// TTL (2 s) before electing; measured from SIGTERM, so the leader's own
	// shutdown is included.
	t.Logf("first write acknowledged %v after SIGTERM to the leader %s", time.Since(stopped).Round(time.Millisecond), leader.id)
	if !strings.Contains(leader.log.String(), "leadership handed over") {
		t.Fatalf("the leader did not hand over:\n%s", leader.log.String())
	}
	for _, n := range nodes {
		if n != leader {
			n.stop(t)
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
	} {
		cmd := exec.Command(bin, tc.args...)
		cmd.Env = append(os.Environ(), tc.env...)
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("kvstore %v: %v, output %q; want a failure mentioning %q", tc.args, err, out, tc.want)
		}
	}
}

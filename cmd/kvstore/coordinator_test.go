package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// coordLog collects a process's output; safe for concurrent use.
type coordLog struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *coordLog) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *coordLog) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// coordProc is a running `kvstore coordinator` process.
type coordProc struct {
	name      string
	clientURL string
	dataDir   string
	cmd       *exec.Cmd
	stdout    coordLog
	stderr    coordLog
	exited    chan struct{} // closed when the process has exited
	waitErr   error         // cmd.Wait's result, once exited is closed
}

func (p *coordProc) output() string {
	return fmt.Sprintf("%s stdout:\n%s\n%s stderr:\n%s", p.name, p.stdout.String(), p.name, p.stderr.String())
}

// coordEnv is the environment without KVSTORE_ variables, plus extra.
func coordEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KVSTORE_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// coordPorts returns n distinct loopback ports that were free a moment ago.
func coordPorts(t *testing.T, n int) []int {
	t.Helper()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// startCoordinators starts an n-member coordinator cluster, one process per
// member, on free loopback ports. Member n0 keeps its data in the default
// n0.etcd in its working directory, the others get --data-dir. The initial
// cluster, its token and the heartbeat come from the environment;
// KVSTORE_NAME is set to a name outside the cluster, which --name overrides.
func startCoordinators(t *testing.T, bin string, n int) []*coordProc {
	t.Helper()
	ports := coordPorts(t, 2*n)
	procs := make([]*coordProc, n)
	var initial []string
	for i := range procs {
		procs[i] = &coordProc{
			name:      fmt.Sprintf("n%d", i),
			clientURL: fmt.Sprintf("http://127.0.0.1:%d", ports[2*i]),
			exited:    make(chan struct{}),
		}
		initial = append(initial, fmt.Sprintf("%s=http://127.0.0.1:%d", procs[i].name, ports[2*i+1]))
	}
	for i, p := range procs {
		wd := t.TempDir()
		args := []string{"coordinator",
			"--name", p.name,
			"--listen-client-urls", p.clientURL,
			"--listen-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1]),
		}
		p.dataDir = filepath.Join(wd, p.name+".etcd")
		if i > 0 {
			p.dataDir = filepath.Join(wd, "data")
			args = append(args, "--data-dir", p.dataDir)
		}
		p.cmd = exec.Command(bin, args...)
		p.cmd.Dir = wd
		p.cmd.Env = coordEnv(
			"KVSTORE_NAME=not-a-member",
			"KVSTORE_INITIAL_CLUSTER="+strings.Join(initial, ","),
			"KVSTORE_INITIAL_CLUSTER_TOKEN="+t.Name(),
			"KVSTORE_HEARTBEAT_INTERVAL=50",
		)
		p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() {
			p.waitErr = p.cmd.Wait()
			close(p.exited)
		}()
		t.Cleanup(func() {
			select {
			case <-p.exited:
			default:
				_ = p.cmd.Process.Kill()
				<-p.exited
			}
			if t.Failed() {
				t.Logf("coordinator %s:\n%s", p.name, p.output())
			}
		})
	}
	return procs
}

// waitCoordinators waits until a client can write and read through every
// member, or a process exits (then it returns that process's output), or
// the deadline passes.
func waitCoordinators(ctx context.Context, t *testing.T, procs []*coordProc) (exited *coordProc) {
	t.Helper()
	for i, p := range procs {
		next := procs[(i+1)%len(procs)]
		key, val := "k-"+p.name, "via "+p.name
		cli, err := clientv3.New(clientv3.Config{
			Endpoints:   []string{p.clientURL},
			DialTimeout: 5 * time.Second,
			Logger:      zap.NewNop(),
		})
		if err != nil {
			t.Fatalf("client: %v", err)
		}
		for {
			actx, cancel := context.WithTimeout(ctx, time.Second)
			_, err = cli.Put(actx, key, val)
			cancel()
			if err == nil {
				break
			}
			for _, q := range procs {
				select {
				case <-q.exited:
					cli.Close()
					return q
				default:
				}
			}
			if ctx.Err() != nil {
				cli.Close()
				for _, q := range procs {
					t.Log(q.output())
				}
				t.Fatalf("put via %s: %v", p.name, err)
			}
		}
		cli.Close()
		// Read it back through another member (a linearizable read).
		cli, err = clientv3.New(clientv3.Config{
			Endpoints:   []string{next.clientURL},
			DialTimeout: 5 * time.Second,
			Logger:      zap.NewNop(),
		})
		if err != nil {
			t.Fatalf("client: %v", err)
		}
		resp, err := cli.Get(ctx, key)
		cli.Close()
		if err != nil {
			t.Fatalf("get via %s: %v", next.name, err)
		}
		if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != val {
			t.Fatalf("get %s via %s returned %v, want %q", key, next.name, resp.Kvs, val)
		}
	}
	return nil
}

// TestCoordinatorCommandCluster runs a 3-member coordinator cluster as three
// `kvstore coordinator` processes, uses it through every member, then
// SIGTERMs all three at once: each must exit 0 within 10 s.
func TestCoordinatorCommandCluster(t *testing.T) {
	bin := buildBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var procs []*coordProc
	for attempt := 1; ; attempt++ {
		procs = startCoordinators(t, bin, 3)
		p := waitCoordinators(ctx, t, procs)
		if p == nil {
			break
		}
		// A port picked was taken before the member bound it: start over.
		if !strings.Contains(p.stderr.String(), "address already in use") || attempt == 3 {
			t.Fatalf("%s exited early (%v)\n%s", p.name, p.waitErr, p.output())
		}
		for _, q := range procs {
			_ = q.cmd.Process.Kill()
			<-q.exited
		}
	}

	for _, p := range procs {
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatalf("signal %s: %v", p.name, err)
		}
	}
	start := time.Now()
	timeout := time.After(10 * time.Second)
	for _, p := range procs {
		select {
		case <-p.exited:
		case <-timeout:
			t.Fatalf("%s did not exit within 10 s of SIGTERM\n%s", p.name, p.output())
		}
		if p.waitErr != nil {
			t.Errorf("%s exited with %v, want 0\n%s", p.name, p.waitErr, p.output())
		}
	}
	t.Logf("all exited %v after SIGTERM", time.Since(start).Round(time.Millisecond))

	for _, p := range procs {
		want := fmt.Sprintf("coordinator %s ready, client URLs: %s\n", p.name, p.clientURL)
		if got := p.stdout.String(); got != want {
			t.Errorf("%s stdout %q, want %q", p.name, got, want)
		}
		if !strings.Contains(p.stderr.String(), "msg=\"coordinator stopped\"") {
			t.Errorf("%s did not log that it stopped\n%s", p.name, p.output())
		}
		if _, err := os.Stat(filepath.Join(p.dataDir, "member")); err != nil {
			t.Errorf("%s data dir: %v", p.name, err)
		}
	}
}

// TestCoordinatorCommandFlagErrors checks that bad coordinator flags, or bad
// values in their environment variables, fail at once with a message naming
// the flag or the variable.
func TestCoordinatorCommandFlagErrors(t *testing.T) {
	bin := buildBinary(t)
	for _, tc := range []struct {
		args []string
		env  string
		want string
	}{
		{[]string{"--initial-cluster-state", "bogus"}, "", "--initial-cluster-state"},
		{nil, "KVSTORE_INITIAL_CLUSTER_STATE=bogus", "KVSTORE_INITIAL_CLUSTER_STATE"},
		{[]string{"--heartbeat-interval", "fast"}, "", "--heartbeat-interval"},
		{nil, "KVSTORE_ELECTION_TIMEOUT=-1", "KVSTORE_ELECTION_TIMEOUT"},
		{[]string{"--election-timeout", "100"}, "", "--election-timeout"},
		{[]string{"--heartbeat-interval", "0"}, "", "--heartbeat-interval"},
		{[]string{"--listen-client-urls", "127.0.0.1:2379"}, "", "--listen-client-urls"},
		{[]string{"--listen-peer-urls", "https://127.0.0.1:2380"}, "", "--listen-peer-urls"},
		{[]string{"--listen-peer-urls", "http://0.0.0.0:2380"}, "", "--initial-advertise-peer-urls is required"},
		{[]string{"--name", ""}, "", "--name"},
		{[]string{"--log-level", "loud"}, "", "--log-level"},
		{nil, "KVSTORE_LOG_LEVEL=loud", "KVSTORE_LOG_LEVEL"},
		{[]string{"--bogus-flag"}, "", "--bogus-flag"},
		{[]string{"extra"}, "", `"extra"`},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		cmd := exec.CommandContext(ctx, bin, append([]string{"coordinator"}, tc.args...)...)
		cmd.Dir = t.TempDir()
		cmd.Env = coordEnv()
		if tc.env != "" {
			cmd.Env = append(cmd.Env, tc.env)
		}
		out, err := cmd.CombinedOutput()
		cancel()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() <= 0 || !strings.Contains(string(out), tc.want) {
			t.Errorf("kvstore coordinator %q with %q: %v, output %q; want a non-zero exit mentioning %q", tc.args, tc.env, err, out, tc.want)
		}
	}
}

// TestCoordinatorCommandStopBeforeReady SIGTERMs a member whose peers never
// come while it waits for a quorum: it stops and exits 0 within 10 s.
func TestCoordinatorCommandStopBeforeReady(t *testing.T) {
	bin := buildBinary(t)
	ports := coordPorts(t, 4)
	p := &coordProc{name: "a", exited: make(chan struct{})}
	p.cmd = exec.Command(bin, "coordinator", "--name", "a",
		"--listen-client-urls", fmt.Sprintf("http://127.0.0.1:%d", ports[0]),
		"--listen-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", ports[1]),
		"--initial-cluster", fmt.Sprintf("a=http://127.0.0.1:%d,b=http://127.0.0.1:%d,c=http://127.0.0.1:%d", ports[1], ports[2], ports[3]))
	p.cmd.Dir = t.TempDir()
	p.cmd.Env = coordEnv()
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.exited
	})

	// The signal handler is installed before this is logged; wait until
	// etcd runs too (it has logged its peer listeners).
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.stderr.String(), "now serving peer/client/metrics") {
		select {
		case <-p.exited:
			t.Fatalf("exited early (%v)\n%s", p.waitErr, p.output())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcd did not start\n%s", p.output())
		}
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("did not exit within 10 s of SIGTERM\n%s", p.output())
	}
	if p.waitErr != nil || p.stdout.String() != "" || !strings.Contains(p.stderr.String(), "stopped before it was ready") {
		t.Fatalf("exit %v, want 0, no ready line and a log that it stopped before ready\n%s", p.waitErr, p.output())
	}
}

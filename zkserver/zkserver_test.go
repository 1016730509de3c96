package zkserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"go.uber.org/goleak"

	"github.com/kvstore/kvstore/internal/soon"
)

// TestMain checks that a closed Ensemble, and the ZooKeeper clients of the
// tests, leave no goroutine behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// pids returns the process ids of the running JVMs of e.
func pids(e *Ensemble) []int {
	e.mu.Lock()
	defer e.mu.Unlock()
	var ps []int
	for _, m := range e.members {
		if m.proc != nil {
			ps = append(ps, m.proc.cmd.Process.Pid)
		}
	}
	return ps
}

// checkGone fails t if a process in ps still exists (a zombie would count:
// Close must have reaped them).
func checkGone(t *testing.T, ps []int) {
	t.Helper()
	for _, pid := range ps {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("JVM pid %d still exists after Close (kill -0: %v)", pid, err)
		}
	}
}

// connect returns a ZooKeeper client of servers with a connected session.
func connect(ctx context.Context, t *testing.T, servers []string) *zk.Conn {
	t.Helper()
	conn, events, err := zk.Connect(servers, 4*time.Second, zk.WithLogInfo(false), zk.WithLogger(quietLogger{}))
	if err != nil {
		t.Fatalf("zk.Connect: %v", err)
	}
	for {
		select {
		case ev := <-events:
			if ev.State == zk.StateHasSession {
				return conn
			}
		case <-ctx.Done():
			conn.Close()
			t.Fatalf("no ZooKeeper session with %v: %v", servers, ctx.Err())
		}
	}
}

// whoHas logs, after a failure, which servers hold path, each one's
// mode and last zxid, and what each one's log says of how it synced
// with its leader.
func whoHas(ctx context.Context, t *testing.T, e *Ensemble, path string) {
	t.Helper()
	for i, addr := range e.Servers() {
		srvr, err := FourLetterWord(ctx, addr, "srvr")
		var state []string
		for _, line := range strings.Split(srvr, "\n") {
			if strings.HasPrefix(line, "Zxid:") || strings.HasPrefix(line, "Mode:") {
				state = append(state, strings.TrimSpace(line))
			}
		}
		has := "unknown"
		if c, _, cerr := zk.Connect([]string{addr}, 4*time.Second, zk.WithLogInfo(false), zk.WithLogger(quietLogger{})); cerr == nil {
			if _, serr := c.Sync(path); serr != nil {
				has = fmt.Sprintf("sync: %v", serr)
			} else {
				ok, _, xerr := c.Exists(path)
				has = fmt.Sprintf("%v, %v", ok, xerr)
			}
			c.Close()
		}
		t.Logf("server %d (%s): exists(%s) = %s; %v (srvr: %v)", i, addr, path, has, state, err)
		data, _ := os.ReadFile(e.LogFile(i))
		for _, line := range strings.Split(string(data), "\n") {
			// How it synchronised, and what it warned of: a server that
			// dropped a transaction it was sent may have said so.
			for _, s := range []string{"LEADER ELECTION TOOK", "Getting a diff", "Getting a snapshot", "Truncating log", "Synchronizing with Learner", "Sending DIFF", "Sending SNAP", "Sending TRUNC", "WARN", "ERROR"} {
				if strings.Contains(line, s) {
					t.Logf("  server %d log: %s", i, line)
					break
				}
			}
		}
	}
}

type quietLogger struct{}

func (quietLogger) Printf(string, ...any) {}

func TestStandalone(t *testing.T) {
	SkipIfUnavailable(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	start := time.Now()
	e, err := Start(ctx, DefaultConfig())
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Logf("standalone server serving after %v", time.Since(start).Round(time.Millisecond))
	defer e.Close()
	dir, ps := e.Dir(), pids(e)

	servers := e.Servers()
	if len(servers) != 1 || !strings.HasPrefix(servers[0], "127.0.0.1:") || e.Size() != 1 {
		t.Fatalf("Servers() = %v, Size() = %d; want one loopback address", servers, e.Size())
	}
	if got, err := FourLetterWord(ctx, servers[0], "ruok"); err != nil || got != "imok" {
		t.Fatalf("ruok = %q, %v; want imok", got, err)
	}
	if mode, err := e.Mode(ctx, 0); err != nil || mode != "standalone" {
		t.Fatalf("Mode = %q, %v; want standalone", mode, err)
	}
	if l, err := e.Leader(ctx); err != nil || l != 0 {
		t.Fatalf("Leader = %d, %v; want 0", l, err)
	}
	mntr, err := FourLetterWord(ctx, servers[0], "mntr")
	if err != nil || !strings.Contains(mntr, "zk_server_state\tstandalone") {
		t.Fatalf("mntr = %q, %v", mntr, err)
	}
	if _, err := FourLetterWord(ctx, servers[0], "toolong"); err == nil {
		t.Fatal("FourLetterWord accepted a seven-letter word")
	}

	conn := connect(ctx, t, servers)
	if _, err := conn.Create("/kv", []byte("v1"), 0, zk.WorldACL(zk.PermAll)); err != nil {
		t.Fatalf("create: %v", err)
	}
	data, _, err := conn.Get("/kv")
	if err != nil || string(data) != "v1" {
		t.Fatalf("get = %q, %v; want v1", data, err)
	}
	// The 200 ms tick caps sessions at 4 s.
	if _, maxTimeout := DefaultConfig().SessionTimeouts(); maxTimeout != 4*time.Second {
		t.Fatalf("max session timeout %v, want 4s", maxTimeout)
	}
	conn.Close()

	logData, err := os.ReadFile(e.LogFile(0))
	if err != nil || !strings.Contains(string(logData), "ZooKeeperServer") {
		t.Errorf("log file %s has no ZooKeeper log (%v):\n%s", e.LogFile(0), err, logData)
	}

	if err := e.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := e.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temp dir %s still there after Close (stat: %v)", dir, err)
	}
	checkGone(t, ps)
	if err := e.Stop(0); !errors.Is(err, ErrClosed) {
		t.Errorf("Stop after Close = %v, want ErrClosed", err)
	}
	if err := e.Restart(ctx, 0); !errors.Is(err, ErrClosed) {
		t.Errorf("Restart after Close = %v, want ErrClosed", err)
	}
}

func TestEnsembleSurvivesLeaderCrash(t *testing.T) {
	SkipIfUnavailable(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	start := time.Now()
	e, err := StartEnsemble(ctx, DefaultConfig(), 3)
	if err != nil {
		t.Fatalf("StartEnsemble: %v", err)
	}
	t.Logf("3-server ensemble serving after %v", time.Since(start).Round(time.Millisecond))
	defer e.Close()
	dir, ps := e.Dir(), pids(e)
	servers := e.Servers()
	if len(servers) != 3 || len(ps) != 3 {
		t.Fatalf("Servers() = %v, %d JVMs; want 3", servers, len(ps))
	}
	modes := map[string]int{}
	for i := range servers {
		mode, err := e.Mode(ctx, i)
		if err != nil {
			t.Fatalf("Mode(%d): %v", i, err)
		}
		modes[mode]++
	}
	if modes["leader"] != 1 || modes["follower"] != 2 {
		t.Fatalf("modes %v, want one leader and two followers", modes)
	}

	conn := connect(ctx, t, servers)
	defer conn.Close()
	if _, err := conn.Create("/before", []byte("1"), 0, zk.WorldACL(zk.PermAll)); err != nil {
		t.Fatalf("create /before: %v", err)
	}

	// Crash the leader: the other two elect a new one and keep serving.
	leader, err := e.Leader(ctx)
	if err != nil {
		t.Fatalf("Leader: %v", err)
	}
	if err := e.Stop(leader); err != nil {
		t.Fatalf("Stop(%d): %v", leader, err)
	}
	if e.Running(leader) {
		t.Fatalf("server %d still running after Stop", leader)
	}
	if err := e.Stop(leader); err != nil {
		t.Fatalf("second Stop(%d): %v", leader, err)
	}
	stopped := time.Now()
	if err := e.WaitServing(ctx); err != nil {
		t.Fatalf("WaitServing after killing the leader: %v", err)
	}
	t.Logf("new leader elected after %v", time.Since(stopped).Round(time.Millisecond))
	if l, err := e.Leader(ctx); err != nil || l == leader {
		t.Fatalf("Leader after crash = %d, %v; want another server than %d", l, err, leader)
	}
	if _, err := conn.Create("/during", []byte("2"), 0, zk.WorldACL(zk.PermAll)); err != nil {
		t.Fatalf("create /during with server %d down: %v", leader, err)
	}

	// A second crash leaves no quorum: WaitServing says so at once.
	other := (leader + 1) % 3
	if err := e.Stop(other); err != nil {
		t.Fatalf("Stop(%d): %v", other, err)
	}
	if err := e.WaitServing(ctx); err == nil || !strings.Contains(err.Error(), "quorum") {
		t.Fatalf("WaitServing with 1 of 3 running = %v, want a no-quorum error", err)
	}

	// Restart both: the old leader rejoins with the write it missed.
	for _, i := range []int{leader, other} {
		if err := e.Restart(ctx, i); err != nil {
			t.Fatalf("Restart(%d): %v", i, err)
		}
	}
	if err := e.WaitServing(ctx); err != nil {
		t.Fatalf("WaitServing after Restart: %v", err)
	}
	if got := e.Servers()[leader]; got != servers[leader] {
		t.Fatalf("server %d moved from %s to %s", leader, servers[leader], got)
	}
	solo := connect(ctx, t, []string{servers[leader]})
	defer solo.Close()
	// A sync first, then the reads; retried within a deadline, since a
	// sync on a server that has just rejoined was once seen (on a
	// heavily loaded machine) to return before the server had the
	// write it missed. Not explained; ZooKeeper's sync is not a quorum
	// operation (ZOOKEEPER-1675), and zkcoord reads after a sync too.
	err = soon.Within(10*time.Second, func() error {
		if _, err := solo.Sync("/during"); err != nil {
			return fmt.Errorf("sync on restarted server: %w", err)
		}
		for _, p := range []string{"/before", "/during"} {
			if ok, _, err := solo.Exists(p); err != nil || !ok {
				return fmt.Errorf("restarted server %d: exists(%s) = %v, %v", leader, p, ok, err)
			}
		}
		return nil
	})
	if err != nil {
		whoHas(ctx, t, e, "/during")
		t.Fatal(err)
	}
	solo.Close()
	conn.Close()

	ps = append(ps, pids(e)...)
	if err := e.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temp dir %s still there after Close (stat: %v)", dir, err)
	}
	checkGone(t, ps)
}

func TestGivenDirIsKept(t *testing.T) {
	SkipIfUnavailable(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := DefaultConfig()
	cfg.Dir = filepath.Join(t.TempDir(), "zk")
	cfg.ForceSync = false
	e, err := Start(ctx, cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	if err := e.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for _, f := range []string{"zk1/zoo.cfg", "zk1/zookeeper.log", "zk1/data/version-2"} {
		if _, err := os.Stat(filepath.Join(cfg.Dir, f)); err != nil {
			t.Errorf("given dir not kept: %v", err)
		}
	}
}

func TestFailedStartLeavesNothing(t *testing.T) {
	SkipIfUnavailable(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp) // where Start makes its temporary directory
	cfg := DefaultConfig()
	cfg.MaxHeapMB = 1 << 30 // a petabyte: the JVMs refuse to start
	_, err := StartEnsemble(ctx, cfg, 3)
	var xe *exitedError
	if !errors.As(err, &xe) {
		t.Fatalf("StartEnsemble = %v, want a server-exited error", err)
	}
	if !strings.Contains(err.Error(), "heap") {
		t.Errorf("error does not quote the JVM's complaint: %v", err)
	}
	if ctx.Err() != nil {
		t.Errorf("StartEnsemble waited for the context despite the exited JVM")
	}
	if left, _ := os.ReadDir(tmp); len(left) > 0 {
		t.Errorf("failed StartEnsemble left %v in %s", left, tmp)
	}
}

// TestTakenPortIsDetected checks that a server that cannot bind its client
// port is reported as such, so StartEnsemble retries on other ports.
func TestTakenPortIsDetected(t *testing.T) {
	SkipIfUnavailable(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ports, err := freePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	java, err := javaPath()
	if err != nil {
		t.Fatal(err)
	}
	taken := l.Addr().(*net.TCPAddr).Port
	// The listener accepts but never answers, so probes of the port hang
	// until the JVM's exit cuts them short.
	_, err = startOnce(ctx, DefaultConfig(), java, t.TempDir(), []int{taken, ports[0], ports[1]})
	var xe *exitedError
	if !errors.As(err, &xe) || !xe.portTaken {
		t.Fatalf("start on a taken client port: %v; want an exited server with portTaken", err)
	}
}

func TestStartTimeoutQuotesLog(t *testing.T) {
	SkipIfUnavailable(t)
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	// Too short for a JVM to start.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := Start(ctx, DefaultConfig())
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Start = %v, want context.DeadlineExceeded", err)
	}
	if !strings.Contains(err.Error(), "zookeeper.log") {
		t.Errorf("error does not quote the server log: %v", err)
	}
	if left, _ := os.ReadDir(tmp); len(left) > 0 {
		t.Errorf("failed Start left %v in %s", left, tmp)
	}
}

func TestStartCanceled(t *testing.T) {
	SkipIfUnavailable(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	e, err := Start(ctx, DefaultConfig())
	if err == nil {
		e.Close()
		t.Fatal("Start with a canceled context succeeded")
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Start: %v, want context.Canceled", err)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		mutate func(*Config)
		field  string
	}{
		{func(c *Config) { c.TickTime = 0 }, "TickTime"},
		{func(c *Config) { c.TickTime = 1500 * time.Microsecond }, "TickTime"},
		{func(c *Config) { c.InitLimit = 0 }, "InitLimit"},
		{func(c *Config) { c.SyncLimit = 0 }, "SyncLimit"},
		{func(c *Config) { c.MaxHeapMB = 16 }, "MaxHeapMB"},
	} {
		cfg := DefaultConfig()
		tc.mutate(&cfg)
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("Validate(%+v) = %v, want an error naming %s", cfg, err, tc.field)
		}
		if _, err := Start(context.Background(), cfg); err == nil {
			t.Errorf("Start accepted invalid config %+v", cfg)
		}
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("DefaultConfig().Validate() = %v", err)
	}
	if _, err := StartEnsemble(context.Background(), DefaultConfig(), 0); err == nil {
		t.Error("StartEnsemble accepted 0 servers")
	}
}

// fakeTB records what skipOrFail does with it.
type fakeTB struct {
	testing.TB
	skipped, failed string
}

func (f *fakeTB) Helper()                        {}
func (f *fakeTB) Skip(args ...any)               { f.skipped = fmt.Sprint(args...) }
func (f *fakeTB) Fatalf(format string, a ...any) { f.failed = fmt.Sprintf(format, a...) }

func TestSkipOrFail(t *testing.T) {
	missing := errors.New("zkserver: ZooKeeper is not installed (install the Debian package: apt-get install zookeeper)")
	var f fakeTB
	skipOrFail(&f, nil, true)
	if f.skipped != "" || f.failed != "" {
		t.Fatalf("available: skipped %q, failed %q", f.skipped, f.failed)
	}
	f = fakeTB{}
	skipOrFail(&f, missing, false)
	if !strings.Contains(f.skipped, "apt-get install zookeeper") || f.failed != "" {
		t.Fatalf("unavailable: skipped %q, failed %q", f.skipped, f.failed)
	}
	f = fakeTB{}
	skipOrFail(&f, missing, true)
	if f.skipped != "" || !strings.Contains(f.failed, "apt-get install zookeeper") || !strings.Contains(f.failed, RequireEnv) {
		t.Fatalf("required: skipped %q, failed %q", f.skipped, f.failed)
	}
	if err := Available(); err != nil {
		t.Logf("Available: %v", err)
	}
}

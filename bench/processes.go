package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kvstore/kvstore/client"
)

// ProcessOptions configures NewProcesses.
type ProcessOptions struct {
	// Binary is the kvstore executable that runs the coordinator and the
	// nodes (`kvstore coordinator`, `kvstore node`).
	Binary string
	// Nodes is the number of node processes; 0 means 3.
	Nodes int
	// Durability is Memory, Fsync or NoFsync ("" means Memory): the nodes'
	// --data-dir and --no-fsync.
	Durability string
}

// processes is KVStore as its users run it: one coordinator process (a
// single etcd member, `kvstore coordinator`) and Nodes `kvstore node`
// processes on loopback, driven through the Go client over gRPC.
type processes struct {
	*endpoints
	mode  string
	dir   string      // the processes' data and logs (removed on Close)
	coord *exec.Cmd   // the coordinator
	nodes []*exec.Cmd // the nodes, in start order
}

// processStopWait bounds how long Close waits for a process to exit after
// SIGTERM before it kills it.
const processStopWait = 15 * time.Second

// NewProcesses starts a KVStore cluster of node processes (see
// ProcessOptions) and returns it as a Target named "kvstore (network)",
// with the durability mode in the name unless it is Memory. It waits until
// every node serves and is a voter. Close stops the processes and removes
// their data; a process's log is kept in its error when it fails to start.
func NewProcesses(ctx context.Context, opts ProcessOptions) (_ Target, err error) {
	if opts.Nodes <= 0 {
		opts.Nodes = 3
	}
	if opts.Binary == "" {
		return nil, errors.New("bench: network target: no kvstore binary")
	}
	t := &processes{mode: opts.Durability}
	switch opts.Durability {
	case "":
		t.mode = Memory
	case Memory, Fsync, NoFsync:
	default:
		return nil, fmt.Errorf("bench: durability %q: want one of %v", opts.Durability, Durabilities)
	}
	if t.dir, err = os.MkdirTemp("", "kvstore-bench-net-"); err != nil {
		return nil, fmt.Errorf("bench: network target: %w", err)
	}
	defer func() {
		if err != nil {
			_ = t.Close()
		}
	}()
	ports, err := pickLoopbackPorts(2 + opts.Nodes)
	if err != nil {
		return nil, fmt.Errorf("bench: network target: pick ports: %w", err)
	}
	etcdAddr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	if t.coord, err = t.start("coordinator", opts.Binary, "coordinator", "--name", "bench",
		"--data-dir", filepath.Join(t.dir, "coordinator"),
		"--listen-client-urls", "http://"+etcdAddr,
		"--listen-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", ports[1])); err != nil {
		return nil, err
	}
	addrs := make([]string, opts.Nodes)
	for i := range addrs {
		addrs[i] = fmt.Sprintf("127.0.0.1:%d", ports[2+i])
		id := fmt.Sprintf("bench%d", i)
		args := []string{"node", "--id", id, "--cluster", "bench", "--listen", addrs[i], "--etcd", etcdAddr, "--log-level", "warn"}
		if t.mode != Memory {
			args = append(args, "--data-dir", filepath.Join(t.dir, id))
		}
		if t.mode == NoFsync {
			args = append(args, "--no-fsync")
		}
		n, err := t.start(id, opts.Binary, args...)
		if err != nil {
			return nil, err
		}
		t.nodes = append(t.nodes, n)
		// The first node bootstraps the cluster: the others join once it
		// leads.
		if i == 0 {
			if err := t.waitVoters(ctx, addrs[:1], 1); err != nil {
				return nil, err
			}
		}
	}
	if err := t.waitVoters(ctx, addrs, opts.Nodes); err != nil {
		return nil, err
	}
	ep, err := NewEndpoints(addrs, nil)
	if err != nil {
		return nil, err
	}
	t.endpoints = ep.(*endpoints)
	return t, nil
}

// start starts one process, its output going to <dir>/<name>.log.
func (t *processes) start(name, bin string, args ...string) (*exec.Cmd, error) {
	logf, err := os.Create(filepath.Join(t.dir, name+".log"))
	if err != nil {
		return nil, fmt.Errorf("bench: network target: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, args...)
	cmd.Env = childEnv()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: network target: start %s: %w", name, err)
	}
	return cmd, nil
}

// waitVoters waits until every node at addrs serves and reports want
// voters, or ctx ends (the error then carries the processes' logs' ends).
func (t *processes) waitVoters(ctx context.Context, addrs []string, want int) error {
	var last error
	for _, addr := range addrs {
		c, err := client.New(client.Config{Endpoints: []string{addr}, Timeout: time.Second, DialTimeout: time.Second})
		if err != nil {
			return fmt.Errorf("bench: network target: %w", err)
		}
		for {
			actx, cancel := context.WithTimeout(ctx, time.Second)
			st, err := c.Status(actx)
			cancel()
			switch {
			case err != nil:
				last = err
			case st.State != "ok" || st.Leader == "":
				last = fmt.Errorf("node %s: state %s, leader %q", st.ID, st.State, st.Leader)
			case len(st.Voters) != want:
				last = fmt.Errorf("node %s: voters %v, want %d", st.ID, st.Voters, want)
			default:
				last = nil
			}
			if last == nil {
				break
			}
			select {
			case <-ctx.Done():
				_ = c.Close()
				return fmt.Errorf("bench: network target: nodes did not start: %w (logs in %s)\n%s", last, t.dir, t.logTails())
			case <-time.After(50 * time.Millisecond):
			}
		}
		_ = c.Close()
	}
	return nil
}

// childEnv is this process's environment without the KVSTORE_ variables,
// which would set the started processes' flags.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KVSTORE_") {
			env = append(env, kv)
		}
	}
	return env
}

// logTails is the last lines of every process's log.
func (t *processes) logTails() string {
	var b strings.Builder
	logs, _ := filepath.Glob(filepath.Join(t.dir, "*.log"))
	for _, l := range logs {
		data, _ := os.ReadFile(l)
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		fmt.Fprintf(&b, "== %s\n%s\n", filepath.Base(l), strings.Join(lines[max(0, len(lines)-10):], "\n"))
	}
	return b.String()
}

func (t *processes) Name() string {
	switch t.mode {
	case Fsync:
		return "kvstore (network, fsync)"
	case NoFsync:
		return "kvstore (network, no fsync)"
	}
	return "kvstore (network)"
}

// NodeRSS is each node process's resident set size, in bytes.
func (t *processes) NodeRSS() ([]uint64, error) {
	var out []uint64
	for _, n := range t.nodes {
		rss, err := processRSS(n.Process.Pid)
		if err != nil {
			return nil, err
		}
		out = append(out, rss)
	}
	return out, nil
}

// processRSS reads a process's resident set size from /proc (Linux).
func processRSS(pid int) (uint64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("bench: resident memory of process %d: %w", pid, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			f := strings.Fields(rest) // "123456 kB"
			if len(f) == 2 && f[1] == "kB" {
				kb, err := strconv.ParseUint(f[0], 10, 64)
				if err == nil {
					return kb << 10, nil
				}
			}
		}
	}
	return 0, fmt.Errorf("bench: resident memory of process %d: no VmRSS line", pid)
}

// Close stops the nodes (SIGTERM, then SIGKILL after processStopWait),
// then the coordinator, and removes the data.
func (t *processes) Close() error {
	var errs []error
	if t.endpoints != nil {
		errs = append(errs, t.endpoints.Close())
	}
	stop := func(cmd *exec.Cmd) {
		if cmd == nil {
			return
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(processStopWait):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	done := make(chan struct{}, len(t.nodes))
	for _, n := range t.nodes {
		go func() { stop(n); done <- struct{}{} }()
	}
	for range t.nodes {
		<-done
	}
	stop(t.coord)
	if t.dir != "" {
		errs = append(errs, os.RemoveAll(t.dir))
	}
	return errors.Join(errs...)
}

package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// etcdMember is one member of a peer etcd cluster: in this process
// (etcdembed.Server) or a process of its own (etcdProcess).
type etcdMember interface {
	ClientURL() string
	ClientURLs() []string
	Close() error
}

// etcdProcess is an etcd member run as `kvstore coordinator` (etcd's
// server, embedded in the kvstore binary, with etcd's default raft timing
// and fsync), so that its memory can be measured apart from the
// benchmark's.
type etcdProcess struct {
	cmd       *exec.Cmd
	clientURL string
	dir       string
	exited    chan struct{}
	err       error // cmd.Wait's, once exited is closed
}

func (p *etcdProcess) ClientURL() string    { return p.clientURL }
func (p *etcdProcess) ClientURLs() []string { return []string{p.clientURL} }

// PID is the member's process id.
func (p *etcdProcess) PID() int { return p.cmd.Process.Pid }

// Close stops the member (SIGTERM, SIGKILL after processStopWait) and
// removes its data.
func (p *etcdProcess) Close() error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(processStopWait):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
	return os.RemoveAll(p.dir)
}

// startEtcdProcessesOnce starts an n-member etcd cluster of `bin
// coordinator` processes on freshly picked loopback ports and waits until
// it answers a linearizable read.
func startEtcdProcessesOnce(ctx context.Context, n int, bin string) ([]etcdMember, error) {
	ports, err := pickLoopbackPorts(2 * n)
	if err != nil {
		return nil, fmt.Errorf("pick ports: %w", err)
	}
	initial := make([]string, n)
	for i := range n {
		initial[i] = fmt.Sprintf("bench%d=http://127.0.0.1:%d", i, ports[2*i+1])
	}
	token := fmt.Sprintf("kvstore-bench-%d", time.Now().UnixNano())
	members := make([]etcdMember, 0, n)
	fail := func(err error) ([]etcdMember, error) {
		for _, m := range members {
			_ = m.Close()
		}
		return nil, err
	}
	for i := range n {
		dir, err := os.MkdirTemp("", "kvstore-bench-etcd-")
		if err != nil {
			return fail(err)
		}
		logf, err := os.Create(filepath.Join(dir, "log"))
		if err != nil {
			return fail(err)
		}
		cmd := exec.Command(bin, "coordinator", "--name", fmt.Sprintf("bench%d", i),
			"--data-dir", filepath.Join(dir, "data"),
			"--listen-client-urls", fmt.Sprintf("http://127.0.0.1:%d", ports[2*i]),
			"--listen-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1]),
			"--initial-cluster", strings.Join(initial, ","),
			"--initial-cluster-token", token,
			"--heartbeat-interval", fmt.Sprint(etcdHeartbeat.Milliseconds()),
			"--election-timeout", fmt.Sprint(etcdElection.Milliseconds()),
			"--log-level", "warn")
		cmd.Env = childEnv()
		cmd.Stdout, cmd.Stderr = logf, logf
		err = cmd.Start()
		logf.Close()
		if err != nil {
			return fail(fmt.Errorf("start etcd member %d: %w", i, err))
		}
		p := &etcdProcess{cmd: cmd, clientURL: fmt.Sprintf("http://127.0.0.1:%d", ports[2*i]), dir: dir, exited: make(chan struct{})}
		go func() { p.err = cmd.Wait(); close(p.exited) }()
		members = append(members, p)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: members[0].ClientURLs(), DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return fail(err)
	}
	defer cli.Close()
	for {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := cli.Get(rctx, "bench-ready")
		cancel()
		if err == nil {
			return members, nil
		}
		for i, m := range members {
			select {
			case <-m.(*etcdProcess).exited:
				log, _ := os.ReadFile(filepath.Join(m.(*etcdProcess).dir, "log"))
				return fail(fmt.Errorf("etcd member %d exited (%v): %s", i, m.(*etcdProcess).err, log))
			default:
			}
		}
		select {
		case <-ctx.Done():
			return fail(fmt.Errorf("etcd processes did not answer: %w", errors.Join(err, ctx.Err())))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// NodeRSS is each member's resident set size, in bytes, when the members
// are processes of their own (PeerOptions.Binary); an error otherwise.
func (t *etcdTarget) NodeRSS() ([]uint64, error) {
	var out []uint64
	for _, m := range t.c.members {
		p, ok := m.(*etcdProcess)
		if !ok {
			return nil, errors.New("bench: etcd runs in this process: no memory of its own to report (set PeerOptions.Binary)")
		}
		rss, err := processRSS(p.PID())
		if err != nil {
			return nil, err
		}
		out = append(out, rss)
	}
	return out, nil
}

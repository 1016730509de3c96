package shell

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvstore/kvstore/internal/soon"
	"github.com/kvstore/kvstore/internal/syncbuf"
	"github.com/kvstore/kvstore/internal/transcript"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the golden transcripts in testdata/")

// fakeBackend is the in-memory twin of a cluster: one map, numbered nodes
// with fault flags that make operations fail the way a real node does. Its
// output matches the real cluster's (TestFakeMatchesTranscript runs the
// binary's end-to-end transcript against it), except where the real one
// depends on timing: faults act at once (a real node notices zk-down and
// zk-up within a moment; a restarted node shows "recovering" for a moment),
// and when the leader is killed or cut off the lowest-numbered healthy node
// leads at once, in the next epoch (real nodes elect whichever wins, after
// the old leader's session TTL).
type fakeBackend struct {
	mu     sync.Mutex
	data   map[string]string
	nodes  []*fakeNode
	leader int // -1: none
	epoch  int64
}

type fakeNode struct {
	rmiDown, zkDown, killed, removed bool
}

func newFake() *fakeBackend {
	return &fakeBackend{data: map[string]string{}, nodes: []*fakeNode{{}}, epoch: 1}
}

func (f *fakeBackend) node(n int) (*fakeNode, error) {
	if n >= len(f.nodes) {
		return nil, fmt.Errorf("cluster: no such node %d", n)
	}
	nd := f.nodes[n]
	switch {
	case nd.killed:
		return nil, fmt.Errorf("cluster: node %d is killed", n)
	case nd.removed:
		return nil, fmt.Errorf("node n%d: kvstore: node stopped: kvstore: node removed from the cluster", n)
	case nd.zkDown:
		return nil, fmt.Errorf("node n%d: kvstore: node is partitioned from the coordinator", n)
	}
	return nd, nil
}

// elect moves leadership to the lowest-numbered healthy node if the leader
// is killed or cut off (or there is none), in the next epoch.
func (f *fakeBackend) elect() {
	if f.leader >= 0 {
		if l := f.nodes[f.leader]; !l.killed && !l.zkDown {
			return
		}
	}
	f.leader = -1
	for i, nd := range f.nodes {
		if !nd.killed && !nd.zkDown {
			f.leader = i
			f.epoch++
			return
		}
	}
}

func (f *fakeBackend) Get(_ context.Context, n int, key string) (string, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.node(n); err != nil {
		return "", false, err
	}
	v, ok := f.data[key]
	return v, ok, nil
}

func (f *fakeBackend) Put(_ context.Context, n int, key, value string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.node(n); err != nil {
		return err
	}
	f.data[key] = value
	return nil
}

func (f *fakeBackend) Delete(_ context.Context, n int, key string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.node(n); err != nil {
		return err
	}
	delete(f.data, key)
	return nil
}

func (f *fakeBackend) List() []NodeInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []NodeInfo
	for i, nd := range f.nodes {
		info := NodeInfo{Num: i, ID: fmt.Sprint("n", i), Addr: fmt.Sprintf("127.0.0.1:%d", 7000+i), Role: "follower", State: "ok"}
		if i == f.leader {
			info.Role = "leader"
		}
		var st []string
		if nd.zkDown {
			st = append(st, "zk-down")
		}
		if nd.rmiDown {
			st = append(st, "rmi-down")
		}
		if nd.zkDown {
			st = append(st, "suspended") // as a real node, once it noticed
		}
		if nd.killed {
			info.Addr, st = "-", []string{"stopped"}
		}
		if nd.removed {
			st = []string{"removed"}
		}
		if len(st) > 0 {
			info.State = strings.Join(st, ",")
		}
		out = append(out, info)
	}
	return out
}

func (f *fakeBackend) NewNode(context.Context) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nodes = append(f.nodes, &fakeNode{})
	f.elect()
	return len(f.nodes) - 1, nil
}

// set applies fn to node n; fn's error, if any, is returned.
func (f *fakeBackend) set(n int, fn func(*fakeNode) error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n >= len(f.nodes) {
		return fmt.Errorf("cluster: no such node %d", n)
	}
	if err := fn(f.nodes[n]); err != nil {
		return err
	}
	f.elect()
	return nil
}

func (f *fakeBackend) RmiDown(n int) error {
	return f.set(n, func(x *fakeNode) error { x.rmiDown = true; return nil })
}

func (f *fakeBackend) RmiUp(n int) error {
	return f.set(n, func(x *fakeNode) error { x.rmiDown = false; return nil })
}

func (f *fakeBackend) ZkDown(n int) error {
	return f.set(n, func(x *fakeNode) error { x.zkDown = true; return nil })
}

func (f *fakeBackend) ZkUp(n int) error {
	return f.set(n, func(x *fakeNode) error { x.zkDown = false; return nil })
}

func (f *fakeBackend) Kill(n int) error {
	return f.set(n, func(x *fakeNode) error {
		if x.killed {
			return fmt.Errorf("cluster: node %d is already killed", n)
		}
		x.killed = true
		return nil
	})
}

func (f *fakeBackend) Restart(_ context.Context, n int) error {
	return f.set(n, func(x *fakeNode) error {
		if !x.killed && !x.removed {
			return fmt.Errorf("cluster: node %d is running (kill it first)", n)
		}
		x.killed, x.removed = false, false
		return nil
	})
}

// Remove removes node n; the fake has no voter record, so it only refuses
// the leader and a node that is not running, as the real one does.
func (f *fakeBackend) Remove(_ context.Context, n int) error {
	return f.set(n, func(x *fakeNode) error {
		if n == f.leader {
			return fmt.Errorf("node n%d (leader, epoch %d): remove n%d: kvstore: the leader cannot remove itself: n%d leads; stop it or make it resign, then remove it through the next leader", n, f.epoch, n, n)
		}
		x.removed = true
		return nil
	})
}

func (f *fakeBackend) Leader(context.Context) (int, int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.leader < 0 {
		return -1, 0, fmt.Errorf("cluster: no serving leader: %w", context.DeadlineExceeded)
	}
	return f.leader, f.epoch, nil
}

// TestFakeMatchesTranscript runs the binary's end-to-end transcript
// (../cmd/kvstore/testdata/shell-transcript.in, which TestShellTranscript
// there runs against a real cluster) against the fake backend and compares
// the output with the same golden files, so the fake answers as the real
// cluster does. Each "until <line> | <command>" must hold at once here.
func TestFakeMatchesTranscript(t *testing.T) {
	const base = "../cmd/kvstore/testdata/shell-transcript"
	raw, err := os.ReadFile(base + ".in")
	if err != nil {
		t.Fatal(err)
	}
	b := newFake()
	var stdout, stderr bytes.Buffer
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		until := ""
		if rest, ok := strings.CutPrefix(line, "until "); ok {
			until, line, _ = strings.Cut(rest, " | ")
		}
		var out, errOut bytes.Buffer
		if err := Run(context.Background(), b, Config{In: strings.NewReader(line + "\n"), Out: &out, Err: &errOut}); err != nil {
			t.Fatal(err)
		}
		if until != "" && (errOut.Len() > 0 || !strings.Contains("\n"+normalize(out.String()), "\n"+until+"\n")) {
			t.Errorf("%q answered %q, %q; want the line %q at once", line, out.String(), errOut.String(), until)
		}
		stdout.WriteString(normalize(out.String()))
		stderr.WriteString(normalize(errOut.String()))
		if line == "quit" {
			break
		}
	}
	for _, f := range []struct{ path, got string }{{base + ".stdout", stdout.String()}, {base + ".stderr", stderr.String()}} {
		want, err := os.ReadFile(f.path)
		if err != nil {
			t.Fatal(err)
		}
		if f.got != string(want) {
			t.Errorf("the fake's output differs from the real cluster's %s\n--- fake ---\n%s--- real ---\n%s", f.path, f.got, want)
		}
	}
}

// normalize replaces what differs from run to run (transcript.Normalize).
var normalize = transcript.Normalize

// TestGolden runs every testdata/*.txt transcript. A transcript has a
// "-- in --" section (the script) and an "-- out --" section (standard
// output and standard error, interleaved as written). Regenerate with
// `go test ./shell -rewrite` and review the diff.
func TestGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.txt")
	if len(files) == 0 {
		t.Fatal("no transcripts in testdata/")
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			in, want, ok := strings.Cut(string(raw), "-- out --\n")
			if !ok || !strings.HasPrefix(in, "-- in --\n") {
				t.Fatalf("%s: want sections '-- in --' and '-- out --'", path)
			}
			in = strings.TrimPrefix(in, "-- in --\n")
			var out bytes.Buffer
			err = Run(context.Background(), newFake(), Config{In: strings.NewReader(in), Out: &out, Err: &out})
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if *rewrite {
				if err := os.WriteFile(path, []byte("-- in --\n"+in+"-- out --\n"+out.String()), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if got := out.String(); got != want {
				t.Errorf("%s: output differs\n--- got ---\n%s--- want ---\n%s", path, got, want)
			}
		})
	}
}

func TestNoPromptOffATerminal(t *testing.T) {
	var out, errOut bytes.Buffer
	err := Run(context.Background(), newFake(), Config{In: strings.NewReader("put 0 a 1\nget 0 a\n"), Out: &out, Err: &errOut})
	if err != nil {
		t.Fatal(err)
	}
	if out.String() != "OK\n1\n" || errOut.Len() != 0 {
		t.Fatalf("stdout %q stderr %q, want exactly \"OK\\n1\\n\" and nothing", out.String(), errOut.String())
	}
}

func TestErrorsGoToStderrOnOneLine(t *testing.T) {
	var out, errOut bytes.Buffer
	b := &multiLineErr{fakeBackend: newFake()}
	err := Run(context.Background(), b, Config{In: strings.NewReader("get 0 a\nput 0 a 1\n"), Out: &out, Err: &errOut})
	if err != nil {
		t.Fatal(err)
	}
	if errOut.String() != "error: first line second line\n" || out.String() != "OK\n" {
		t.Fatalf("stdout %q stderr %q", out.String(), errOut.String())
	}
}

type multiLineErr struct{ *fakeBackend }

func (m *multiLineErr) Get(context.Context, int, string) (string, bool, error) {
	return "", false, errors.New("first line\nsecond line")
}

func TestRunReturnsWhenContextEnds(t *testing.T) {
	pr, pw := io.Pipe()
	defer pw.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var out bytes.Buffer
	go func() { done <- Run(ctx, newFake(), Config{In: pr, Out: &out, Err: &out}) }()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context was canceled")
	}
}

func TestCommandTimeoutReachesBackend(t *testing.T) {
	var out bytes.Buffer
	b := &slowBackend{fakeBackend: newFake()}
	err := Run(context.Background(), b, Config{In: strings.NewReader("get 0 a\n"), Out: &out, Err: &out, CommandTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "error: ") || !strings.Contains(out.String(), "deadline") {
		t.Fatalf("output %q, want a deadline error", out.String())
	}
}

type slowBackend struct{ *fakeBackend }

func (s *slowBackend) Get(ctx context.Context, _ int, _ string) (string, bool, error) {
	<-ctx.Done()
	return "", false, ctx.Err()
}

func TestHelpListsEveryCommand(t *testing.T) {
	h := Help()
	var names []string
	for _, s := range specs {
		names = append(names, s.name)
		if !strings.Contains(h, s.name) {
			t.Errorf("help does not list %s", s.name)
		}
	}
	sort.Strings(names)
	want := []string{"delete", "get", "help", "kill", "leader", "list", "new-client", "put", "quit", "remove", "restart", "rmi-down", "rmi-up", "zk-down", "zk-up"}
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Fatalf("commands %v, want %v", names, want)
	}
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		line string
		want Command
		err  string
	}{
		{"put 0 k a  b ", Command{Name: "put", Node: 0, Key: "k", Value: "a  b "}, ""},
		{"  get 12 key\r\n", Command{Name: "get", Node: 12, Key: "key"}, ""},
		{"exit", Command{Name: "quit"}, ""},
		{"# comment", Command{}, ""},
		{"", Command{}, ""},
		{"put 0 k", Command{}, "usage: put <n> <key> <value>"},
		{"put 0 k ", Command{}, "usage: put <n> <key> <value>"},
		{"get -1 k", Command{}, "bad node number"},
		{"get 0 k extra", Command{}, "usage: get <n> <key>"},
		{"list now", Command{}, "usage: list"},
		{"frob", Command{}, "unknown command \"frob\""},
	} {
		got, err := Parse(tc.line)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Parse(%q) error %v, want %q", tc.line, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", tc.line, got, err, tc.want)
		}
	}
}

// TestStartTimeoutBoundsNewClient checks that new-client and restart, which
// start a node, are bounded by StartTimeout, not by the (shorter) command
// timeout meant for operations waiting on a leader.
func TestStartTimeoutBoundsNewClient(t *testing.T) {
	var out bytes.Buffer
	b := &slowStart{fakeBackend: newFake(), take: 200 * time.Millisecond}
	cfg := Config{In: strings.NewReader("new-client\nkill 1\nrestart 1\n"), Out: &out, Err: &out, CommandTimeout: 50 * time.Millisecond}
	if err := Run(context.Background(), b, cfg); err != nil {
		t.Fatal(err)
	}
	if out.String() != "1\nOK\nOK\n" {
		t.Fatalf("output %q, want new-client and restart to finish", out.String())
	}
	out.Reset()
	cfg.In, cfg.StartTimeout = strings.NewReader("new-client\n"), 60*time.Millisecond
	if err := Run(context.Background(), b, cfg); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "deadline") {
		t.Fatalf("output %q, want new-client to time out after StartTimeout", out.String())
	}
}

// slowStart takes its time starting nodes, within the context's deadline.
type slowStart struct {
	*fakeBackend
	take time.Duration
}

func (s *slowStart) wait(ctx context.Context) error {
	select {
	case <-time.After(s.take):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *slowStart) NewNode(ctx context.Context) (int, error) {
	if err := s.wait(ctx); err != nil {
		return 0, err
	}
	return s.fakeBackend.NewNode(ctx)
}

func (s *slowStart) Restart(ctx context.Context, n int) error {
	if err := s.wait(ctx); err != nil {
		return err
	}
	return s.fakeBackend.Restart(ctx, n)
}

// TestInterruptCancelsTheRunningCommand checks Ctrl-C on a terminal: a
// signal on Config.Interrupt while a command runs fails that command with
// "interrupted" and the shell goes on; one at the prompt ends the shell.
func TestInterruptCancelsTheRunningCommand(t *testing.T) {
	pr, pw := io.Pipe()
	defer pw.Close()
	intr := make(chan os.Signal, 1)
	out, errOut := &syncbuf.Buffer{}, &syncbuf.Buffer{}
	done := make(chan error, 1)
	b := &blockingBackend{fakeBackend: newFake(), started: make(chan struct{}, 1)}
	go func() { done <- Run(context.Background(), b, Config{In: pr, Out: out, Err: errOut, Interrupt: intr}) }()
	if _, err := io.WriteString(pw, "get 0 a\n"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-b.started:
	case <-time.After(10 * time.Second):
		t.Fatal("the get did not start")
	}
	intr <- os.Interrupt
	soon.Succeeds(t, 10*time.Second, func() error {
		if got := errOut.String(); got != "error: interrupted: context canceled\n" {
			return fmt.Errorf("stderr %q, want one error line saying interrupted", got)
		}
		return nil
	})
	// The shell goes on.
	if _, err := io.WriteString(pw, "put 0 a 1\n"); err != nil {
		t.Fatal(err)
	}
	soon.Succeeds(t, 10*time.Second, func() error {
		if got := out.String(); got != "OK\n" {
			return fmt.Errorf("stdout %q after the interrupt, want OK", got)
		}
		return nil
	})
	// At the prompt, an interrupt ends the shell.
	intr <- os.Interrupt
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after an interrupt at the prompt")
	}
}

// blockingBackend's Get says it started, then waits for its context.
type blockingBackend struct {
	*fakeBackend
	started chan struct{}
}

func (b *blockingBackend) Get(ctx context.Context, _ int, _ string) (string, bool, error) {
	b.started <- struct{}{}
	<-ctx.Done()
	return "", false, ctx.Err()
}

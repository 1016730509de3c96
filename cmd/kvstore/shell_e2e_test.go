package main

import (
	"flag"
	"fmt"
	"github.com/kvstore/kvstore/internal/transcript"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/shell-transcript.stdout and .stderr from this run")

// TestShellTranscript runs the real binary over testdata/shell-transcript.in,
// which uses every command, and compares its standard output and standard
// error, normalized, with the golden files beside it. Regenerate them with
// -update and review the diff. The shell package runs the same script
// against its fake backend (TestFakeMatchesTranscript), so the fake cannot
// drift from the real cluster's output.
func TestShellTranscript(t *testing.T) {
	const base = "testdata/shell-transcript"
	steps, err := readTranscript(base + ".in")
	if err != nil {
		t.Fatal(err)
	}
	bin := buildBinary(t)
	s := startShell(t, bin, nil)
	var stdout, stderr strings.Builder
	for _, st := range steps {
		var ans []outLine
		if st.until == "" {
			ans = s.ask(st.cmd)
		} else {
			ans = s.until(60*time.Second, st.cmd, func(ans []outLine) bool {
				return !hasStderr(ans) && strings.Contains("\n"+normalize(joinLines(ans)), "\n"+st.until+"\n")
			})
		}
		for _, l := range ans {
			if l.stderr {
				stderr.WriteString(normalize(l.text) + "\n")
			} else {
				stdout.WriteString(normalize(l.text) + "\n")
			}
		}
		if st.cmd == "quit" {
			s.wait(30 * time.Second)
			break
		}
	}
	for _, f := range []struct{ path, got string }{{base + ".stdout", stdout.String()}, {base + ".stderr", stderr.String()}} {
		if *update {
			if err := os.WriteFile(f.path, []byte(f.got), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(f.path)
		if err != nil {
			t.Fatal(err)
		}
		if f.got != string(want) {
			t.Errorf("%s differs (run with -update to accept)\n--- got ---\n%s--- want ---\n%s", f.path, f.got, want)
		}
	}
}

// transcriptStep is one line of a transcript script: a command, and for
// "until <line> | <command>" the line its answer must have.
type transcriptStep struct{ until, cmd string }

// readTranscript reads a transcript script, skipping blank and # lines.
func readTranscript(path string) ([]transcriptStep, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var steps []transcriptStep
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if rest, ok := strings.CutPrefix(line, "until "); ok {
			until, cmd, ok := strings.Cut(rest, " | ")
			if !ok {
				return nil, fmt.Errorf("%s: %q: want until <line> | <command>", path, line)
			}
			steps = append(steps, transcriptStep{until: until, cmd: cmd})
			continue
		}
		steps = append(steps, transcriptStep{cmd: line})
	}
	return steps, nil
}

// normalize replaces what differs from run to run (transcript.Normalize).
var normalize = transcript.Normalize

// TestShellWaitsOpTimeoutForALeader checks that a shell command that needs
// a leader waits --op-timeout for one, not longer, then prints one error
// line, and that the shell goes on. Killing the leader leaves the others
// without one until its session TTL ends, which is longer than the
// operation timeout here.
func TestShellWaitsOpTimeoutForALeader(t *testing.T) {
	const opTimeout, ttl = 2 * time.Second, 6 * time.Second
	const slack = 3 * time.Second
	bin := buildBinary(t)
	s := startShell(t, bin, nil, "--nodes", "3", "--op-timeout", opTimeout.String(), "--session-ttl", ttl.String())
	var leader int
	if _, err := fmt.Sscan(s.expectOut("leader", ""), &leader); err != nil {
		t.Fatal(err)
	}
	follower := (leader + 1) % 3
	s.expectOut("put "+strconv.Itoa(follower)+" k before", "OK")
	s.expectOut("kill "+strconv.Itoa(leader), "OK")
	killed := time.Now()

	start := time.Now()
	ans := s.ask("put " + strconv.Itoa(follower) + " k after")
	took := time.Since(start)
	t.Logf("put through node %d with no leader: %v: %q", follower, took.Round(time.Millisecond), ans)
	if len(ans) != 1 || !ans[0].stderr || !strings.HasPrefix(ans[0].text, "error: ") {
		t.Fatalf("put with no leader answered %q, want one error line on standard error", ans)
	}
	if msg := ans[0].text; !strings.Contains(msg, "leader") || !strings.Contains(msg, "timed out") {
		t.Fatalf("error %q does not say that no leader came before the timeout", msg)
	}
	if took < opTimeout-100*time.Millisecond || took > opTimeout+slack {
		t.Fatalf("put failed after %v, want about --op-timeout %v (at most %v)", took, opTimeout, opTimeout+slack)
	}

	// `leader` waits the same bound; once the dead leader's session
	// expired the others elect one, and the shell goes on.
	for {
		start := time.Now()
		ans := s.ask("leader")
		if took := time.Since(start); took > opTimeout+slack {
			t.Fatalf("leader answered %q after %v, want at most %v", ans, took, opTimeout+slack)
		}
		var n int
		if _, err := fmt.Sscan(ans[0].text, &n); err == nil && !ans[0].stderr && n != leader {
			break
		}
		if !strings.Contains(ans[0].text, "leader") {
			t.Fatalf("leader answered %q while the others elect", ans)
		}
		if time.Since(killed) > ttl+30*time.Second {
			t.Fatalf("no new leader %v after killing the old one (session TTL %v)", time.Since(killed), ttl)
		}
	}
	t.Logf("new leader %v after the kill (session TTL %v)", time.Since(killed).Round(time.Millisecond), ttl)
	s.expectOut("put "+strconv.Itoa(follower)+" k after", "OK")
	if got := s.expectOut("get "+strconv.Itoa(3-leader-follower)+" k", ""); got != "after\n" {
		t.Fatalf("get after the failover: %q, want %q", got, "after\n")
	}
	s.send("quit")
	s.wait(30 * time.Second)
}

// TestShellRemovesTempData checks that the shell leaves no temporary data
// behind however it ends: quit, end of input, SIGINT (Ctrl-C on a piped
// shell) and SIGTERM. The child's TMPDIR is a fresh directory, which must
// hold the embedded etcd's data while the shell runs and be empty after.
func TestShellRemovesTempData(t *testing.T) {
	bin := buildBinary(t)
	for _, tc := range []struct {
		name string
		end  func(s *shellProc)
	}{
		{"quit", func(s *shellProc) { s.send("quit") }},
		{"end-of-input", func(s *shellProc) { _ = s.in.Close() }},
		{"SIGINT", func(s *shellProc) { _ = s.cmd.Process.Signal(syscall.SIGINT) }},
		{"SIGTERM", func(s *shellProc) { _ = s.cmd.Process.Signal(syscall.SIGTERM) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tmp := t.TempDir()
			s := startShell(t, bin, []string{"TMPDIR=" + tmp})
			s.expectOut("put 0 k v", "OK")
			if entries, _ := os.ReadDir(tmp); len(entries) == 0 {
				t.Fatalf("the running shell keeps nothing in TMPDIR %s: the test cannot see what it leaves", tmp)
			}
			tc.end(s)
			s.wait(30 * time.Second)
			entries, err := os.ReadDir(tmp)
			if err != nil {
				t.Fatal(err)
			}
			var left []string
			for _, e := range entries {
				left = append(left, e.Name())
			}
			if len(left) > 0 {
				t.Fatalf("the shell left %v in TMPDIR", left)
			}
		})
	}
}

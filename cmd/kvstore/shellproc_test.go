package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvstore/kvstore/shell"
)

// shellProc is a `kvstore` shell process driven through pipes one command
// at a time: the test writes a command and reads its whole answer before it
// writes the next, so it can wait on a condition (send a command again until
// it answers as wanted) where a static script could only sleep.
type shellProc struct {
	t     *testing.T
	cmd   *exec.Cmd
	in    io.WriteCloser
	lines chan outLine  // every output line, from either stream, as read
	done  chan struct{} // closed when the process exited and both streams are drained
	err   error         // the exit status, once done is closed
	nodes int           // how many nodes exist: the length of list's answer

	mu  sync.Mutex
	all strings.Builder // everything read, for failure messages
}

// outLine is one line the shell wrote.
type outLine struct {
	stderr bool
	text   string
}

func (l outLine) String() string {
	if l.stderr {
		return "stderr: " + l.text
	}
	return l.text
}

// answerTimeout bounds the wait for one command's answer.
const answerTimeout = 90 * time.Second

// startShell starts the shell with args (and env added to the test's
// environment) and returns once it answers: `--nodes N` nodes run.
func startShell(t *testing.T, bin string, env []string, args ...string) *shellProc {
	t.Helper()
	s := &shellProc{t: t, lines: make(chan outLine, 1024), done: make(chan struct{}), nodes: 1}
	for i, a := range args {
		if a == "--nodes" && i+1 < len(args) {
			if _, err := fmt.Sscan(args[i+1], &s.nodes); err != nil {
				t.Fatalf("--nodes %q: %v", args[i+1], err)
			}
		}
	}
	s.cmd = exec.Command(bin, args...)
	s.cmd.Env = append(os.Environ(), env...)
	var err error
	if s.in, err = s.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := s.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var readers sync.WaitGroup
	for _, r := range []struct {
		stderr bool
		f      io.Reader
	}{{false, stdout}, {true, stderr}} {
		readers.Add(1)
		go func() {
			defer readers.Done()
			sc := bufio.NewScanner(r.f)
			for sc.Scan() {
				s.mu.Lock()
				if r.stderr {
					s.all.WriteString("[stderr] ")
				}
				s.all.WriteString(sc.Text() + "\n")
				s.mu.Unlock()
				s.lines <- outLine{r.stderr, sc.Text()}
			}
		}()
	}
	go func() {
		readers.Wait() // Wait closes the pipes: read them to the end first
		s.err = s.cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() {
		select {
		case <-s.done:
		default:
			_ = s.cmd.Process.Kill()
			<-s.done
		}
		if t.Failed() {
			t.Logf("shell output:\n%s", s.output())
		}
	})
	// The shell reads its first command only once its nodes serve.
	s.expectOut("leader", "")
	return s
}

func (s *shellProc) output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.all.String()
}

// answerLen is how many lines the shell answers to line.
func (s *shellProc) answerLen(line string) int {
	c, err := shell.Parse(line)
	switch {
	case err != nil:
		return 1
	case c.Name == "" || c.Name == "quit":
		return 0
	case c.Name == "help":
		return strings.Count(shell.Help(), "\n")
	case c.Name == "list":
		return s.nodes
	}
	return 1
}

// send writes one line to the shell's input.
func (s *shellProc) send(line string) {
	s.t.Helper()
	if _, err := io.WriteString(s.in, line+"\n"); err != nil {
		s.t.Fatalf("write %q to the shell: %v", line, err)
	}
}

// ask sends line and returns its answer, once all of it is read.
func (s *shellProc) ask(line string) []outLine {
	s.t.Helper()
	s.send(line)
	want := s.answerLen(line)
	var got []outLine
	deadline := time.After(answerTimeout)
	for len(got) < want {
		select {
		case l := <-s.lines:
			got = append(got, l)
		case <-s.done:
			select {
			case l := <-s.lines: // read before the exit was seen
				got = append(got, l)
				continue
			default:
			}
			s.t.Fatalf("%q: the shell exited (%v) after answering %q", line, s.err, got)
		case <-deadline:
			s.t.Fatalf("%q: no complete answer within %v (got %q)", line, answerTimeout, got)
		}
	}
	if c, _ := shell.Parse(line); c.Name == "new-client" && !got[0].stderr {
		s.nodes++
	}
	return got
}

// expectOut sends line and fails unless it answers on standard output only,
// with text starting with prefix; it returns the answer.
func (s *shellProc) expectOut(line, prefix string) string {
	s.t.Helper()
	ans := s.ask(line)
	text := joinLines(ans)
	if hasStderr(ans) || !strings.HasPrefix(text, prefix) {
		s.t.Fatalf("%q answered %q, want standard output starting %q", line, ans, prefix)
	}
	return text
}

// until sends line every 100 ms until ok accepts its answer, or within
// passes; it returns the accepted answer.
func (s *shellProc) until(within time.Duration, line string, ok func([]outLine) bool) []outLine {
	s.t.Helper()
	deadline := time.Now().Add(within)
	for {
		ans := s.ask(line)
		if ok(ans) {
			return ans
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%q: no acceptable answer within %v; last %q", line, within, ans)
		}
		select {
		case <-s.done:
			s.t.Fatalf("the shell exited (%v)", s.err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// wait waits for the shell to exit and fails unless it exits with status 0
// and writes nothing more.
func (s *shellProc) wait(within time.Duration) {
	s.t.Helper()
	select {
	case <-s.done:
		if s.err != nil {
			s.t.Fatalf("the shell exited with %v", s.err)
		}
	case <-time.After(within):
		s.t.Fatalf("the shell did not exit within %v", within)
	}
	select {
	case l := <-s.lines:
		s.t.Fatalf("the shell wrote %q after its last answer", l)
	default:
	}
}

func hasStderr(ans []outLine) bool {
	for _, l := range ans {
		if l.stderr {
			return true
		}
	}
	return false
}

func joinLines(ans []outLine) string {
	var b strings.Builder
	for _, l := range ans {
		b.WriteString(l.text + "\n")
	}
	return b.String()
}

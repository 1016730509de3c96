package main

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

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

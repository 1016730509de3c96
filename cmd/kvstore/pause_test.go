package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kvstore/kvstore/client"
	"github.com/kvstore/kvstore/internal/soon"
)

// op is one client operation as a test saw it.
type op struct {
	what       string
	start, end time.Time
	deadline   time.Duration
	err        error
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// attemptRec is one attempt of a client call (Config.OnAttempt).
type attemptRec struct {
	endpoint string
	took     time.Duration
	err      error
}

// TestPausedLeaderFailover pauses the leader process (SIGSTOP: a long GC
// pause, a frozen VM; its connections stay open and nothing answers) while
// clients write and read: one with every endpoint (the leader first, so it
// starts there), one through a follower only, with attempts as long as the
// call (so that what is measured is the follower's own failover). Once a
// new leader serves:
//   - no operation stays in flight longer than its deadline plus 1 s, and
//     every one succeeds;
//   - the operations the follower had sent to the paused leader end soon
//     after the new leader serves, not at their deadline: the follower
//     sends them to the new leader as soon as it sees it;
//   - the client with every endpoint never times out on the paused node
//     twice in a row: it moves to the next endpoint after one attempt.
func TestPausedLeaderFailover(t *testing.T) {
	bin := buildBinary(t)
	etcd := startEtcd(t)
	env := []string{"KVSTORE_ETCD=" + etcd.Endpoint(), "KVSTORE_CLUSTER=pause"}
	nodes := startNodes(t, bin, "s", 3, env...)
	waitMembers(t, bin, nodes, 30*time.Second)
	leader := leaderOf(t, bin, nodes)
	fol := without(nodes, leader)

	var amu sync.Mutex
	var attempts []attemptRec
	all, err := client.New(client.Config{
		Endpoints: []string{leader.addr, fol[0].addr, fol[1].addr},
		OnAttempt: func(endpoint string, took time.Duration, err error) {
			amu.Lock()
			attempts = append(attempts, attemptRec{endpoint, took, err})
			amu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer all.Close()
	viaFollower, err := client.New(client.Config{Endpoints: []string{fol[0].addr}, AttemptTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer viaFollower.Close()
	probe, err := client.New(client.Config{Endpoints: []string{fol[1].addr, fol[0].addr}, AttemptTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()

	// Connections up, as in a cluster that has been running (a paused
	// process keeps its connections): each client to its nodes, the
	// follower to the leader. Keys r<i> are written through the leader and
	// never read through the follower: its reads of them go to the leader.
	const reads = 50
	for i := range reads {
		if err := all.Put(ctxT(t, 10*time.Second), fmt.Sprint("r", i), fmt.Sprint("v", i)); err != nil {
			t.Fatal(err)
		}
	}
	for _, cl := range []*client.Client{viaFollower, probe} {
		if err := cl.Put(ctxT(t, 10*time.Second), "warm", "up"); err != nil {
			t.Fatal(err)
		}
	}
	amu.Lock()
	attempts = nil
	amu.Unlock()

	if err := leader.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	paused := time.Now()
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			_ = leader.cmd.Process.Signal(syscall.SIGCONT)
		}
	}
	defer resume()

	stop := make(chan struct{})
	var omu sync.Mutex
	var ops []op
	record := func(o op) {
		omu.Lock()
		ops = append(ops, o)
		omu.Unlock()
	}
	run := func(what string, deadline time.Duration, f func(ctx context.Context) error) {
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		err := f(ctx)
		cancel()
		record(op{what: what, start: start, end: time.Now(), deadline: deadline, err: err})
	}
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { // every endpoint
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			run(fmt.Sprint("all: put a", i), 8*time.Second, func(ctx context.Context) error {
				return all.Put(ctx, fmt.Sprint("a", i), "x")
			})
		}
	}()
	go func() { // through the follower
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			run(fmt.Sprint("follower: put b", i), 15*time.Second, func(ctx context.Context) error {
				return viaFollower.Put(ctx, fmt.Sprint("b", i), "x")
			})
		}
	}()
	go func() { // reads through the follower
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			run(fmt.Sprint("follower: get r", i%reads), 15*time.Second, func(ctx context.Context) error {
				v, found, err := viaFollower.Get(ctx, fmt.Sprint("r", i%reads))
				if err == nil && (!found || v != fmt.Sprint("v", i%reads)) {
					err = fmt.Errorf("read %q (found %v), want %q", v, found, fmt.Sprint("v", i%reads))
				}
				return err
			})
		}
	}()

	// The first write acknowledged after the pause: a new leader serves.
	var served time.Time
	for served.IsZero() {
		if time.Since(paused) > 30*time.Second {
			close(stop)
			wg.Wait()
			t.Fatalf("no write acknowledged within 30 s of pausing the leader %s", leader.id)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if err := probe.Put(ctx, "probe", "x"); err == nil {
			served = time.Now()
		}
		cancel()
	}
	t.Logf("leader %s paused; a write acknowledged %v later", leader.id, served.Sub(paused).Round(time.Millisecond))
	// Until each writer has done an operation begun after then: those
	// begun before have ended.
	after := func(prefix string) bool {
		omu.Lock()
		defer omu.Unlock()
		for _, o := range ops {
			if strings.HasPrefix(o.what, prefix) && o.start.After(served) {
				return true
			}
		}
		return false
	}
	soon.Succeeds(t, 30*time.Second, func() error {
		if !after("all:") || !after("follower: put") || !after("follower: get") {
			return errors.New("a writer has not begun an operation since the new leader served")
		}
		return nil
	})
	close(stop)
	wg.Wait()
	resume()

	const slack = 3 * time.Second
	omu.Lock()
	defer omu.Unlock()
	for _, o := range ops {
		took := o.end.Sub(o.start)
		if o.err != nil || took > 500*time.Millisecond {
			t.Logf("%s: began %v after the pause, took %v: %v", o.what, o.start.Sub(paused).Round(time.Millisecond), took.Round(time.Millisecond), o.err)
		}
		if took > o.deadline+time.Second {
			t.Errorf("%s took %v, over its deadline %v plus 1 s", o.what, took, o.deadline)
		}
		if o.err != nil {
			t.Errorf("%s (%v after the pause, took %v): %v", o.what, o.start.Sub(paused).Round(time.Millisecond), took.Round(time.Millisecond), o.err)
		}
		if o.start.Before(served) && o.end.After(served.Add(slack)) {
			t.Errorf("%s, begun %v before the first write acknowledged after the pause, ended %v after it (more than %v): it waited for the paused leader",
				o.what, served.Sub(o.start).Round(time.Millisecond), o.end.Sub(served).Round(time.Millisecond), slack)
		}
	}
	t.Logf("%d operations", len(ops))
	amu.Lock()
	defer amu.Unlock()
	timedOut := func(a attemptRec) bool { return a.endpoint == leader.addr && errors.Is(a.err, client.ErrTimeout) }
	for i, a := range attempts {
		if a.err != nil {
			t.Logf("attempt %d on %s: %v: %v", i, a.endpoint, a.took.Round(time.Millisecond), a.err)
		}
		if i > 0 && timedOut(a) && timedOut(attempts[i-1]) {
			t.Errorf("attempts %d and %d both timed out on the paused leader %s", i-1, i, leader.addr)
		}
	}
}

// Package coordtest is the conformance suite every coord.Coordinator backend
// must pass. A backend's test calls Run with a factory:
//
//	func TestConformance(t *testing.T) {
//		coordtest.Run(t, func(t *testing.T) coord.Coordinator { ... })
//	}
//
// The suite waits on conditions with deadlines, never on bare sleeps, and
// reports the last observed state when a wait times out.
package coordtest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvstore/kvstore/clock"
	"github.com/kvstore/kvstore/coord"
)

// TTL is the session TTL the suite asks for. Short enough to keep the suite
// fast, long enough that a loaded machine running -race does not miss a
// keep-alive.
const TTL = 2 * time.Second

// Slack is added to every timing bound: the backend's own expiry check period
// (etcd scans for expired leases every 500 ms) plus scheduling delays.
const Slack = 3 * time.Second

// Run runs the conformance suite. newCoord must return a new, open
// connection to the backend; calls made with the same t must share one
// namespace (cluster), and different t must get fresh, empty namespaces, so
// the subtests do not see each other (e.g. key the namespace by t.Name()).
// Run closes every Coordinator newCoord returns. Its Coordinators measure
// session deadlines on the default clock, clock.System().
func Run(t *testing.T, newCoord func(t *testing.T) coord.Coordinator) {
	open := func(t *testing.T) *conn {
		t.Helper()
		c := &conn{Coordinator: newCoord(t)}
		t.Cleanup(func() { c.close(t) })
		return c
	}
	t.Run("SessionDeadline", func(t *testing.T) { testSessionDeadline(t, open(t)) })
	t.Run("RegisterWatch", func(t *testing.T) { testRegisterWatch(t, open(t)) })
	t.Run("WatchStopsWithContext", func(t *testing.T) { testWatchStops(t, open(t)) })
	t.Run("Election", func(t *testing.T) { testElection(t, open(t), open(t)) })
	t.Run("CampaignCancel", func(t *testing.T) { testCampaignCancel(t, open(t)) })
	t.Run("SetVotersFencing", func(t *testing.T) { testSetVoters(t, open(t)) })
	t.Run("CreateVotersTwice", func(t *testing.T) { testCreateVoters(t, open(t)) })
	t.Run("VoterSeal", func(t *testing.T) { testVoterSeal(t, open(t)) })
	t.Run("ClaimCluster", func(t *testing.T) { testClaimCluster(t, open(t), open(t)) })
	t.Run("ClaimClusterRace", func(t *testing.T) {
		testClaimClusterRace(t, []coord.Coordinator{open(t), open(t), open(t), open(t)})
	})
	t.Run("ClaimClusterIncarnation", func(t *testing.T) {
		testClaimClusterIncarnation(t, func(t *testing.T) coord.Coordinator { return open(t) })
	})
	t.Run("Settings", func(t *testing.T) { testSettings(t, open(t), open(t)) })
	t.Run("ClaimSettingsRace", func(t *testing.T) {
		testClaimSettingsRace(t, []coord.Coordinator{open(t), open(t), open(t), open(t)})
	})
	t.Run("AbandonedSessionExpires", func(t *testing.T) { testAbandoned(t, open(t), open(t)) })
	t.Run("ReplaceVoters", func(t *testing.T) { testReplaceVoters(t, open(t)) })
	t.Run("EpochBase", func(t *testing.T) {
		testEpochBase(t, []coord.Coordinator{open(t), open(t), open(t), open(t)})
	})
	t.Run("WithEpochBase", func(t *testing.T) { testWithEpochBase(t, open(t)) })
}

// conn is a Coordinator the suite closes exactly once.
type conn struct {
	coord.Coordinator
	once sync.Once
}

func (c *conn) close(t *testing.T) {
	c.once.Do(func() {
		if err := c.Coordinator.Close(); err != nil {
			t.Errorf("Coordinator.Close: %v", err)
		}
	})
}

// ctxFor returns a context that ends with the test or after d.
func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// newSession opens a session and closes it at cleanup.
func newSession(t *testing.T, c coord.Coordinator) coord.Session {
	t.Helper()
	s, err := c.NewSession(ctxFor(t, 10*time.Second), TTL)
	if err != nil {
		t.Fatalf("NewSession: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Errorf("Session.Close: %v", err)
		}
	})
	return s
}

// WaitFor polls cond every 10 ms until it returns nil, and fails the test
// with cond's last error if that takes longer than timeout.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %v: %v", what, timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// WaitView reads Views from ch until cond accepts one and returns it. It fails
// the test, with cond's verdict on the last View, if that takes longer than
// timeout or ch closes.
func WaitView(t testing.TB, ch <-chan coord.View, timeout time.Duration, what string, cond func(coord.View) error) coord.View {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	last := errors.New("no View received")
	for {
		select {
		case v, ok := <-ch:
			if !ok {
				t.Fatalf("%s: watch channel closed; last: %v", what, last)
			}
			if last = cond(v); last == nil {
				return v
			}
		case <-timer.C:
			t.Fatalf("%s: not seen after %v: %v", what, timeout, last)
		}
	}
}

// memberIs accepts a View where id is a member at addr.
func memberIs(id, addr string) func(coord.View) error {
	return func(v coord.View) error {
		if got, ok := v.Members[id]; !ok || got != addr {
			return fmt.Errorf("members %v, want %s=%s", v.Members, id, addr)
		}
		return nil
	}
}

// memberGone accepts a View without id.
func memberGone(id string) func(coord.View) error {
	return func(v coord.View) error {
		if _, ok := v.Members[id]; ok {
			return fmt.Errorf("members %v still hold %s", v.Members, id)
		}
		return nil
	}
}

// leaderIs accepts a View whose leader is want.
func leaderIs(want coord.Leader) func(coord.View) error {
	return func(v coord.View) error {
		if v.Leader != want {
			return fmt.Errorf("leader %+v, want %+v", v.Leader, want)
		}
		return nil
	}
}

type campaignResult struct {
	epoch int64
	err   error
}

// campaign runs s.Campaign in a goroutine; the result arrives on the channel.
// The goroutine ends when Campaign returns, which ctx or the session's end
// guarantee.
func campaign(ctx context.Context, s coord.Session, id string) <-chan campaignResult {
	ch := make(chan campaignResult, 1)
	go func() {
		e, err := s.Campaign(ctx, id)
		ch <- campaignResult{e, err}
	}()
	return ch
}

// await waits for a campaign result.
func await(t *testing.T, ch <-chan campaignResult, timeout time.Duration, what string) campaignResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(timeout):
		t.Fatalf("%s: Campaign did not return within %v", what, timeout)
		return campaignResult{}
	}
}

// awaitWin waits for a campaign to return an epoch.
func awaitWin(t *testing.T, ch <-chan campaignResult, timeout time.Duration, what string) int64 {
	t.Helper()
	r := await(t, ch, timeout, what)
	if r.err != nil {
		t.Fatalf("%s: Campaign: %v", what, r.err)
	}
	if r.epoch <= 0 {
		t.Fatalf("%s: Campaign returned epoch %d, want > 0", what, r.epoch)
	}
	return r.epoch
}

func testSessionDeadline(t *testing.T, c coord.Coordinator) {
	clk := clock.System()
	before := clk.Now()
	s, err := c.NewSession(ctxFor(t, 10*time.Second), TTL)
	if err != nil {
		t.Fatalf("NewSession: %v", err)
	}
	d := s.Deadline()
	if !d.After(clk.Now()) {
		t.Fatalf("Deadline %v is not in the future", d)
	}
	// The deadline is measured from a send time after before, minus a drift
	// margin; allow a margin of up to half the TTL. Backends may grant more
	// than asked (whole seconds, a server minimum), so allow TTL+1s.
	if lo, hi := before.Add(TTL/2), clk.Now().Add(TTL+time.Second); d.Before(lo) || d.After(hi) {
		t.Fatalf("Deadline is %v after the request, want about TTL (%v)", d.Sub(before), TTL)
	}
	if !s.Healthy() || s.Err() != nil {
		t.Fatalf("new session: Healthy=%v Err=%v", s.Healthy(), s.Err())
	}
	select {
	case <-s.Done():
		t.Fatal("Done closed on a new session")
	default:
	}

	// Keep-alives move the deadline forward, and each move is signaled.
	WaitFor(t, TTL+Slack, "deadline advanced by keep-alives", func() error {
		if got := s.Deadline(); !got.After(d) {
			return fmt.Errorf("deadline still %v", got)
		}
		return nil
	})
	ch := s.Changed()
	select {
	case <-ch:
	case <-time.After(TTL + Slack):
		t.Fatalf("Changed not signaled within %v", TTL+Slack)
	}
	if !clk.Now().Before(s.Deadline()) || !s.Healthy() {
		t.Fatalf("after keep-alive: Deadline in %v, Healthy=%v", s.Deadline().Sub(clk.Now()), s.Healthy())
	}

	ch = s.Changed()
	if err := s.Close(ctxFor(t, 5*time.Second)); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case <-s.Done():
	default:
		t.Fatal("Done not closed after Close")
	}
	select {
	case <-ch:
	default:
		t.Fatal("Changed not signaled by Close")
	}
	if !errors.Is(s.Err(), coord.ErrSessionClosed) {
		t.Fatalf("Err after Close = %v, want ErrSessionClosed", s.Err())
	}
	if s.Healthy() {
		t.Fatal("Healthy after Close")
	}
	if clk.Now().Before(s.Deadline()) {
		t.Fatalf("Deadline %v after Close still in the future", s.Deadline())
	}
	if err := s.Register(ctxFor(t, 5*time.Second), coord.Member{ID: "x", Addr: "y"}); err == nil {
		t.Fatal("Register on a closed session succeeded")
	}
	if err := s.Close(ctxFor(t, 5*time.Second)); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func testRegisterWatch(t *testing.T, c coord.Coordinator) {
	ctx := ctxFor(t, 30*time.Second)
	watcher := newSession(t, c)
	ch := watcher.Watch(ctx)
	WaitView(t, ch, Slack, "initial View", func(coord.View) error { return nil })

	s1 := newSession(t, c)
	if err := s1.Register(ctx, coord.Member{ID: "n1", Addr: "127.0.0.1:7001"}); err != nil {
		t.Fatalf("Register n1: %v", err)
	}
	s2 := newSession(t, c)
	if err := s2.Register(ctx, coord.Member{ID: "n2", Addr: "127.0.0.1:7002"}); err != nil {
		t.Fatalf("Register n2: %v", err)
	}
	WaitView(t, ch, Slack, "n1 and n2 registered", func(v coord.View) error {
		want := map[string]string{"n1": "127.0.0.1:7001", "n2": "127.0.0.1:7002"}
		if !maps.Equal(v.Members, want) {
			return fmt.Errorf("members %v, want %v", v.Members, want)
		}
		return nil
	})

	// A new watch starts with the full current View.
	ch2 := watcher.Watch(ctx)
	WaitView(t, ch2, Slack, "second watch starts complete", memberIs("n2", "127.0.0.1:7002"))

	// Closing a session deletes its entries.
	if err := s1.Close(ctx); err != nil {
		t.Fatalf("Close s1: %v", err)
	}
	v := WaitView(t, ch, Slack, "n1 gone after Close", memberGone("n1"))
	if err := memberIs("n2", "127.0.0.1:7002")(v); err != nil {
		t.Fatalf("after n1 left: %v", err)
	}
}

func testWatchStops(t *testing.T, c coord.Coordinator) {
	s := newSession(t, c)
	ctx, cancel := context.WithCancel(context.Background())
	ch := s.Watch(ctx)
	WaitView(t, ch, Slack, "initial View", func(coord.View) error { return nil })
	cancel()
	timer := time.NewTimer(Slack)
	defer timer.Stop()
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-timer.C:
			t.Fatalf("watch channel not closed %v after its context ended", Slack)
		}
	}
}

func testElection(t *testing.T, c1, c2 coord.Coordinator) {
	ctx := ctxFor(t, 60*time.Second)
	a, b := newSession(t, c1), newSession(t, c2)
	// Watch from a bystander: a watch stops with its session.
	ch := newSession(t, c1).Watch(ctx)

	ra, rb := campaign(ctx, a, "a"), campaign(ctx, b, "b")
	var first, second coord.Session
	var firstID, secondID string
	var epoch1 int64
	var rest <-chan campaignResult
	select {
	case r := <-ra:
		first, firstID, second, secondID, rest = a, "a", b, "b", rb
		epoch1 = r.epoch
		if r.err != nil {
			t.Fatalf("Campaign a: %v", r.err)
		}
	case r := <-rb:
		first, firstID, second, secondID, rest = b, "b", a, "a", ra
		epoch1 = r.epoch
		if r.err != nil {
			t.Fatalf("Campaign b: %v", r.err)
		}
	case <-time.After(Slack):
		t.Fatalf("neither Campaign returned within %v", Slack)
	}
	if epoch1 <= 0 {
		t.Fatalf("epoch %d, want > 0", epoch1)
	}
	WaitView(t, ch, Slack, "first leader in View", leaderIs(coord.Leader{ID: firstID, Epoch: epoch1}))
	// Exactly one leads: the other is still campaigning.
	select {
	case r := <-rest:
		t.Fatalf("both lead: second Campaign returned %+v while %s leads with epoch %d", r, firstID, epoch1)
	default:
	}

	// The leader resigns: the other takes over with a greater epoch.
	if err := first.Resign(ctx); err != nil {
		t.Fatalf("Resign: %v", err)
	}
	epoch2 := awaitWin(t, rest, Slack, "second leader after Resign")
	if epoch2 <= epoch1 {
		t.Fatalf("epoch went from %d to %d, want strictly greater", epoch1, epoch2)
	}
	WaitView(t, ch, Slack, "second leader in View", leaderIs(coord.Leader{ID: secondID, Epoch: epoch2}))

	// The first runs again; the leader's session closes: the first takes
	// over with a greater epoch still.
	again := campaign(ctx, first, firstID)
	select {
	case r := <-again:
		t.Fatalf("Campaign returned %+v while %s leads", r, secondID)
	default:
	}
	if err := second.Close(ctx); err != nil {
		t.Fatalf("Close leader session: %v", err)
	}
	epoch3 := awaitWin(t, again, Slack, "leader after the leader's session closed")
	if epoch3 <= epoch2 {
		t.Fatalf("epoch went from %d to %d, want strictly greater", epoch2, epoch3)
	}
	WaitView(t, ch, Slack, "third leader in View", leaderIs(coord.Leader{ID: firstID, Epoch: epoch3}))

	// A second Campaign by the leader returns the same epoch.
	if e, err := first.Campaign(ctx, firstID); err != nil || e != epoch3 {
		t.Fatalf("repeated Campaign by the leader = %d, %v; want %d, nil", e, err, epoch3)
	}
}

func testCampaignCancel(t *testing.T, c coord.Coordinator) {
	ctx := ctxFor(t, 60*time.Second)
	a, b := newSession(t, c), newSession(t, c)
	ch := a.Watch(ctx)
	epoch := awaitWin(t, campaign(ctx, a, "a"), Slack, "a leads")

	bctx, cancel := context.WithCancel(ctx)
	rb := campaign(bctx, b, "b")
	select {
	case r := <-rb:
		t.Fatalf("b's Campaign returned %+v while a leads", r)
	default:
	}
	cancel()
	r := await(t, rb, Slack, "canceled Campaign")
	if !errors.Is(r.err, context.Canceled) {
		t.Fatalf("canceled Campaign = %+v, want context.Canceled", r)
	}

	// b withdrew its candidacy before Campaign returned: when a resigns
	// nobody leads, not even for a moment.
	WaitView(t, ch, Slack, "a leads", leaderIs(coord.Leader{ID: "a", Epoch: epoch}))
	if err := a.Resign(ctx); err != nil {
		t.Fatalf("Resign: %v", err)
	}
	WaitView(t, ch, Slack, "no leader after a resigned", func(v coord.View) error {
		if v.Leader.ID == "b" {
			t.Fatalf("b leads (%+v) after its Campaign returned canceled", v.Leader)
		}
		return leaderIs(coord.Leader{})(v)
	})

	// A session that ends while campaigning makes Campaign return.
	epoch = awaitWin(t, campaign(ctx, a, "a"), Slack, "a leads again")
	rb = campaign(ctx, b, "b")
	if err := b.Close(ctx); err != nil {
		t.Fatalf("Close b: %v", err)
	}
	r = await(t, rb, Slack, "Campaign of a closed session")
	if r.err == nil {
		t.Fatalf("Campaign of a closed session succeeded with epoch %d", r.epoch)
	}
	WaitView(t, ch, Slack, "a still leads", leaderIs(coord.Leader{ID: "a", Epoch: epoch}))
}

func testSetVoters(t *testing.T, c coord.Coordinator) {
	ctx := ctxFor(t, 60*time.Second)
	if err := c.CreateVoters(ctx, []string{"a"}); err != nil {
		t.Fatalf("CreateVoters: %v", err)
	}
	v1, err := c.Voters(ctx)
	if err != nil || v1.Version <= 0 || !v1.Contains("a") || len(v1.IDs) != 1 {
		t.Fatalf("Voters = %+v, %v; want [a] with a positive version", v1, err)
	}

	leader, other := newSession(t, c), newSession(t, c)
	epoch := awaitWin(t, campaign(ctx, leader, "a"), Slack, "a leads")

	if err := leader.SetVoters(ctx, epoch, v1, []string{"a", "b"}); err != nil {
		t.Fatalf("SetVoters by the leader: %v", err)
	}
	v2, err := c.Voters(ctx)
	if err != nil || v2.Version <= v1.Version || !v2.Contains("a") || !v2.Contains("b") || len(v2.IDs) != 2 || v2.Unsealed {
		t.Fatalf("Voters = %+v, %v; want [a b], sealed, with a version above %d", v2, err, v1.Version)
	}

	check := func(what string, err, want error) {
		t.Helper()
		if !errors.Is(err, want) {
			t.Fatalf("%s: SetVoters = %v, want %v", what, err, want)
		}
		if got, err := c.Voters(ctx); err != nil || got.Version != v2.Version {
			t.Fatalf("%s: the record changed to %+v (%v)", what, got, err)
		}
	}
	check("stale version", leader.SetVoters(ctx, epoch, v1, []string{"a", "c"}), coord.ErrConflict)
	check("non-leader", other.SetVoters(ctx, epoch, v2, []string{"a", "c"}), coord.ErrNotLeader)
	check("wrong epoch", leader.SetVoters(ctx, epoch+1, v2, []string{"a", "c"}), coord.ErrNotLeader)
	check("zero epoch", leader.SetVoters(ctx, 0, v2, []string{"a", "c"}), coord.ErrNotLeader)

	// A candidate that is not yet leader is refused too.
	ro := campaign(ctx, other, "b")
	check("candidate", other.SetVoters(ctx, epoch, v2, []string{"a", "c"}), coord.ErrNotLeader)

	// After resigning the old leader is fenced off, and the new one writes.
	if err := leader.Resign(ctx); err != nil {
		t.Fatalf("Resign: %v", err)
	}
	epoch2 := awaitWin(t, ro, Slack, "b leads")
	check("resigned leader", leader.SetVoters(ctx, epoch, v2, []string{"a", "c"}), coord.ErrNotLeader)
	if err := other.SetVoters(ctx, epoch2, v2, []string{"b"}); err != nil {
		t.Fatalf("SetVoters by the new leader: %v", err)
	}
	if v3, err := c.Voters(ctx); err != nil || v3.Version <= v2.Version || len(v3.IDs) != 1 || !v3.Contains("b") {
		t.Fatalf("Voters = %+v, %v; want [b] with a version above %d", v3, err, v2.Version)
	}
}

func testCreateVoters(t *testing.T, c coord.Coordinator) {
	ctx := ctxFor(t, 30*time.Second)
	v, err := c.Voters(ctx)
	if err != nil || v.Version != 0 || len(v.IDs) != 0 {
		t.Fatalf("Voters before any write = %+v, %v; want zero, nil", v, err)
	}
	if err := c.CreateVoters(ctx, []string{"a", "b", "c"}); err != nil {
		t.Fatalf("CreateVoters: %v", err)
	}
	if err := c.CreateVoters(ctx, []string{"d"}); !errors.Is(err, coord.ErrConflict) {
		t.Fatalf("second CreateVoters = %v, want ErrConflict", err)
	}
	v, err = c.Voters(ctx)
	if err != nil || v.Version <= 0 || len(v.IDs) != 3 || !v.Contains("a") || !v.Contains("b") || !v.Contains("c") || !v.Unsealed {
		t.Fatalf("Voters = %+v, %v; want [a b c], unsealed, with a positive version", v, err)
	}
}

// testVoterSeal: CreateVoters writes the record unsealed; only the leader's
// SetVoters seals it, and with the same ids that is all it changes; no
// later write unseals it (a voter change, a raised epoch base, the
// recovery command's ReplaceVoters), and ReplaceVoters on no record
// creates it sealed.
func testVoterSeal(t *testing.T, c coord.Coordinator) {
	ctx := ctxFor(t, 60*time.Second)
	if err := c.CreateVoters(ctx, []string{"a", "b"}); err != nil {
		t.Fatalf("CreateVoters: %v", err)
	}
	v1, err := c.Voters(ctx)
	if err != nil || !v1.Unsealed || !slices.Equal(v1.IDs, []string{"a", "b"}) {
		t.Fatalf("Voters after CreateVoters = %+v, %v; want [a b], unsealed", v1, err)
	}
	leader, other := newSession(t, c), newSession(t, c)
	epoch := awaitWin(t, campaign(ctx, leader, "a"), Slack, "a leads")

	// A seal by a session that does not lead is refused and changes
	// nothing.
	if err := other.SetVoters(ctx, epoch, v1, v1.IDs); !errors.Is(err, coord.ErrNotLeader) {
		t.Fatalf("seal by a non-leader = %v, want ErrNotLeader", err)
	}
	if got, err := c.Voters(ctx); err != nil || !got.Unsealed || got.Version != v1.Version {
		t.Fatalf("a refused seal changed the record to %+v (%v)", got, err)
	}
	// The leader seals it: same ids, a new version.
	if err := leader.SetVoters(ctx, epoch, v1, v1.IDs); err != nil {
		t.Fatalf("seal by the leader: %v", err)
	}
	v2, err := c.Voters(ctx)
	if err != nil || v2.Unsealed || v2.Version <= v1.Version || !slices.Equal(v2.IDs, v1.IDs) {
		t.Fatalf("Voters after the seal = %+v, %v; want [a b], sealed, version above %d", v2, err, v1.Version)
	}
	if err := leader.SetVoters(ctx, epoch, v1, v1.IDs); !errors.Is(err, coord.ErrConflict) {
		t.Fatalf("a second seal with the version read before = %v, want ErrConflict", err)
	}
	if err := c.CreateVoters(ctx, []string{"z"}); !errors.Is(err, coord.ErrConflict) {
		t.Fatalf("CreateVoters over a sealed record = %v, want ErrConflict", err)
	}

	// Nothing unseals it.
	if err := leader.SetVoters(ctx, epoch, v2, []string{"a"}); err != nil {
		t.Fatalf("SetVoters [a]: %v", err)
	}
	if err := c.RaiseEpochBase(ctx, 1<<20); err != nil {
		t.Fatalf("RaiseEpochBase: %v", err)
	}
	v3, err := c.Voters(ctx)
	if err != nil || v3.Unsealed || !slices.Equal(v3.IDs, []string{"a"}) {
		t.Fatalf("Voters after a removal and a raised base = %+v, %v; want [a], sealed", v3, err)
	}
	if err := c.ReplaceVoters(ctx, v3, []string{"c"}); err != nil {
		t.Fatalf("ReplaceVoters: %v", err)
	}
	if v4, err := c.Voters(ctx); err != nil || v4.Unsealed || !slices.Equal(v4.IDs, []string{"c"}) {
		t.Fatalf("Voters after ReplaceVoters = %+v, %v; want [c], sealed", v4, err)
	}
}

func testClaimCluster(t *testing.T, c1, c2 coord.Coordinator) {
	ctx := ctxFor(t, 30*time.Second)
	inc, err := c1.ClaimCluster(ctx, "a")
	if err != nil {
		t.Fatalf("first ClaimCluster(a): %v", err)
	}
	if len(inc) < 16 {
		t.Fatalf("first ClaimCluster(a) returned incarnation %q, want a random id", inc)
	}
	// Claiming the recorded name again succeeds, on any connection, and
	// returns the same incarnation.
	if got, err := c1.ClaimCluster(ctx, "a"); err != nil || got != inc {
		t.Fatalf("ClaimCluster(a) again = %q, %v; want %q", got, err, inc)
	}
	if got, err := c2.ClaimCluster(ctx, "a"); err != nil || got != inc {
		t.Fatalf("ClaimCluster(a) on a second connection = %q, %v; want %q", got, err, inc)
	}
	// Another name is refused, and the error names both.
	_, err = c2.ClaimCluster(ctx, "b")
	if !errors.Is(err, coord.ErrOtherCluster) {
		t.Fatalf("ClaimCluster(b) = %v, want ErrOtherCluster", err)
	}
	if msg := err.Error(); !strings.Contains(msg, `"a"`) || !strings.Contains(msg, `"b"`) {
		t.Fatalf("ClaimCluster(b) = %q, want both cluster names in the message", msg)
	}
	// The refusal changed nothing.
	if got, err := c1.ClaimCluster(ctx, "a"); err != nil || got != inc {
		t.Fatalf("ClaimCluster(a) after the refusal = %q, %v; want %q", got, err, inc)
	}
	// The record is not part of the voter record or the View.
	if v, err := c1.Voters(ctx); err != nil || v.Version != 0 {
		t.Fatalf("Voters after ClaimCluster = %+v, %v; want none", v, err)
	}
	s := newSession(t, c1)
	WaitView(t, s.Watch(ctx), Slack, "an empty View", func(v coord.View) error {
		if len(v.Members) != 0 || v.Leader != (coord.Leader{}) {
			return fmt.Errorf("view %+v, want empty", v)
		}
		return nil
	})
}

// testSettings: the first ClaimSettings records its settings and later
// claims (on any connection) get the record back, whatever they propose;
// SetSettings is a compare-and-swap on the version; the record lives beside
// the cluster name and the voter record and changes neither.
func testSettings(t *testing.T, c1, c2 coord.Coordinator) {
	ctx := ctxFor(t, 30*time.Second)
	if s, err := c1.Settings(ctx); err != nil || s != (coord.Settings{}) {
		t.Fatalf("Settings before any claim = %+v, %v; want zero, nil", s, err)
	}
	if _, err := c1.ClaimCluster(ctx, "a"); err != nil {
		t.Fatalf("ClaimCluster(a): %v", err)
	}
	first := coord.Settings{LeaseDuration: 2 * time.Second, ClockDrift: 0.05, MaxRequests: 100, MaxLease: 2 * time.Second}
	got, err := c1.ClaimSettings(ctx, first)
	if err != nil || got.Version <= 0 {
		t.Fatalf("first ClaimSettings = %+v, %v; want the settings with a positive version", got, err)
	}
	if want := withVersion(first, got.Version); got != want {
		t.Fatalf("first ClaimSettings = %+v, want %+v", got, want)
	}
	other := coord.Settings{LeaseDuration: 6 * time.Second, ClockDrift: 0.1, MaxRequests: 7, MaxLease: 6 * time.Second}
	if again, err := c2.ClaimSettings(ctx, other); err != nil || again != got {
		t.Fatalf("ClaimSettings(other) on a second connection = %+v, %v; want the record %+v", again, err, got)
	}
	if read, err := c2.Settings(ctx); err != nil || read != got {
		t.Fatalf("Settings = %+v, %v; want %+v", read, err, got)
	}
	// Invalid settings are never recorded.
	if err := c1.SetSettings(ctx, got, coord.Settings{LeaseDuration: time.Second, MaxRequests: 1, MaxLease: time.Millisecond}); err == nil {
		t.Fatal("SetSettings with MaxLease under the lease succeeded")
	}
	// A change from the current version wins; one from the old version
	// loses with ErrConflict and changes nothing.
	next := coord.Settings{LeaseDuration: time.Second, ClockDrift: 0.05, MaxRequests: 100, MaxLease: 2 * time.Second}
	if err := c2.SetSettings(ctx, got, next); err != nil {
		t.Fatalf("SetSettings from the current version: %v", err)
	}
	after, err := c1.Settings(ctx)
	if err != nil || after.Version == got.Version || withVersion(after, 0) != next {
		t.Fatalf("Settings after SetSettings = %+v, %v; want %+v with a new version", after, err, next)
	}
	if err := c1.SetSettings(ctx, got, other); !errors.Is(err, coord.ErrConflict) {
		t.Fatalf("SetSettings from a stale version = %v, want ErrConflict", err)
	}
	if err := c1.SetSettings(ctx, coord.Settings{}, other); !errors.Is(err, coord.ErrConflict) {
		t.Fatalf("SetSettings from no record = %v, want ErrConflict", err)
	}
	if read, err := c2.ClaimSettings(ctx, other); err != nil || read != after {
		t.Fatalf("ClaimSettings after the refused change = %+v, %v; want %+v", read, err, after)
	}
	// The settings are neither the cluster name nor the voter record.
	if _, err := c2.ClaimCluster(ctx, "a"); err != nil {
		t.Fatalf("ClaimCluster(a) after the settings changed: %v", err)
	}
	if v, err := c1.Voters(ctx); err != nil || v.Version != 0 {
		t.Fatalf("Voters after the settings changed = %+v, %v; want none", v, err)
	}
}

func withVersion(s coord.Settings, v int64) coord.Settings {
	s.Version = v
	return s
}

// testClaimSettingsRace: of concurrent first claims with different
// settings, exactly one is recorded and every claim returns it.
func testClaimSettingsRace(t *testing.T, cs []coord.Coordinator) {
	ctx := ctxFor(t, 30*time.Second)
	got := make([]coord.Settings, len(cs))
	errs := make([]error, len(cs))
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lease := time.Duration(i+1) * time.Second
			got[i], errs[i] = c.ClaimSettings(ctx, coord.Settings{LeaseDuration: lease, MaxRequests: i + 1, MaxLease: lease})
		}()
	}
	wg.Wait()
	for i := range cs {
		if errs[i] != nil {
			t.Fatalf("ClaimSettings %d: %v", i, errs[i])
		}
		if got[i] != got[0] {
			t.Fatalf("ClaimSettings %d returned %+v, claim 0 %+v: want one record", i, got[i], got[0])
		}
	}
	if got[0].MaxRequests < 1 || got[0].LeaseDuration != time.Duration(got[0].MaxRequests)*time.Second {
		t.Fatalf("recorded %+v, which no claim proposed", got[0])
	}
}

// testClaimClusterRace: of concurrent first claims with different names,
// exactly one wins.
func testClaimClusterRace(t *testing.T, cs []coord.Coordinator) {
	ctx := ctxFor(t, 30*time.Second)
	errs := make([]error, len(cs))
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = c.ClaimCluster(ctx, fmt.Sprintf("c%d", i))
		}()
	}
	wg.Wait()
	winners := 0
	for i, err := range errs {
		switch {
		case err == nil:
			winners++
		case !errors.Is(err, coord.ErrOtherCluster):
			t.Fatalf("ClaimCluster(c%d) = %v, want nil or ErrOtherCluster", i, err)
		}
	}
	if winners != 1 {
		t.Fatalf("%d of %d concurrent claims won (%v), want exactly 1", winners, len(cs), errs)
	}
}

// testClaimClusterIncarnation: concurrent first claims of one name all
// return the same incarnation, and a record created anew (a fresh
// namespace: the record is gone, as after a coordinator rebuild) has
// another.
func testClaimClusterIncarnation(t *testing.T, open func(t *testing.T) coord.Coordinator) {
	ctx := ctxFor(t, 30*time.Second)
	claimAll := func(t *testing.T) string {
		t.Helper()
		cs := []coord.Coordinator{open(t), open(t), open(t), open(t)}
		incs := make([]string, len(cs))
		errs := make([]error, len(cs))
		var wg sync.WaitGroup
		for i, c := range cs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				incs[i], errs[i] = c.ClaimCluster(ctx, "a")
			}()
		}
		wg.Wait()
		for i := range cs {
			if errs[i] != nil || incs[i] == "" || incs[i] != incs[0] {
				t.Fatalf("concurrent ClaimCluster(a): incarnations %q, errors %v; want one incarnation for all", incs, errs)
			}
		}
		return incs[0]
	}
	first := claimAll(t)
	var second string
	t.Run("Rebuilt", func(t *testing.T) { second = claimAll(t) })
	if second == "" || second == first {
		t.Fatalf("incarnation of a record created anew = %q, want one other than the first record's %q", second, first)
	}
}

func testAbandoned(t *testing.T, c1 *conn, c2 coord.Coordinator) {
	ctx := ctxFor(t, 60*time.Second)
	// Not closed: the test abandons it.
	s1, err := c1.NewSession(ctx, TTL)
	if err != nil {
		t.Fatalf("NewSession: %v", err)
	}
	if err := s1.Register(ctx, coord.Member{ID: "n1", Addr: "addr1"}); err != nil {
		t.Fatalf("Register: %v", err)
	}
	epoch1 := awaitWin(t, campaign(ctx, s1, "n1"), Slack, "n1 leads")

	s2 := newSession(t, c2)
	ch := s2.Watch(ctx)
	WaitView(t, ch, Slack, "n1 registered and leading", func(v coord.View) error {
		if err := memberIs("n1", "addr1")(v); err != nil {
			return err
		}
		return leaderIs(coord.Leader{ID: "n1", Epoch: epoch1})(v)
	})
	r2 := campaign(ctx, s2, "n2")

	// Cut n1 off as a crash would: close its connection, not its session.
	closed := time.Now()
	c1.close(t)
	WaitView(t, ch, TTL+Slack, "n1's member entry expired", memberGone("n1"))
	epoch2 := awaitWin(t, r2, TTL+Slack, "n2 leads after n1's session expired")
	if epoch2 <= epoch1 {
		t.Fatalf("epoch went from %d to %d, want strictly greater", epoch1, epoch2)
	}
	t.Logf("n1's entries expired and n2 took over %v after the connection closed", time.Since(closed).Round(time.Millisecond))

	// The abandoned session does not claim to be live past its TTL.
	WaitFor(t, TTL+Slack, "abandoned session's deadline passed", func() error {
		if s1.Healthy() {
			return errors.New("still Healthy")
		}
		if d := s1.Deadline().Sub(clock.System().Now()); d > 0 {
			return fmt.Errorf("deadline still %v away", d)
		}
		return nil
	})
}

// testReplaceVoters: the unfenced compare-and-swap of the recovery command.
func testReplaceVoters(t *testing.T, c coord.Coordinator) {
	ctx := ctxFor(t, 30*time.Second)
	// Version 0 creates the record, once.
	if err := c.ReplaceVoters(ctx, coord.Voters{}, []string{"a", "b", "c"}); err != nil {
		t.Fatalf("ReplaceVoters on no record: %v", err)
	}
	if err := c.ReplaceVoters(ctx, coord.Voters{}, []string{"d"}); !errors.Is(err, coord.ErrConflict) {
		t.Fatalf("ReplaceVoters(version 0) over a record = %v, want ErrConflict", err)
	}
	v1, err := c.Voters(ctx)
	if err != nil || v1.Version <= 0 || len(v1.IDs) != 3 || v1.Unsealed {
		t.Fatalf("Voters = %+v, %v; want [a b c], sealed (the recovery command's record holds data)", v1, err)
	}
	// No session, no leadership: the version is the only check.
	if err := c.ReplaceVoters(ctx, v1, []string{"b"}); err != nil {
		t.Fatalf("ReplaceVoters: %v", err)
	}
	v2, err := c.Voters(ctx)
	if err != nil || v2.Version <= v1.Version || len(v2.IDs) != 1 || !v2.Contains("b") {
		t.Fatalf("Voters = %+v, %v; want [b] with a version above %d", v2, err, v1.Version)
	}
	if err := c.ReplaceVoters(ctx, v1, []string{"c"}); !errors.Is(err, coord.ErrConflict) {
		t.Fatalf("ReplaceVoters with a stale version = %v, want ErrConflict", err)
	}
	if got, err := c.Voters(ctx); err != nil || got.Version != v2.Version {
		t.Fatalf("a refused ReplaceVoters changed the record to %+v (%v)", got, err)
	}
}

// testEpochBase: the base starts at 0, only goes up, and concurrent raises
// leave the highest.
func testEpochBase(t *testing.T, cs []coord.Coordinator) {
	ctx := ctxFor(t, 30*time.Second)
	c := cs[0]
	if b, err := c.EpochBase(ctx); err != nil || b != 0 {
		t.Fatalf("EpochBase before any write = %d, %v; want 0, nil", b, err)
	}
	if err := c.RaiseEpochBase(ctx, 100); err != nil {
		t.Fatalf("RaiseEpochBase(100): %v", err)
	}
	if err := c.RaiseEpochBase(ctx, 50); err != nil {
		t.Fatalf("RaiseEpochBase(50): %v", err)
	}
	if b, err := cs[1].EpochBase(ctx); err != nil || b != 100 {
		t.Fatalf("EpochBase after raising to 100 and then 50 = %d, %v; want 100 (never lowered)", b, err)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(cs))
	for i, ci := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = ci.RaiseEpochBase(ctx, int64(1000+i))
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("concurrent RaiseEpochBase #%d: %v", i, err)
		}
	}
	want := int64(1000 + len(cs) - 1)
	if b, err := c.EpochBase(ctx); err != nil || b != want {
		t.Fatalf("EpochBase after concurrent raises = %d, %v; want %d", b, err, want)
	}
	// The base is not part of the voter record or the cluster record.
	if v, err := c.Voters(ctx); err != nil || v.Version != 0 {
		t.Fatalf("Voters after RaiseEpochBase = %+v, %v; want none", v, err)
	}
	if _, err := c.ClaimCluster(ctx, "x"); err != nil {
		t.Fatalf("ClaimCluster after RaiseEpochBase: %v", err)
	}
}

// testWithEpochBase: a session of coord.WithEpochBase adds the base to
// the epochs it wins and watches, and fences SetVoters with the raw epoch.
func testWithEpochBase(t *testing.T, raw coord.Coordinator) {
	ctx := ctxFor(t, 60*time.Second)
	rs := newSession(t, raw)
	rawEpoch := awaitWin(t, campaign(ctx, rs, "r"), Slack, "raw session leads")
	if err := rs.Resign(ctx); err != nil {
		t.Fatalf("Resign: %v", err)
	}
	const base = int64(1) << 40
	if err := raw.RaiseEpochBase(ctx, base); err != nil {
		t.Fatalf("RaiseEpochBase: %v", err)
	}
	c := coord.WithEpochBase(raw)
	if coord.WithEpochBase(c) != c {
		t.Fatal("WithEpochBase wrapped twice")
	}
	if err := c.CreateVoters(ctx, []string{"a"}); err != nil {
		t.Fatalf("CreateVoters: %v", err)
	}
	s := newSession(t, c)
	epoch := awaitWin(t, campaign(ctx, s, "a"), Slack, "a leads")
	if epoch <= base+rawEpoch {
		t.Fatalf("epoch %d under the base %d plus the earlier raw epoch %d", epoch, base, rawEpoch)
	}
	WaitView(t, s.Watch(ctx), Slack, "a leads with the based epoch", leaderIs(coord.Leader{ID: "a", Epoch: epoch}))
	WaitView(t, rs.Watch(ctx), Slack, "a leads with the raw epoch", leaderIs(coord.Leader{ID: "a", Epoch: epoch - base}))
	v, err := c.Voters(ctx)
	if err != nil {
		t.Fatalf("Voters: %v", err)
	}
	if err := s.SetVoters(ctx, epoch-base, v, []string{"a", "z"}); !errors.Is(err, coord.ErrNotLeader) {
		t.Fatalf("SetVoters with the raw epoch = %v, want ErrNotLeader", err)
	}
	if err := s.SetVoters(ctx, epoch, v, []string{"a", "b"}); err != nil {
		t.Fatalf("SetVoters with the based epoch: %v", err)
	}
}

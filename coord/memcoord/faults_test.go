package memcoord_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kvstore/kvstore/clock"
	"github.com/kvstore/kvstore/coord"
	"github.com/kvstore/kvstore/coord/coordtest"
	"github.com/kvstore/kvstore/coord/memcoord"
)

// The tests in this file run inside synctest bubbles: time is virtual, a
// TTL costs no wall-clock time, and synctest.Wait lets every goroutine
// settle before a check.

const ttl = coordtest.TTL

// rateClock reads the time package (the bubble's virtual time) at a rate:
// 1.1 counts 1.1 s for every second. It is the node clock of a simulation.
type rateClock struct {
	start time.Time
	rate  float64
}

func newRateClock(rate float64) *rateClock { return &rateClock{start: time.Now(), rate: rate} }

// Now implements clock.Clock; readings start an hour after the origin.
func (c *rateClock) Now() clock.Instant {
	return clock.Instant{}.Add(time.Hour + time.Duration(float64(time.Since(c.start))*c.rate))
}

// Suspended implements clock.Clock: never suspended.
func (c *rateClock) Suspended() time.Duration { return 0 }

// world is a Server and the Coordinators of one bubble test.
type world struct {
	t   *testing.T
	srv *memcoord.Server
	ctx context.Context
}

func newWorld(t *testing.T) *world {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return &world{t: t, srv: memcoord.NewServer(), ctx: ctx}
}

// connect connects a Coordinator named name whose clock runs at rate, and
// closes it at cleanup.
func (w *world) connect(name string, rate float64) (*memcoord.Coordinator, clock.Clock) {
	w.t.Helper()
	clk := newRateClock(rate)
	c, err := memcoord.New(w.srv, memcoord.Config{Name: name, Clock: clk})
	if err != nil {
		w.t.Fatalf("New: %v", err)
	}
	w.t.Cleanup(func() { c.Close() })
	return c, clk
}

// session opens a session of d on c, closed at cleanup (c heals first).
func (w *world) session(c *memcoord.Coordinator, d time.Duration) coord.Session {
	w.t.Helper()
	s, err := c.NewSession(w.ctx, d)
	if err != nil {
		w.t.Fatalf("NewSession: %v", err)
	}
	w.t.Cleanup(func() {
		c.Heal()
		if err := s.Close(context.Background()); err != nil {
			w.t.Errorf("Session.Close: %v", err)
		}
	})
	return s
}

// campaign runs s.Campaign in a goroutine.
func campaign(ctx context.Context, s coord.Session, id string) <-chan error {
	ch := make(chan error, 1)
	go func() {
		_, err := s.Campaign(ctx, id)
		ch <- err
	}()
	return ch
}

// win campaigns and fails the test unless s leads once every goroutine
// settled.
func (w *world) win(s coord.Session, id string) int64 {
	w.t.Helper()
	e, err := s.Campaign(w.ctx, id)
	if err != nil {
		w.t.Fatalf("Campaign %s: %v", id, err)
	}
	return e
}

// viewNow is the server's View, which a connected watcher sees.
func (w *world) viewNow() coord.View { return w.srv.View() }

// untilDone waits (in virtual time) for s to end and returns when.
func untilDone(t *testing.T, s coord.Session, limit time.Duration) time.Time {
	t.Helper()
	select {
	case <-s.Done():
		return time.Now()
	case <-time.After(limit):
		t.Fatalf("session not Done after %v: Healthy=%v, deadline in %v", limit, s.Healthy(), s.Deadline())
		return time.Time{}
	}
}

// TestCutShortHeals: a cut turns the session unhealthy at once and blocks
// calls; a heal before the deadline renews it at once.
func TestCutShortHeals(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t)
		c, clk := w.connect("n1", 1)
		s := w.session(c, ttl)
		if err := s.Register(w.ctx, coord.Member{ID: "n1", Addr: "a1"}); err != nil {
			t.Fatalf("Register: %v", err)
		}
		changed := s.Changed()
		c.Cut()
		synctest.Wait()
		if s.Healthy() {
			t.Fatal("Healthy right after the cut")
		}
		select {
		case <-changed:
		default:
			t.Fatal("Changed not signaled by the cut")
		}
		if !w.srv.IsCut("n1") {
			t.Fatal("IsCut(n1) false after Cut")
		}

		// A call blocks while cut, and ends with its ctx.
		ctx, cancel := context.WithTimeout(w.ctx, time.Second)
		_, err := c.Voters(ctx)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Voters while cut = %v, want DeadlineExceeded", err)
		}
		// One in flight goes through when the link heals.
		res := make(chan error, 1)
		go func() {
			_, err := c.Voters(w.ctx)
			res <- err
		}()
		synctest.Wait()
		select {
		case err := <-res:
			t.Fatalf("Voters returned %v while cut", err)
		default:
		}
		if d := s.Deadline().Sub(clk.Now()); d <= 0 {
			t.Fatalf("deadline passed %v after a cut of 1 s of a %v session", -d, ttl)
		}

		healed := clk.Now()
		c.Heal()
		synctest.Wait()
		if err := <-res; err != nil {
			t.Fatalf("Voters after the heal: %v", err)
		}
		if !s.Healthy() || s.Err() != nil {
			t.Fatalf("after the heal: Healthy=%v Err=%v", s.Healthy(), s.Err())
		}
		if d := s.Deadline(); d.Before(healed.Add(ttl * 8 / 10)) {
			t.Fatalf("deadline %v after the heal, want a renewal sent then", d.Sub(healed))
		}
		if _, ok := w.viewNow().Members["n1"]; !ok {
			t.Fatalf("n1 lost its membership by a short cut: %+v", w.viewNow())
		}
	})
}

// TestCutPastTTL: a cut longer than the TTL ends the session at its local
// deadline, as expired, before the server drops its entries a TTL after
// the last keep-alive; the session stays ended after the heal.
func TestCutPastTTL(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t)
		c, clk := w.connect("n1", 1)
		obs, _ := w.connect("obs", 1)
		s := w.session(c, ttl)
		if err := s.Register(w.ctx, coord.Member{ID: "n1", Addr: "a1"}); err != nil {
			t.Fatalf("Register: %v", err)
		}
		epoch := w.win(s, "n1")
		views := w.session(obs, time.Hour).Watch(w.ctx)

		time.Sleep(ttl / 2) // keep-alives run meanwhile
		c.Cut()
		frozen := s.Deadline()
		cut := time.Now()
		ended := untilDone(t, s, 2*ttl)
		if !errors.Is(s.Err(), coord.ErrSessionExpired) {
			t.Fatalf("Err = %v, want ErrSessionExpired", s.Err())
		}
		if now := clk.Now(); now.Before(frozen) {
			t.Fatalf("session ended %v before its deadline", frozen.Sub(now))
		}
		if s.Healthy() || clk.Now().Before(s.Deadline()) {
			t.Fatalf("ended session: Healthy=%v, deadline in %v", s.Healthy(), s.Deadline().Sub(clk.Now()))
		}
		v := coordtest.WaitView(t, views, 2*ttl, "n1's entries dropped", func(v coord.View) error {
			if _, ok := v.Members["n1"]; ok || v.Leader.ID != "" {
				return fmt.Errorf("view %+v", v)
			}
			return nil
		})
		gone := time.Now()
		if !ended.Before(gone) {
			t.Fatalf("the server dropped the session %v before it ended locally", ended.Sub(gone))
		}
		if gone.Sub(cut) > ttl {
			t.Fatalf("the server dropped the session %v after the cut, more than a TTL after its last keep-alive", gone.Sub(cut))
		}
		t.Logf("cut at 0; ended locally at %v, dropped by the server at %v (virtual); view %+v", ended.Sub(cut), gone.Sub(cut), v)

		c.Heal()
		synctest.Wait()
		if err := s.Register(w.ctx, coord.Member{ID: "n1", Addr: "a1"}); !errors.Is(err, coord.ErrSessionExpired) {
			t.Fatalf("Register after the heal = %v, want ErrSessionExpired", err)
		}
		if err := s.SetVoters(w.ctx, epoch, coord.Voters{}, []string{"n1"}); !errors.Is(err, coord.ErrNotLeader) {
			t.Fatalf("SetVoters after expiry = %v, want ErrNotLeader", err)
		}
		if n := w.srv.Sessions("n1"); n != 0 {
			t.Fatalf("server holds %d sessions of n1, want 0", n)
		}
	})
}

// TestCutOutlivesRestart: a cut is the name's, so a node restarted under
// a cut (a new Coordinator of its name) is cut too.
func TestCutOutlivesRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t)
		w.srv.Cut("n1")
		c, _ := w.connect("n1", 1)
		ctx, cancel := context.WithTimeout(w.ctx, 5*time.Second)
		defer cancel()
		if _, err := c.NewSession(ctx, ttl); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("NewSession under a cut = %v, want DeadlineExceeded", err)
		}
		w.srv.Heal("n1")
		s := w.session(c, ttl)
		if !s.Healthy() {
			t.Fatal("new session after the heal not Healthy")
		}
	})
}

// TestExpireSessions: session loss drops the entries at once, the next
// candidate leads with a greater epoch, and the client learns it at its
// next keep-alive.
func TestExpireSessions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t)
		c1, _ := w.connect("n1", 1)
		c2, _ := w.connect("n2", 1)
		s1, s2 := w.session(c1, ttl), w.session(c2, ttl)
		if err := s1.Register(w.ctx, coord.Member{ID: "n1", Addr: "a1"}); err != nil {
			t.Fatalf("Register: %v", err)
		}
		e1 := w.win(s1, "n1")
		r2 := campaign(w.ctx, s2, "n2")
		synctest.Wait()

		lost := time.Now()
		if n := c1.ExpireSessions(); n != 1 {
			t.Fatalf("ExpireSessions = %d, want 1", n)
		}
		synctest.Wait()
		if err := <-r2; err != nil {
			t.Fatalf("n2's Campaign: %v", err)
		}
		v := w.viewNow()
		if v.Leader.ID != "n2" || v.Leader.Epoch <= e1 {
			t.Fatalf("view %+v after n1's session was lost, want n2 leading above epoch %d", v, e1)
		}
		if _, ok := v.Members["n1"]; ok {
			t.Fatalf("n1 still a member: %+v", v)
		}
		untilDone(t, s1, ttl/3+time.Millisecond)
		if !errors.Is(s1.Err(), coord.ErrSessionExpired) {
			t.Fatalf("Err = %v, want ErrSessionExpired", s1.Err())
		}
		t.Logf("n1 learned of its lost session %v later (virtual)", time.Since(lost))
		if err := s1.SetVoters(w.ctx, e1, coord.Voters{}, []string{"n1"}); !errors.Is(err, coord.ErrNotLeader) {
			t.Fatalf("SetVoters by the lost leader = %v, want ErrNotLeader", err)
		}
	})
}

// TestRebuild: the coordinator loses everything; the next claim records a
// new incarnation, raw epochs and versions start low again, and the old
// sessions end as expired.
func TestRebuild(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t)
		c, _ := w.connect("n1", 1)
		inc1, err := c.ClaimCluster(w.ctx, "kv")
		if err != nil {
			t.Fatalf("ClaimCluster: %v", err)
		}
		if err := c.CreateVoters(w.ctx, []string{"n1"}); err != nil {
			t.Fatalf("CreateVoters: %v", err)
		}
		if err := c.RaiseEpochBase(w.ctx, 100); err != nil {
			t.Fatalf("RaiseEpochBase: %v", err)
		}
		s := w.session(c, ttl)
		for i := range 5 {
			if err := s.Register(w.ctx, coord.Member{ID: "n1", Addr: fmt.Sprint(i)}); err != nil {
				t.Fatalf("Register: %v", err)
			}
		}
		e1 := w.win(s, "n1")

		w.srv.Rebuild()
		if v := w.viewNow(); len(v.Members) != 0 || v.Leader != (coord.Leader{}) {
			t.Fatalf("view after Rebuild = %+v, want empty", v)
		}
		inc2, err := c.ClaimCluster(w.ctx, "kv")
		if err != nil || inc2 == inc1 {
			t.Fatalf("ClaimCluster after Rebuild = %q, %v; want a new incarnation (was %q)", inc2, err, inc1)
		}
		if v, err := c.Voters(w.ctx); err != nil || v.Version != 0 {
			t.Fatalf("Voters after Rebuild = %+v, %v; want none", v, err)
		}
		if b, err := c.EpochBase(w.ctx); err != nil || b != 0 {
			t.Fatalf("EpochBase after Rebuild = %d, %v; want 0", b, err)
		}
		untilDone(t, s, ttl/3+time.Millisecond)
		if !errors.Is(s.Err(), coord.ErrSessionExpired) {
			t.Fatalf("Err = %v, want ErrSessionExpired", s.Err())
		}
		e2 := w.win(w.session(c, ttl), "n1")
		if e2 >= e1 {
			t.Fatalf("raw epoch after Rebuild %d, before %d: want it to start low again", e2, e1)
		}
	})
}

// TestCampaignCanceledWhileCut: a Campaign canceled while the connection
// is cut returns within withdrawWait, and its candidacy is withdrawn once
// the connection heals: it never leads.
func TestCampaignCanceledWhileCut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t)
		ca, _ := w.connect("a", 1)
		cb, _ := w.connect("b", 1)
		a, b := w.session(ca, time.Minute), w.session(cb, time.Minute)
		w.win(a, "a")
		ctx, cancel := context.WithCancel(w.ctx)
		rb := campaign(ctx, b, "b")
		synctest.Wait()
		cb.Cut()
		cancel()
		start := time.Now()
		if err := <-rb; !errors.Is(err, context.Canceled) {
			t.Fatalf("canceled Campaign = %v, want context.Canceled", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("canceled Campaign returned after %v, want at most 2 s", d)
		}
		if err := a.Resign(w.ctx); err != nil {
			t.Fatalf("Resign: %v", err)
		}
		if v := w.viewNow(); v.Leader.ID != "b" {
			t.Fatalf("view %+v: b's entry should still be on the server while cut", v)
		}
		cb.Heal()
		synctest.Wait()
		if v := w.viewNow(); v.Leader != (coord.Leader{}) {
			t.Fatalf("view %+v after the heal, want no leader: b's candidacy withdrawn", v)
		}
	})
}

// TestClockRateBeyondMargin: with the client's clock slower than the
// server's by less than the drift margin, a cut session ends locally
// before the server drops it; slower by more, after (the check a
// simulation's drift schedules rely on).
func TestClockRateBeyondMargin(t *testing.T) {
	for _, tc := range []struct {
		rate float64
		safe bool
	}{{1.05, true}, {0.95, true}, {0.8, false}} {
		t.Run(fmt.Sprint(tc.rate), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				w := newWorld(t)
				c, _ := w.connect("n1", tc.rate)
				obs, _ := w.connect("obs", 1)
				s := w.session(c, ttl)
				if err := s.Register(w.ctx, coord.Member{ID: "n1", Addr: "a1"}); err != nil {
					t.Fatalf("Register: %v", err)
				}
				views := w.session(obs, time.Hour).Watch(w.ctx)
				gone := make(chan time.Time, 1)
				go func() {
					for v := range views {
						if _, ok := v.Members["n1"]; !ok {
							gone <- time.Now()
							return
						}
					}
				}()
				c.Cut()
				ended := untilDone(t, s, 2*ttl)
				dropped := <-gone
				if safe := ended.Before(dropped); safe != tc.safe {
					t.Fatalf("rate %v: ended locally at %v, dropped at %v (virtual): local end first = %v, want %v",
						tc.rate, ended.Format("05.000"), dropped.Format("05.000"), safe, tc.safe)
				}
			})
		})
	}
}

// TestSyncTestElection runs the conformance suite's election and session
// expiry in a bubble: a leader abandoned by a crash (its Coordinator
// closed) loses its entries a TTL after its last keep-alive, and the next
// candidate takes over with a greater epoch, in no wall-clock time.
func TestSyncTestElection(t *testing.T) {
	wallStart := time.Now()
	var virtual time.Duration
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t)
		c1, _ := w.connect("n1", 1)
		c2, _ := w.connect("n2", 1)
		s1, err := c1.NewSession(w.ctx, ttl) // abandoned: not closed
		if err != nil {
			t.Fatalf("NewSession: %v", err)
		}
		if err := s1.Register(w.ctx, coord.Member{ID: "n1", Addr: "a1"}); err != nil {
			t.Fatalf("Register: %v", err)
		}
		e1 := w.win(s1, "n1")
		s2 := w.session(c2, ttl)
		views := s2.Watch(w.ctx)
		coordtest.WaitView(t, views, time.Second, "n1 leads", func(v coord.View) error {
			if v.Leader != (coord.Leader{ID: "n1", Epoch: e1}) || v.Members["n1"] != "a1" {
				return fmt.Errorf("view %+v", v)
			}
			return nil
		})
		r2 := make(chan int64, 1)
		go func() {
			e, err := s2.Campaign(w.ctx, "n2")
			if err != nil {
				t.Errorf("Campaign n2: %v", err)
			}
			r2 <- e
		}()

		crashed := time.Now()
		c1.Close()
		if !errors.Is(s1.Err(), coord.ErrSessionClosed) {
			t.Fatalf("abandoned session Err = %v, want ErrSessionClosed", s1.Err())
		}
		e2 := <-r2
		virtual = time.Since(crashed)
		if e2 <= e1 {
			t.Fatalf("epoch went from %d to %d, want strictly greater", e1, e2)
		}
		if virtual < ttl-ttl/3 || virtual > ttl {
			t.Fatalf("n2 took over %v after the crash, want within the TTL %v and after the last keep-alive's TTL", virtual, ttl)
		}
		// One View shows n1's entries gone and n2 leading.
		coordtest.WaitView(t, views, time.Second, "n1 expired and n2 leads", func(v coord.View) error {
			if _, ok := v.Members["n1"]; ok || v.Leader != (coord.Leader{ID: "n2", Epoch: e2}) {
				return fmt.Errorf("view %+v", v)
			}
			return nil
		})
	})
	wall := time.Since(wallStart)
	t.Logf("takeover after a %v TTL expiry: %v of virtual time, %v of wall-clock time", ttl, virtual, wall)
	if wall > ttl/2 {
		t.Fatalf("the bubble took %v of wall-clock time for a %v TTL expiry", wall, ttl)
	}
}

// TestHooksByName: the hooks act on every connection of the name, and on
// no other.
func TestHooksByName(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t)
		a1, _ := w.connect("n1", 1)
		a2, _ := w.connect("n1", 1) // a restarted node, the old one not yet closed
		b, _ := w.connect("n2", 1)
		sa1, sa2, sb := w.session(a1, ttl), w.session(a2, ttl), w.session(b, ttl)
		a2.Cut()
		synctest.Wait()
		if sa1.Healthy() || sa2.Healthy() || !sb.Healthy() {
			t.Fatalf("after Cut(n1): healthy n1 %v %v, n2 %v; want false false true", sa1.Healthy(), sa2.Healthy(), sb.Healthy())
		}
		if _, err := b.Voters(w.ctx); err != nil {
			t.Fatalf("n2's call while n1 is cut: %v", err)
		}
		a1.Heal()
		synctest.Wait()
		if !sa1.Healthy() || !sa2.Healthy() {
			t.Fatalf("after Heal(n1): healthy %v %v", sa1.Healthy(), sa2.Healthy())
		}
		if n := w.srv.ExpireSessions("n1"); n != 2 {
			t.Fatalf("ExpireSessions(n1) = %d, want 2", n)
		}
		if n := w.srv.Sessions("n2"); n != 1 {
			t.Fatalf("n2 has %d sessions after n1's expired, want 1", n)
		}
		// n1's next keep-alives find their sessions gone.
		untilDone(t, sa1, ttl/3+time.Millisecond)
		untilDone(t, sa2, ttl/3+time.Millisecond)
		if !errors.Is(sa1.Err(), coord.ErrSessionExpired) || !errors.Is(sa2.Err(), coord.ErrSessionExpired) || sb.Err() != nil {
			t.Fatalf("after ExpireSessions(n1): Err %v, %v, n2 %v", sa1.Err(), sa2.Err(), sb.Err())
		}
	})
}

// TestClosedCoordinator: Close ends the sessions as closed, leaves their
// entries to expire by their TTL, and every later call fails at once.
func TestClosedCoordinator(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t)
		c, clk := w.connect("n1", 1)
		s, err := c.NewSession(w.ctx, ttl)
		if err != nil {
			t.Fatalf("NewSession: %v", err)
		}
		if err := s.Register(w.ctx, coord.Member{ID: "n1", Addr: "a1"}); err != nil {
			t.Fatalf("Register: %v", err)
		}
		if err := c.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if !errors.Is(s.Err(), coord.ErrSessionClosed) || s.Healthy() || clk.Now().Before(s.Deadline()) {
			t.Fatalf("session after Close: Err=%v Healthy=%v deadline in %v", s.Err(), s.Healthy(), s.Deadline().Sub(clk.Now()))
		}
		if _, ok := w.viewNow().Members["n1"]; !ok {
			t.Fatal("Close revoked the session: its member is gone at once")
		}
		if _, err := c.Voters(w.ctx); err == nil {
			t.Fatal("Voters on a closed Coordinator succeeded")
		}
		if _, err := c.NewSession(w.ctx, ttl); err == nil {
			t.Fatal("NewSession on a closed Coordinator succeeded")
		}
		if err := s.Close(w.ctx); err != nil {
			t.Fatalf("Session.Close after Coordinator.Close: %v", err)
		}
		// Virtual time: the server's expiry timer fires meanwhile (a tie
		// with it at exactly the TTL would be ordered at random).
		time.Sleep(ttl + time.Millisecond)
		if _, ok := w.viewNow().Members["n1"]; ok {
			t.Fatalf("n1 still a member a TTL after its Coordinator closed: %+v", w.viewNow())
		}
	})
}

package sessionstate

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvstore/kvstore/clock"
)

type lead struct{ epoch int64 }

// newState returns a State on clk whose goroutines are plain ones.
func newState(t *testing.T, clk clock.Clock) *State[lead] {
	t.Helper()
	s := new(State[lead])
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s.Init("test", clk, ctx, cancel, func(owner *sync.WaitGroup, f func()) bool {
		if owner != nil {
			owner.Add(1)
		}
		go func() {
			if owner != nil {
				defer owner.Done()
			}
			f()
		}()
		return true
	})
	return s
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestEndOnce(t *testing.T) {
	clk := clock.NewFake()
	s := newState(t, clk)
	s.Lock()
	s.SetDeadlineLocked(clk.Now().Add(time.Hour))
	s.Unlock()
	changed := s.Changed()
	if !s.Healthy() || s.Err() != nil || closed(s.Done()) {
		t.Fatalf("a new session: healthy %v, err %v, done %v", s.Healthy(), s.Err(), closed(s.Done()))
	}
	first := errors.New("first")
	if !s.End(first) {
		t.Fatal("the first End did not end the session")
	}
	if s.End(errors.New("second")) {
		t.Fatal("a second End ended it again")
	}
	if s.Err() != first || !closed(s.Done()) || !closed(changed) || s.Healthy() {
		t.Fatalf("ended: err %v, done %v, changed %v, healthy %v", s.Err(), closed(s.Done()), closed(changed), s.Healthy())
	}
	if now := clk.Now(); s.Deadline().After(now) {
		t.Fatalf("deadline %v after the end at %v", s.Deadline(), now)
	}
	if s.Context().Err() == nil {
		t.Fatal("the session's context lives on")
	}
	if s.Go(func() {}) {
		t.Fatal("Go ran a goroutine for an ended session")
	}
	if _, err := s.Campaign(context.Background(), "n1", nil); !errors.Is(err, first) {
		t.Fatalf("campaign on an ended session: %v, want %v", err, first)
	}
}

func TestHealthSignalsChanges(t *testing.T) {
	s := newState(t, clock.NewFake())
	ch := s.Changed()
	s.SetHealthy(true)
	if closed(ch) {
		t.Fatal("Changed fired without a change")
	}
	s.SetHealthy(false)
	if !closed(ch) || s.Healthy() {
		t.Fatalf("unhealthy: changed %v, healthy %v", closed(ch), s.Healthy())
	}
	ch = s.Changed()
	s.Lock()
	s.KeptAliveLocked()
	s.Unlock()
	if !closed(ch) || !s.Healthy() {
		t.Fatalf("kept alive: changed %v, healthy %v", closed(ch), s.Healthy())
	}
	ch = s.Changed()
	s.Lock()
	s.KeptAliveLocked()
	s.Unlock()
	if !closed(ch) {
		t.Fatal("a keep-alive of a healthy session did not fire Changed")
	}
}

func TestCampaignHandsTheWinOver(t *testing.T) {
	s := newState(t, clock.NewFake())
	var gaveBack atomic.Int32
	won := &lead{epoch: 7}
	elect := func(_ context.Context, id string) Attempt[lead] {
		if id != "n1" {
			return Attempt[lead]{Err: errors.New("wrong id " + id)}
		}
		if err := s.Claim(won); err != nil {
			return Attempt[lead]{Err: err}
		}
		return Attempt[lead]{Won: won, Epoch: won.epoch, GiveBack: func() { gaveBack.Add(1) }}
	}
	epoch, err := s.Campaign(context.Background(), "n1", elect)
	if err != nil || epoch != 7 {
		t.Fatalf("campaign: %d, %v; want 7", epoch, err)
	}
	if s.Leader() != won || gaveBack.Load() != 0 {
		t.Fatalf("after the win: leader %v, given back %d times", s.Leader(), gaveBack.Load())
	}
	if _, err := s.Campaign(context.Background(), "", elect); err == nil {
		t.Fatal("campaign with an empty id")
	}
}

func TestFailedCampaignGivesBack(t *testing.T) {
	s := newState(t, clock.NewFake())
	lost := errors.New("lost")
	gaveBack := make(chan struct{})
	epoch, err := s.Campaign(context.Background(), "n1", func(context.Context, string) Attempt[lead] {
		return Attempt[lead]{Epoch: 9, Err: lost, GiveBack: func() { close(gaveBack) }}
	})
	if !errors.Is(err, lost) || epoch != 0 {
		t.Fatalf("campaign: %d, %v; want 0, %v", epoch, err, lost)
	}
	// The goroutine gives back after handing the failure over.
	select {
	case <-gaveBack:
	case <-time.After(5 * time.Second):
		t.Fatal("the failed candidacy was not given back within 5 s")
	}
}

// TestAbandonedWinIsGivenBack: a win that comes as the caller gives up is
// dropped and given back before Campaign returns.
func TestAbandonedWinIsGivenBack(t *testing.T) {
	s := newState(t, clock.NewFake())
	var gaveBack atomic.Int32
	won := &lead{epoch: 3}
	entered := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-entered; cancel() }()
	_, err := s.Campaign(ctx, "n1", func(ctx context.Context, _ string) Attempt[lead] {
		if err := s.Claim(won); err != nil {
			return Attempt[lead]{Err: err}
		}
		close(entered)
		<-ctx.Done() // the caller left while the win was being claimed
		return Attempt[lead]{Won: won, Epoch: won.epoch, GiveBack: func() { gaveBack.Add(1) }}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("campaign: %v, want context.Canceled", err)
	}
	if gaveBack.Load() != 1 || s.Leader() != nil {
		t.Fatalf("after Campaign returned: given back %d times, leader %v", gaveBack.Load(), s.Leader())
	}
}

func TestResign(t *testing.T) {
	s := newState(t, clock.NewFake())
	l := &lead{epoch: 5}
	if err := s.Claim(l); err != nil {
		t.Fatal(err)
	}
	refused := errors.New("refused")
	if err := s.Resign(context.Background(), func(context.Context, *lead) error { return refused }); !errors.Is(err, refused) || s.Leader() != l {
		t.Fatalf("failed resign: %v, leader %v; want %v and still leading", err, s.Leader(), refused)
	}
	var gaveUp *lead
	if err := s.Resign(context.Background(), func(_ context.Context, x *lead) error { gaveUp = x; return nil }); err != nil || gaveUp != l || s.Leader() != nil {
		t.Fatalf("resign: %v, gave up %v, leader %v", err, gaveUp, s.Leader())
	}
}

func TestAwaitGoroutines(t *testing.T) {
	s := newState(t, clock.NewFake())
	release, also := make(chan struct{}), make(chan struct{})
	if !s.Go(func() { <-release }) {
		t.Fatal("Go refused a live session")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := s.AwaitGoroutines(ctx, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("await with a goroutine blocked: %v, want DeadlineExceeded", err)
	}
	close(release)
	ctx, cancel = context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := s.AwaitGoroutines(ctx, also); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("await with also open: %v, want DeadlineExceeded", err)
	}
	close(also)
	if err := s.AwaitGoroutines(context.Background(), also); err != nil {
		t.Fatalf("await: %v", err)
	}
}

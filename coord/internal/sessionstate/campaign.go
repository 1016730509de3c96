package sessionstate

import (
	"context"
	"fmt"
	"time"

	"github.com/kvstore/kvstore/coord"
)

// campaignRun is one campaign goroutine.
type campaignRun struct {
	cancel context.CancelFunc
	done   chan struct{} // closed when the goroutine has finished, leadership settled
}

// Attempt is how a backend's election attempt ended (Elect).
type Attempt[L any] struct {
	// Won is the leadership the attempt recorded with Claim, when Err is
	// nil.
	Won *L
	// Epoch is the won election's epoch, when Err is nil.
	Epoch int64
	Err   error
	// GiveBack, if not nil, withdraws the candidacy the attempt left in
	// the election. It runs when the attempt is not handed over to the
	// caller as a win: it failed, or nobody waits for it any more.
	GiveBack func()
}

// Elect is a backend's election attempt as id: it enters the election (or
// finds the candidacy or leadership the session has), waits for its turn
// and claims the leadership (Claim), until ctx ends.
type Elect[L any] func(ctx context.Context, id string) Attempt[L]

// withdrawWait bounds how long a canceled Campaign waits for its
// candidacy's withdrawal.
const withdrawWait = 2 * time.Second

// campaignResult is what a campaign goroutine hands to its caller.
type campaignResult struct {
	epoch int64
	err   error
}

// Campaign runs elect as id in a goroutine owned by the session and returns
// its epoch once it wins. It returns promptly when ctx ends or the session
// ends, whatever the connection does; the goroutine gives the candidacy
// back (Attempt.GiveBack) when nobody waits for the result any more, and a
// Campaign ended by ctx returns once that is done (or after withdrawWait,
// for a coordinator that does not answer), so that no later view shows the
// caller leading because of it. A second Campaign on the same session waits
// for the first to finish.
func (s *State[L]) Campaign(ctx context.Context, id string, elect Elect[L]) (int64, error) {
	if id == "" {
		return 0, fmt.Errorf("%s: campaign: empty id", s.name)
	}
	run, cctx, err := s.startCampaign(ctx)
	if err != nil {
		return 0, err
	}
	result := make(chan campaignResult) // unbuffered: a result is taken by the caller or given back
	if !s.Go(func() {
		s.runCampaign(cctx, run, func(ctx context.Context) Attempt[L] { return elect(ctx, id) }, result)
	}) {
		s.finishCampaign(run)
		return 0, fmt.Errorf("%s: campaign: %w", s.name, s.Err())
	}
	select {
	case r := <-result:
		return r.epoch, r.err
	case <-ctx.Done():
		run.cancel()
		// Return once the candidacy is withdrawn, so that no view after
		// this shows the caller leading; bounded, for a coordinator that
		// does not answer.
		coord.AwaitWithdrawal(run.done, s.done, withdrawWait)
		return 0, fmt.Errorf("%s: campaign: %w", s.name, ctx.Err())
	case <-s.done:
		return 0, fmt.Errorf("%s: campaign: %w", s.name, s.Err())
	}
}

// startCampaign registers a new campaign run once no other is in flight.
func (s *State[L]) startCampaign(ctx context.Context) (*campaignRun, context.Context, error) {
	for {
		s.mu.Lock()
		if s.err != nil {
			err := s.err
			s.mu.Unlock()
			return nil, nil, fmt.Errorf("%s: campaign: %w", s.name, err)
		}
		prev := s.campaign
		if prev == nil {
			cctx, cancel := context.WithCancel(s.ctx)
			run := &campaignRun{cancel: cancel, done: make(chan struct{})}
			s.campaign = run
			s.mu.Unlock()
			return run, cctx, nil
		}
		s.mu.Unlock()
		select {
		case <-prev.done:
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("%s: campaign: %w", s.name, ctx.Err())
		case <-s.done:
		}
	}
}

// finishCampaign unregisters run and marks it done.
func (s *State[L]) finishCampaign(run *campaignRun) {
	s.mu.Lock()
	if s.campaign == run {
		s.campaign = nil
	}
	s.mu.Unlock()
	run.cancel()
	close(run.done)
}

// runCampaign runs one election attempt and hands the result to the caller
// over result. A candidacy it leaves behind that was not handed over as a
// win is given back; a win nobody took is no longer the session's
// leadership.
func (s *State[L]) runCampaign(ctx context.Context, run *campaignRun, elect func(context.Context) Attempt[L], result chan<- campaignResult) {
	defer s.finishCampaign(run)
	a := elect(ctx)
	r := campaignResult{err: a.Err}
	if a.Err == nil {
		r.epoch = a.Epoch
	}
	select {
	case result <- r:
		if a.Err == nil {
			return
		}
	case <-ctx.Done():
		if a.Err == nil {
			s.DropLeader(a.Won)
		}
	}
	if a.GiveBack != nil {
		a.GiveBack()
	}
}

// Claim records won as the session's leadership, unless the session has
// ended: then it returns why.
func (s *State[L]) Claim(won *L) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	s.leader = won
	return nil
}

// Leader returns the session's leadership, nil if it does not lead.
func (s *State[L]) Leader() *L {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.leader
}

// DropLeader records that the session no longer leads by l, if it still
// did.
func (s *State[L]) DropLeader(l *L) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.leader == l {
		s.leader = nil
	}
}

// TakeLeader returns the session's leadership and records that it no
// longer leads.
func (s *State[L]) TakeLeader() *L {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.leader
	s.leader = nil
	return l
}

// Resign cancels a campaign in flight (whose goroutine then gives the
// candidacy back) and waits for it, then, if the session leads, gives the
// leadership up with giveUp. If giveUp fails the session still counts as
// leading, so Resign can be retried.
func (s *State[L]) Resign(ctx context.Context, giveUp func(ctx context.Context, l *L) error) error {
	s.mu.Lock()
	run := s.campaign
	s.mu.Unlock()
	if run != nil {
		run.cancel()
		select {
		case <-run.done:
		case <-ctx.Done():
			return fmt.Errorf("%s: resign: waiting for the campaign to stop: %w", s.name, ctx.Err())
		}
	}
	l := s.Leader()
	if l == nil {
		return nil
	}
	if err := giveUp(ctx, l); err != nil {
		return err
	}
	s.DropLeader(l)
	return nil
}

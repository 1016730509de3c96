package memcoord

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kvstore/kvstore/coord"
)

// withdrawWait bounds how long a canceled Campaign waits for its
// candidacy's withdrawal while the connection is cut.
const withdrawWait = 2 * time.Second

// Campaign implements coord.Session. It enters the election as id (a
// session has one entry: a second Campaign finds it, with its epoch, the
// revision that created it), then waits, in the caller's goroutine, until
// no older entry is left. Campaigns of one session run one at a time; a
// Campaign by the leader returns its epoch at once. Ended by ctx (or by
// Resign), it withdraws the entry before it returns; while the connection
// is cut, a goroutine of the session withdraws it once it heals, and
// Campaign waits for that at most withdrawWait.
func (s *session) Campaign(ctx context.Context, id string) (int64, error) {
	if id == "" {
		return 0, errors.New("memcoord: campaign: empty id")
	}
	cctx, release, err := s.startCampaign(ctx)
	if err != nil {
		return 0, err
	}
	defer release()
	var epoch int64
	var eerr error
	if err := s.call(cctx, func() { epoch, eerr = s.c.srv.enterLocked(s.sid, id) }); err != nil {
		return 0, s.opErr("campaign", err) // no entry was made
	}
	if eerr != nil {
		return 0, s.opErr("campaign", eerr)
	}
	for {
		var leads bool
		var lerr error
		var changed <-chan struct{}
		err := s.call(cctx, func() {
			leads, lerr = s.c.srv.leadsLocked(s.sid, epoch)
			changed = s.c.srv.changed
		})
		switch {
		case err != nil && cctx.Err() != nil && s.Err() == nil:
			return 0, s.withdraw(cctx, epoch)
		case err != nil:
			return 0, s.opErr("campaign", err)
		case lerr != nil:
			return 0, s.opErr("campaign", lerr)
		case leads:
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.err != nil {
				return 0, fmt.Errorf("memcoord: campaign: %w", s.err)
			}
			s.leader = epoch
			return epoch, nil
		}
		select {
		case <-changed:
		case <-cctx.Done():
			if s.Err() == nil {
				return 0, s.withdraw(cctx, epoch)
			}
		case <-s.done:
		}
		if err := s.Err(); err != nil {
			return 0, fmt.Errorf("memcoord: campaign: %w", err)
		}
	}
}

// startCampaign waits for the session's turn to campaign and returns the
// campaign's context (which Resign cancels) and the function that ends
// the turn.
func (s *session) startCampaign(ctx context.Context) (context.Context, func(), error) {
	select {
	case s.turn <- struct{}{}:
	case <-ctx.Done():
		return nil, nil, fmt.Errorf("memcoord: campaign: %w", ctx.Err())
	case <-s.done:
		return nil, nil, fmt.Errorf("memcoord: campaign: %w", s.Err())
	}
	cctx, cancel := context.WithCancel(ctx)
	s.mu.Lock()
	s.stopCampaign = cancel
	s.mu.Unlock()
	release := func() {
		s.mu.Lock()
		s.stopCampaign = nil
		s.mu.Unlock()
		cancel()
		<-s.turn
	}
	return cctx, release, nil
}

// withdraw deletes the election entry of epoch for a Campaign that ended
// by cctx, and returns the Campaign's error. If the connection is cut, a
// goroutine of the session deletes it once it heals (or gives up when the
// session ends: the entry goes with it), and withdraw waits for that at
// most withdrawWait.
func (s *session) withdraw(cctx context.Context, epoch int64) error {
	err := fmt.Errorf("memcoord: campaign: %w", cctx.Err())
	del := func() { s.c.srv.withdrawLocked(s.sid, epoch) }
	if s.c.tryCall(del) {
		return err
	}
	withdrawn := make(chan struct{})
	if !s.goFunc(func() {
		defer close(withdrawn)
		_ = s.c.call(s.ctx, del)
	}) {
		return err
	}
	coord.AwaitWithdrawal(withdrawn, s.done, withdrawWait)
	return err
}

// Resign implements coord.Session: it cancels a campaign in flight (which
// withdraws its entry) and waits for it, then deletes the election entry
// if this session leads. If the delete fails (ctx ended while the
// connection was cut) the session still counts as leading, so Resign can
// be retried. A session that has ended resigns at once: its entries go
// with it.
func (s *session) Resign(ctx context.Context) error {
	s.mu.Lock()
	stop := s.stopCampaign
	s.mu.Unlock()
	if stop != nil {
		stop()
	}
	select {
	case s.turn <- struct{}{}:
		defer func() { <-s.turn }()
	case <-ctx.Done():
		return fmt.Errorf("memcoord: resign: waiting for the campaign to stop: %w", ctx.Err())
	}
	s.mu.Lock()
	epoch := s.leader
	s.mu.Unlock()
	if epoch == 0 || s.Err() != nil {
		return nil
	}
	if err := s.call(ctx, func() { s.c.srv.withdrawLocked(s.sid, epoch) }); err != nil {
		if s.Err() != nil {
			return nil
		}
		return fmt.Errorf("memcoord: resign: %w", err)
	}
	s.mu.Lock()
	if s.leader == epoch {
		s.leader = 0
	}
	s.mu.Unlock()
	return nil
}

// SetVoters implements coord.Session: in one step on the server, it checks
// that this session's election entry has epoch and leads, and that the
// record has version prev.Version, then writes ids, sealed. ErrNotLeader
// is checked first.
func (s *session) SetVoters(ctx context.Context, epoch int64, prev coord.Voters, ids []string) error {
	if err := s.Err(); err != nil {
		return fmt.Errorf("memcoord: set voters: %w: %w", coord.ErrNotLeader, err)
	}
	s.mu.Lock()
	l := s.leader
	s.mu.Unlock()
	if epoch <= 0 || l != epoch {
		return fmt.Errorf("memcoord: set voters: session does not lead with epoch %d: %w", epoch, coord.ErrNotLeader)
	}
	var werr error
	if err := s.call(ctx, func() { werr = s.c.srv.setVotersLocked(s.sid, epoch, prev.Version, ids) }); err != nil {
		return s.opErr("set voters", err)
	}
	if errors.Is(werr, errSessionGone) {
		return fmt.Errorf("memcoord: set voters: %w: %w", coord.ErrNotLeader, s.opErr("set voters", werr))
	}
	if werr != nil {
		return fmt.Errorf("memcoord: set voters: %w", werr)
	}
	return nil
}

package memcoord

import (
	"context"
	"errors"
	"fmt"

	"github.com/kvstore/kvstore/coord"
	"github.com/kvstore/kvstore/coord/internal/sessionstate"
)

// Campaign implements coord.Session. It enters the election as id (a
// session has one entry: a second Campaign finds it, with its epoch, the
// revision that created it), then waits until no older entry is left.
// Campaigns of one session run one at a time; a Campaign by the leader
// returns its epoch at once. The waiting runs in a goroutine of the
// session (coord/internal/sessionstate, as etcdcoord's and zkcoord's):
// ended by ctx (or by Resign), Campaign returns once that goroutine has
// withdrawn the entry, which, while the connection is cut, it does once it
// heals, and Campaign waits for that a bounded time.
func (s *session) Campaign(ctx context.Context, id string) (int64, error) {
	return s.State.Campaign(ctx, id, s.elect)
}

// elect runs one campaign: it enters the election, waits for its turn and
// claims the leadership. An entry it leaves behind is withdrawn unless the
// win is handed over.
func (s *session) elect(ctx context.Context, id string) sessionstate.Attempt[leadership] {
	var epoch int64
	var eerr error
	if err := s.call(ctx, func() { epoch, eerr = s.c.srv.enterLocked(s.sid, id) }); err != nil {
		return sessionstate.Attempt[leadership]{Err: s.opErr("campaign", err)} // no entry was made
	}
	if eerr != nil {
		return sessionstate.Attempt[leadership]{Err: s.opErr("campaign", eerr)}
	}
	a := sessionstate.Attempt[leadership]{GiveBack: func() { s.withdraw(epoch) }}
	if a.Err = s.waitTurn(ctx, epoch); a.Err != nil {
		return a
	}
	won := &leadership{epoch: epoch}
	if err := s.Claim(won); err != nil {
		a.Err = fmt.Errorf("memcoord: campaign: %w", err)
		return a
	}
	a.Won, a.Epoch = won, epoch
	return a
}

// waitTurn waits until the election entry of epoch leads, ctx ends or the
// session ends.
func (s *session) waitTurn(ctx context.Context, epoch int64) error {
	for {
		var leads bool
		var lerr error
		var changed <-chan struct{}
		err := s.call(ctx, func() {
			leads, lerr = s.c.srv.leadsLocked(s.sid, epoch)
			changed = s.c.srv.changed
		})
		switch {
		case err != nil && ctx.Err() != nil && s.Err() == nil:
			return fmt.Errorf("memcoord: campaign: %w", ctx.Err())
		case err != nil:
			return s.opErr("campaign", err)
		case lerr != nil:
			return s.opErr("campaign", lerr)
		case leads:
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
		case <-s.Done():
		}
		if err := s.Err(); err != nil {
			return fmt.Errorf("memcoord: campaign: %w", err)
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("memcoord: campaign: %w", err)
		}
	}
}

// withdraw deletes the election entry of epoch, for a campaign whose entry
// is not handed over as a win. While the connection is cut it waits for
// the heal; a session that has ended deletes nothing (its entries go with
// it, or expire by its TTL after Coordinator.Close, as after a crash).
func (s *session) withdraw(epoch int64) {
	if s.Err() != nil {
		return
	}
	_ = s.c.call(s.Context(), func() { s.c.srv.withdrawLocked(s.sid, epoch) })
}

// Resign implements coord.Session: it cancels a campaign in flight (which
// withdraws its entry) and waits for it, then deletes the election entry
// if this session leads. If the delete fails (ctx ended while the
// connection was cut) the session still counts as leading, so Resign can
// be retried. A session that has ended resigns at once: its entries go
// with it.
func (s *session) Resign(ctx context.Context) error {
	return s.State.Resign(ctx, s.resignEntry)
}

// resignEntry deletes l's election entry, for Resign.
func (s *session) resignEntry(ctx context.Context, l *leadership) error {
	if s.Err() != nil {
		return nil
	}
	if err := s.call(ctx, func() { s.c.srv.withdrawLocked(s.sid, l.epoch) }); err != nil {
		if s.Err() != nil {
			return nil
		}
		return fmt.Errorf("memcoord: resign: %w", err)
	}
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
	if l := s.Leader(); epoch <= 0 || l == nil || l.epoch != epoch {
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

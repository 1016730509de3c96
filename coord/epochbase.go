package coord

import (
	"context"
	"fmt"
	"time"
)

// WithEpochBase returns c with every epoch translated by the coordinator's
// epoch base (Coordinator.EpochBase): a session reads the base when it
// opens, adds it to the epochs Campaign returns and Watch reports, and
// subtracts it from the epoch SetVoters is fenced with. The raw epochs of
// a rebuilt coordinator start low again; the disaster-recovery command
// raises the base above every epoch the nodes have promised, so that the
// epochs the nodes see stay monotone across the rebuild. Wrapping twice
// wraps once.
//
// The base is read once per session: it is only raised while the cluster
// is down (by the recovery command), so a session opened before a raise
// belongs to a node that must be restarted anyway.
func WithEpochBase(c Coordinator) Coordinator {
	if _, ok := c.(epochBased); ok {
		return c
	}
	return epochBased{c}
}

// epochBased is a Coordinator whose sessions translate epochs by the base.
type epochBased struct{ Coordinator }

// NewSession reads the epoch base and opens a session that applies it.
func (c epochBased) NewSession(ctx context.Context, ttl time.Duration) (Session, error) {
	base, err := c.Coordinator.EpochBase(ctx)
	if err != nil {
		return nil, fmt.Errorf("coord: read the epoch base: %w", err)
	}
	s, err := c.Coordinator.NewSession(ctx, ttl)
	if err != nil {
		return nil, err
	}
	if base == 0 {
		return s, nil
	}
	return &baseSession{Session: s, base: base}, nil
}

// baseSession is a Session whose epochs are raw epochs plus base.
type baseSession struct {
	Session
	base int64
}

// Campaign returns the raw epoch plus the base.
func (s *baseSession) Campaign(ctx context.Context, id string) (int64, error) {
	e, err := s.Session.Campaign(ctx, id)
	if err != nil {
		return 0, err
	}
	return e + s.base, nil
}

// SetVoters fences with the raw epoch.
func (s *baseSession) SetVoters(ctx context.Context, epoch int64, prev Voters, ids []string) error {
	if epoch <= s.base {
		return fmt.Errorf("coord: set voters: epoch %d is not above the epoch base %d: %w", epoch, s.base, ErrNotLeader)
	}
	return s.Session.SetVoters(ctx, epoch-s.base, prev, ids)
}

// Watch reports the leader's epoch plus the base.
func (s *baseSession) Watch(ctx context.Context) <-chan View {
	in := s.Session.Watch(ctx)
	out := make(chan View, 1)
	go func() {
		defer close(out)
		for v := range in {
			if v.Leader.ID != "" || v.Leader.Epoch != 0 {
				v.Leader.Epoch += s.base
			}
			SendLatest(out, v)
		}
	}()
	return out
}

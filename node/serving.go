package node

// The node's serving state and its view of the cluster, and the signal of
// a change of either (docs/design.md, Sessions and suspension). The
// session keeper switches them (session.go); every role reads them.

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/clock"
	"github.com/kvstore/kvstore/coord"
)

// servingView is the node's serving state and cluster view. Node embeds it:
// n.serving, n.view, n.changed and n.opContext are read from every role.
type servingView struct {
	id        string        // Config.ID, for errors
	opTimeout time.Duration // Config.OpTimeout
	clk       clock.Clock   // Config.Clock: the session deadline

	// serving is the current serving state; its ctx is canceled (with cause
	// ErrPartitioned or ErrStopped) the moment the node stops serving.
	serving atomic.Pointer[servingState]

	// view is the latest cluster view from the coordinator.
	view atomic.Pointer[viewState]

	// viewMu guards viewCh, closed and replaced when the view or the
	// serving state changes.
	viewMu sync.Mutex
	viewCh chan struct{}
}

type servingState struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	sess   coord.Session // nil before the first session
	state  State
}

type viewState struct {
	leader  coord.Leader
	members map[string]string
}

// newStatus returns the servingView of a node that has no session yet: it does
// not serve (its ctx is canceled with ErrPartitioned) and sees no leader.
func newServingView(cfg *Config) *servingView {
	s := &servingView{id: cfg.ID, opTimeout: cfg.OpTimeout, clk: cfg.Clock, viewCh: make(chan struct{})}
	down, cancel := context.WithCancelCause(context.Background())
	cancel(fmt.Errorf("node %s: %w (no session yet)", cfg.ID, kvstore.ErrPartitioned))
	s.serving.Store(&servingState{ctx: down, cancel: cancel, state: StateStarting})
	s.view.Store(&viewState{})
	return s
}

// sessionLive reports whether the node may serve now: it is in StateOK and
// its session is live by the local deadline.
func (s *servingView) sessionLive(st *servingState) bool {
	return st.state == StateOK && st.sess != nil && s.clk.Now().Before(st.sess.Deadline())
}

// opContext derives the context of one operation: it has the node's
// OpTimeout unless ctx has a deadline, and it is canceled with
// ErrPartitioned / ErrStopped the moment the node stops serving. A ctx
// with a deadline that is bound to the current serving state already
// (bindServing: a stream's operations share one binding) is used as it is.
func (s *servingView) opContext(ctx context.Context) (context.Context, func(), error) {
	st := s.serving.Load()
	if st.ctx.Err() != nil {
		return nil, nil, context.Cause(st.ctx)
	}
	if !s.sessionLive(st) {
		return nil, nil, fmt.Errorf("node %s: %w (session deadline passed)", s.id, kvstore.ErrPartitioned)
	}
	octx, done := s.bound(ctx, st)
	return octx, done, nil
}

// bound is opContext without its checks, for an operation admitted under
// st already: ctx with the node's OpTimeout unless it has a deadline,
// canceled with st's cause the moment st ends.
func (s *servingView) bound(ctx context.Context, st *servingState) (context.Context, func()) {
	if _, ok := ctx.Deadline(); ok && ctx.Value(servingKey{}) == st {
		return ctx, func() {}
	}
	var cancelT context.CancelFunc = func() {}
	if _, ok := ctx.Deadline(); !ok {
		ctx, cancelT = context.WithTimeout(ctx, s.opTimeout)
	}
	octx, release := bindServing(ctx, st, false)
	return octx, func() { release(); cancelT() }
}

// servingKey is the context key of the serving state a context is bound to.
type servingKey struct{}

// bindServing returns ctx canceled with st's cause the moment st ends
// (the node stops serving), and the function that releases it. named
// also records st in it (servingKey), for opContext to recognize: only a
// stream's shared binding is named, so that an operation bound on its
// own takes no more than the cancel context.
func bindServing(ctx context.Context, st *servingState, named bool) (context.Context, context.CancelFunc) {
	if named {
		ctx = context.WithValue(ctx, servingKey{}, st)
	}
	bctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(st.ctx, func() { cancel(context.Cause(st.ctx)) })
	return bctx, func() { stop(); cancel(nil) }
}

// boundCtx is a context bound to one serving state (bindServing).
type boundCtx struct {
	st      *servingState
	ctx     context.Context
	release context.CancelFunc
}

// servingBinding shares one binding to the serving state among the
// operations of one stream: binding each operation took a cancel context,
// its done channel and an AfterFunc registered with the serving state's
// context, which every operation of the node contends on.
type servingBinding struct {
	sv    *servingView
	ctx   context.Context // the stream's
	bound atomic.Pointer[boundCtx]
}

// current returns the stream's context bound to the current serving state,
// binding it once per serving state. A binding of an earlier state is left
// to end with that state or the stream (release), not canceled here: its
// operations may still run.
func (b *servingBinding) current() context.Context {
	for {
		st := b.sv.serving.Load()
		c := b.bound.Load()
		if c != nil && c.st == st {
			return c.ctx
		}
		ctx, release := bindServing(b.ctx, st, true)
		// Installed only if the state is still st and no other operation
		// bound meanwhile: a binding of a newer state is never replaced by
		// one of an older state.
		if b.sv.serving.Load() == st && b.bound.CompareAndSwap(c, &boundCtx{st: st, ctx: ctx, release: release}) {
			return ctx
		}
		release()
	}
}

// release ends the current binding, once the stream's operations are done.
func (b *servingBinding) release() {
	if c := b.bound.Swap(nil); c != nil {
		c.release()
	}
}

// changed returns the channel closed at the next view or serving change.
func (s *servingView) changed() <-chan struct{} {
	s.viewMu.Lock()
	defer s.viewMu.Unlock()
	return s.viewCh
}

// notify closes the channel changed returned: the view or the serving
// state changed.
func (s *servingView) notify() {
	s.viewMu.Lock()
	close(s.viewCh)
	s.viewCh = make(chan struct{})
	s.viewMu.Unlock()
}

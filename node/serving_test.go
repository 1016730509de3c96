package node

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/kvstore/kvstore"
)

// TestServingBindingIsSharedAndFollowsTheState: a stream's operations share
// one binding to the serving state while it lasts; the binding ends with
// the state, with its cause, and the next operation is bound to the state
// after it.
func TestServingBindingIsSharedAndFollowsTheState(t *testing.T) {
	sv := newServingView(&Config{ID: "n1"})
	ok1, cancel1 := context.WithCancelCause(context.Background())
	sv.serving.Store(&servingState{ctx: ok1, cancel: cancel1, state: StateOK})
	stream, end := context.WithCancel(context.Background())
	defer end()
	b := &servingBinding{sv: sv, ctx: stream}

	first := b.current()
	if second := b.current(); second != first {
		t.Fatal("two operations under one serving state got two bindings")
	}
	if first.Value(servingKey{}) != sv.serving.Load() {
		t.Fatal("the binding does not name the serving state it is bound to")
	}
	gone := errors.New("suspended")
	cause := kvstore.ErrPartitioned
	down, cancelDown := context.WithCancelCause(context.Background())
	cancelDown(cause)
	sv.serving.Store(&servingState{ctx: down, cancel: cancelDown, state: StateSuspended})
	cancel1(errors.Join(cause, gone))
	<-first.Done()
	if err := context.Cause(first); !errors.Is(err, kvstore.ErrPartitioned) || !errors.Is(err, gone) {
		t.Fatalf("the binding ended with %v, want the state's cause", err)
	}

	ok2, cancel2 := context.WithCancelCause(context.Background())
	defer cancel2(nil)
	sv.serving.Store(&servingState{ctx: ok2, cancel: cancel2, state: StateOK})
	next := b.current()
	if next == first || next.Err() != nil {
		t.Fatalf("after the state changed, the binding is the old one (%v) or ended (%v)", next == first, next.Err())
	}
	b.release()
	if next.Err() == nil {
		t.Fatal("release left the binding running")
	}
	if stream.Err() != nil {
		t.Fatal("release ended the stream's own context")
	}
}

// TestBoundUsesOnlyABindingOfItsState: bound uses a context with a
// deadline that is bound to the given state as it is, and binds any other
// (one bound to an earlier state, one without a deadline) again; bound to
// a state that ended, the context is over, with that state's cause.
func TestBoundUsesOnlyABindingOfItsState(t *testing.T) {
	sv := newServingView(&Config{ID: "n1", OpTimeout: time.Minute})
	okCtx, cancelOK := context.WithCancelCause(context.Background())
	defer cancelOK(nil)
	st := &servingState{ctx: okCtx, cancel: cancelOK, state: StateOK}
	sv.serving.Store(st)
	b := &servingBinding{sv: sv, ctx: context.Background()}
	defer b.release()

	withDeadline, cancel := context.WithTimeout(b.current(), time.Minute)
	defer cancel()
	if got, done := sv.bound(withDeadline, st); got != withDeadline {
		t.Error("a context with a deadline bound to the state was bound again")
	} else {
		done()
	}
	noDeadline, done := sv.bound(b.current(), st)
	if _, ok := noDeadline.Deadline(); !ok {
		t.Error("a context without a deadline did not get the node's OpTimeout")
	}
	done()

	down, cancelDown := context.WithCancelCause(context.Background())
	cancelDown(kvstore.ErrPartitioned)
	ended := &servingState{ctx: down, cancel: cancelDown, state: StateSuspended}
	got, done := sv.bound(withDeadline, ended)
	defer done()
	if got == withDeadline {
		t.Fatal("a context bound to another state was used as it is")
	}
	<-got.Done()
	if err := context.Cause(got); !errors.Is(err, kvstore.ErrPartitioned) {
		t.Errorf("bound to a state that ended: cause %v, want ErrPartitioned", err)
	}
}

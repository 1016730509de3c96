package node

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kvstore/kvstore/internal/soon"
	"github.com/kvstore/kvstore/rpc/kvpb"
)

// fakeForward is a leader's end of Forward streams, in memory: each
// stream's messages arrive on sent, and answers go back through answers;
// refuse, if set, fails the stream's Recv at once (an older leader
// answers Unimplemented).
type fakeForward struct {
	kvpb.PeerClient // only Forward is called
	refuse          error
	sent            chan *kvpb.ForwardRequest
	answers         chan *kvpb.ForwardResponse
	ends            chan error // an error here ends the stream's Recv
	opened          int
}

func (f *fakeForward) Forward(ctx context.Context, _ ...grpc.CallOption) (grpc.BidiStreamingClient[kvpb.ForwardRequest, kvpb.ForwardResponse], error) {
	f.opened++
	return &fakeStream{f: f, ctx: ctx}, nil
}

type fakeStream struct {
	grpc.ClientStream
	f   *fakeForward
	ctx context.Context
}

func (s *fakeStream) Send(m *kvpb.ForwardRequest) error {
	select {
	case s.f.sent <- m:
		return nil
	case <-s.ctx.Done():
		return s.ctx.Err()
	}
}

func (s *fakeStream) Recv() (*kvpb.ForwardResponse, error) {
	if s.f.refuse != nil {
		return nil, s.f.refuse
	}
	select {
	case m := <-s.f.answers:
		return m, nil
	case err := <-s.f.ends:
		return nil, err
	case <-s.ctx.Done():
		return nil, status.FromContextError(s.ctx.Err()).Err()
	}
}

func testForwarder(t *testing.T) *forwarder {
	t.Helper()
	n := &Node{cfg: Config{ID: "n1"}}
	n.ctx, n.cancel = context.WithCancelCause(context.Background())
	f := newForwarder(n)
	t.Cleanup(func() {
		n.cancel(errors.New("test over"))
		f.wait()
	})
	return f
}

// streamCalls returns how many calls the stream to addr holds (queued or
// sent, not answered) and how many of them are queued; an error if no
// stream is open.
func streamCalls(f *forwarder, addr string) (calls, queued int, err error) {
	f.mu.Lock()
	st := f.streams[fwdKey{addr: addr}]
	f.mu.Unlock()
	if st == nil {
		return 0, 0, errors.New("no stream open")
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	return len(st.calls), len(st.queue), nil
}

func writeReq(key string) *kvpb.WriteRequest {
	return &kvpb.WriteRequest{Op: kvpb.Op_OP_SET, Key: key, Value: "v"}
}

// TestForwardAnswersEachWriteByID: writes on one stream are answered in
// any order, each by its id, and carry their callers' remaining time.
func TestForwardAnswersEachWriteByID(t *testing.T) {
	f := testForwarder(t)
	leader := &fakeForward{sent: make(chan *kvpb.ForwardRequest, 8), answers: make(chan *kvpb.ForwardResponse, 8)}
	type answer struct {
		resp    *kvpb.WriteResponse
		reached bool
		err     error
	}
	done := make(chan answer, 2)
	for _, key := range []string{"a", "b"} {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			r, reached, err := f.write(ctx, leader, "leader:1", writeReq(key))
			done <- answer{r, reached, err}
		}()
	}
	ids := map[string]uint64{}
	for len(ids) < 2 {
		m := <-leader.sent
		for _, op := range m.Ops {
			if op.TimeoutUs <= 0 || op.TimeoutUs > 10_000_000 {
				t.Errorf("write %q carries timeout_us %d, want its caller's remaining time (at most 10 s)", op.GetWrite().Key, op.TimeoutUs)
			}
			ids[op.GetWrite().Key] = op.Id
		}
	}
	// b first, with a version that names it; a fails.
	leader.answers <- &kvpb.ForwardResponse{Results: []*kvpb.ForwardedResult{
		{Id: ids["b"], Result: &kvpb.ForwardedResult_Write{Write: &kvpb.WriteResponse{Epoch: 7}}},
		{Id: ids["a"], Error: []byte{}},
	}}
	var got []answer
	for range 2 {
		got = append(got, <-done)
	}
	var sawB, sawA bool
	for _, a := range got {
		switch {
		case a.err == nil && a.resp.Epoch == 7:
			sawB = true
		case a.err != nil && status.Code(a.err) == codes.Internal && a.reached:
			sawA = true
		default:
			t.Errorf("unexpected answer %+v", a)
		}
	}
	if !sawA || !sawB {
		t.Fatalf("answers %+v: want b's result and a's error, each to its own caller", got)
	}
	if f.sent.Load() == 0 || f.carried.Load() != 2 {
		t.Fatalf("%d messages carried %d writes, want 2 writes", f.sent.Load(), f.carried.Load())
	}
}

// TestForwardGivenUpWriteReachedOnlyIfSent: a write given up while its
// stream has not sent it never left (reached false: definite); one given
// up after it was sent may have (reached true: outcome unknown).
func TestForwardGivenUpWriteReachedOnlyIfSent(t *testing.T) {
	f := testForwarder(t)
	// Nothing takes the stream's messages: the first write is taken by
	// the sender, which blocks in Send; the second stays queued.
	leader := &fakeForward{sent: make(chan *kvpb.ForwardRequest), answers: make(chan *kvpb.ForwardResponse)}
	first := make(chan bool, 1)
	ctx1, cancel1 := context.WithCancel(context.Background())
	go func() {
		_, reached, _ := f.write(ctx1, leader, "leader:1", writeReq("a"))
		first <- reached
	}()
	soon.Succeeds(t, 10*time.Second, func() error {
		calls, queued, err := streamCalls(f, "leader:1")
		if err == nil && (calls != 1 || queued != 0) {
			err = fmt.Errorf("%d calls, %d queued: the sender has not taken the first write", calls, queued)
		}
		return err
	})
	ctx2, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	_, reached, err := f.write(ctx2, leader, "leader:1", writeReq("b"))
	if err == nil || reached {
		t.Fatalf("a write given up while queued: reached %v, err %v; want reached false and an error", reached, err)
	}
	cancel1()
	if !<-first {
		t.Fatal("a write given up after its stream took it reported reached false: it may have left")
	}
}

// TestForwardFallsBackForALeaderWithoutForward: a leader that answers
// Unimplemented ran nothing; the write reports errUseCall, reached
// false, and later writes to that address go by Write without a stream.
func TestForwardFallsBackForALeaderWithoutForward(t *testing.T) {
	f := testForwarder(t)
	leader := &fakeForward{refuse: status.Error(codes.Unimplemented, "unknown method Forward"), sent: make(chan *kvpb.ForwardRequest, 8), answers: make(chan *kvpb.ForwardResponse)}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 2 {
		_, reached, err := f.write(ctx, leader, "old:1", writeReq("a"))
		if !errors.Is(err, errUseCall) || reached {
			t.Fatalf("write %d to a leader without Forward: reached %v, err %v; want errUseCall and reached false", i, reached, err)
		}
	}
	if leader.opened != 1 {
		t.Fatalf("%d streams opened to a leader without Forward, want 1", leader.opened)
	}
	if _, err := f.fetch(ctx, leader, "old:1", &kvpb.FetchRequest{Key: "a"}); !errors.Is(err, errUseCall) {
		t.Fatalf("fetch from a leader without Forward: %v, want errUseCall", err)
	}
}

// TestForwardUnimplementedAfterAnAnswerIsNoFallback: a stream that ends
// Unimplemented after the leader answered on it proves nothing about the
// writes it was sent (the leader serves Forward): a sent write reports it
// may have been applied, and later writes still use streams.
func TestForwardUnimplementedAfterAnAnswerIsNoFallback(t *testing.T) {
	f := testForwarder(t)
	leader := &fakeForward{sent: make(chan *kvpb.ForwardRequest, 8), answers: make(chan *kvpb.ForwardResponse, 8), ends: make(chan error, 1)}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	first := make(chan error, 1)
	go func() {
		_, _, err := f.write(ctx, leader, "leader:1", writeReq("a"))
		first <- err
	}()
	m := <-leader.sent
	leader.answers <- &kvpb.ForwardResponse{Results: []*kvpb.ForwardedResult{{Id: m.Ops[0].Id, Result: &kvpb.ForwardedResult_Write{Write: &kvpb.WriteResponse{}}}}}
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	second := make(chan error, 1)
	var reached bool
	go func() {
		var err error
		_, reached, err = f.write(ctx, leader, "leader:1", writeReq("b"))
		second <- err
	}()
	<-leader.sent
	leader.ends <- status.Error(codes.Unimplemented, "grpc: Decompressor is not installed")
	err := <-second
	if errors.Is(err, errUseCall) || !reached || status.Code(err) != codes.Unimplemented {
		t.Fatalf("a sent write on a stream that ended Unimplemented after an answer: reached %v, err %v; want reached true and the stream's error", reached, err)
	}
	f.mu.Lock()
	_, off := f.off["leader:1"]
	f.mu.Unlock()
	if off {
		t.Fatal("a leader that answered on Forward was taken for one without it")
	}
}

// TestForwardFullStreamSendsACall: with maxForwardOps writes waiting for
// answers on a stream, the next one is not queued behind them: it goes
// in a call of its own (errUseCall, not sent).
func TestForwardFullStreamSendsACall(t *testing.T) {
	f := testForwarder(t)
	// The leader takes no message: the first is held in Send, the rest
	// stay queued.
	leader := &fakeForward{sent: make(chan *kvpb.ForwardRequest), answers: make(chan *kvpb.ForwardResponse)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, maxForwardOps)
	for i := range maxForwardOps {
		go func() {
			_, _, _ = f.write(ctx, leader, "leader:1", writeReq(fmt.Sprint("k", i)))
			done <- struct{}{}
		}()
	}
	defer func() {
		cancel()
		for range maxForwardOps {
			<-done
		}
	}()
	soon.Succeeds(t, 10*time.Second, func() error {
		calls, _, err := streamCalls(f, "leader:1")
		if err == nil && calls < maxForwardOps {
			err = fmt.Errorf("%d writes wait, want %d", calls, maxForwardOps)
		}
		return err
	})
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	if _, reached, err := f.write(wctx, leader, "leader:1", writeReq("one more")); !errors.Is(err, errUseCall) || reached {
		t.Fatalf("a write on a full stream: reached %v, err %v; want errUseCall and reached false", reached, err)
	}
}

// TestForwardEndsIdleStreamsToAFormerLeader: once operations go to a new
// leader's address, the stream to the old one ends, but only when no
// operation is in flight on it.
func TestForwardEndsIdleStreamsToAFormerLeader(t *testing.T) {
	f := testForwarder(t)
	old := &fakeForward{sent: make(chan *kvpb.ForwardRequest, 8), answers: make(chan *kvpb.ForwardResponse, 8)}
	next := &fakeForward{sent: make(chan *kvpb.ForwardRequest, 8), answers: make(chan *kvpb.ForwardResponse, 8)}
	stop := make(chan struct{})
	answered := make(chan struct{})
	t.Cleanup(func() { close(stop); <-answered })
	answerAll := func(leader *fakeForward) {
		go func() {
			defer close(answered)
			for {
				select {
				case m := <-leader.sent:
					var rs []*kvpb.ForwardedResult
					for _, op := range m.Ops {
						rs = append(rs, &kvpb.ForwardedResult{Id: op.Id, Result: &kvpb.ForwardedResult_Write{Write: &kvpb.WriteResponse{Epoch: 1}}})
					}
					leader.answers <- &kvpb.ForwardResponse{Results: rs}
				case <-stop:
					return
				}
			}
		}()
	}
	write := func(leader *fakeForward, addr, key string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _, err := f.write(ctx, leader, addr, writeReq(key))
		return err
	}

	// One write to the old leader stays unanswered while the leader moves.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pending := make(chan error, 1)
	go func() {
		_, _, err := f.write(ctx, old, "old:1", writeReq("a"))
		pending <- err
	}()
	first := <-old.sent
	answerAll(next)
	if err := write(next, "new:1", "b"); err != nil {
		t.Fatalf("write to the new leader: %v", err)
	}
	if calls, _, err := streamCalls(f, "old:1"); err != nil || calls != 1 {
		t.Fatalf("the old leader's stream with a write in flight: %d calls, %v; want it open with 1", calls, err)
	}
	old.answers <- &kvpb.ForwardResponse{Results: []*kvpb.ForwardedResult{{Id: first.Ops[0].Id, Result: &kvpb.ForwardedResult_Write{Write: &kvpb.WriteResponse{Epoch: 1}}}}}
	if err := <-pending; err != nil {
		t.Fatalf("the write in flight to the old leader: %v; want its answer", err)
	}

	// Idle now: the next operation to the new leader ends it.
	if err := write(next, "new:1", "c"); err != nil {
		t.Fatalf("write to the new leader: %v", err)
	}
	if _, _, err := streamCalls(f, "old:1"); err == nil {
		t.Fatal("the idle stream to the old leader is still open after a write went to the new one")
	}
	if got := f.retired.Load(); got != 1 {
		t.Fatalf("%d streams retired, want 1", got)
	}
	if _, _, err := streamCalls(f, "new:1"); err != nil {
		t.Fatalf("the new leader's stream: %v", err)
	}
	if old.opened != 1 || next.opened != 1 {
		t.Fatalf("streams opened: %d to the old leader, %d to the new; want 1 each", old.opened, next.opened)
	}
}

// TestForwardGivenUpSentWritesHoldTheirPlace: a write whose sender gave
// up after the stream sent it still holds its place at the leader, which
// reads no more of a stream with maxForwardOps unanswered; so it counts
// toward the follower's bound until the leader answers it. With
// maxForwardOps such writes unanswered the next write goes in a call of
// its own; an answer to one of them frees a place on the stream.
func TestForwardGivenUpSentWritesHoldTheirPlace(t *testing.T) {
	f := testForwarder(t)
	// The leader takes every message and answers none until told to.
	leader := &fakeForward{sent: make(chan *kvpb.ForwardRequest), answers: make(chan *kvpb.ForwardResponse, 1)}
	var taken atomic.Int64
	var lastID atomic.Uint64
	stop := make(chan struct{})
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for {
			select {
			case m := <-leader.sent:
				for _, op := range m.Ops {
					lastID.Store(op.Id)
				}
				taken.Add(int64(len(m.Ops)))
			case <-stop:
				return
			}
		}
	}()
	defer func() { close(stop); <-drained }()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan bool, maxForwardOps)
	for i := range maxForwardOps {
		go func() {
			_, reached, _ := f.write(ctx, leader, "leader:1", writeReq(fmt.Sprint("k", i)))
			done <- reached
		}()
	}
	soon.Succeeds(t, 10*time.Second, func() error {
		if n := taken.Load(); n < maxForwardOps {
			return fmt.Errorf("the leader took %d writes, want %d", n, maxForwardOps)
		}
		return nil
	})
	cancel() // every writer gives up; each write was sent
	for range maxForwardOps {
		if !<-done {
			t.Fatal("a write given up after it was sent reported reached false")
		}
	}
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	if _, reached, err := f.write(wctx, leader, "leader:1", writeReq("one more")); !errors.Is(err, errUseCall) || reached {
		t.Fatalf("a write behind %d given-up writes the leader has not answered: reached %v, err %v; want errUseCall and reached false", maxForwardOps, reached, err)
	}

	// The leader answers one: a place is free again.
	leader.answers <- &kvpb.ForwardResponse{Results: []*kvpb.ForwardedResult{{Id: lastID.Load(), Result: &kvpb.ForwardedResult_Write{Write: &kvpb.WriteResponse{}}}}}
	soon.Succeeds(t, 10*time.Second, func() error {
		calls, _, err := streamCalls(f, "leader:1")
		if err == nil && calls != maxForwardOps-1 {
			err = fmt.Errorf("%d calls held after one answer, want %d", calls, maxForwardOps-1)
		}
		return err
	})
	before := taken.Load()
	sctx, scancel := context.WithCancel(context.Background())
	sent := make(chan bool, 1)
	go func() {
		_, reached, _ := f.write(sctx, leader, "leader:1", writeReq("after an answer"))
		sent <- reached
	}()
	soon.Succeeds(t, 10*time.Second, func() error {
		if taken.Load() == before {
			return errors.New("the write after an answer was not sent on the stream")
		}
		return nil
	})
	scancel()
	<-sent
}

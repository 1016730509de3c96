package memtransport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kvstore/kvstore/rpc/kvpb"
)

// echo is a Peer service whose Forward answers every operation with its
// id, in the order received, and ends with end (nil: once the caller
// closed its side) or when its context ends, reporting how it ended.
type echo struct {
	kvpb.UnimplementedPeerServer
	end     error
	after   int           // with end: end after this many operations
	ended   chan error    // how Forward ended
	started chan struct{} // closed when Forward starts (if not nil)
	hold    chan struct{} // if not nil, Forward reads nothing until it is closed
}

func (e *echo) Forward(st grpc.BidiStreamingServer[kvpb.ForwardRequest, kvpb.ForwardResponse]) error {
	if e.started != nil {
		close(e.started)
	}
	if e.hold != nil {
		<-e.hold
	}
	n := 0
	for {
		req, err := st.Recv()
		if err != nil {
			e.ended <- err
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		resp := &kvpb.ForwardResponse{}
		for _, op := range req.Ops {
			resp.Results = append(resp.Results, &kvpb.ForwardedResult{Id: op.Id})
			n++
		}
		if err := st.Send(resp); err != nil {
			e.ended <- err
			return err
		}
		if e.end != nil && n >= e.after {
			e.ended <- e.end
			return e.end
		}
	}
}

func openEcho(t *testing.T, e *echo, faults Faults) (*Network, grpc.BidiStreamingClient[kvpb.ForwardRequest, kvpb.ForwardResponse], context.CancelFunc) {
	t.Helper()
	nw := New(1)
	e.ended = make(chan error, 1)
	nw.Register("b", e)
	nw.SetFaults("a", "b", faults)
	nw.SetFaults("b", "a", faults)
	c, err := nw.Endpoint("a").Peer("b")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	st, err := c.Forward(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return nw, st, cancel
}

func op(id uint64) *kvpb.ForwardRequest {
	return &kvpb.ForwardRequest{Ops: []*kvpb.ForwardedOp{{Id: id}}}
}

// TestStreamKeepsOrder: messages sent over a link whose delays vary (and
// that reorders calls) arrive in the order sent, both ways.
func TestStreamKeepsOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, st, cancel := openEcho(t, &echo{}, Faults{Delay: time.Millisecond, Jitter: 20 * time.Millisecond, Reorder: 0.5, ReorderDelay: 50 * time.Millisecond})
		defer cancel()
		const n = 100
		for i := range uint64(n) {
			if err := st.Send(op(i + 1)); err != nil {
				t.Fatal(err)
			}
		}
		for want := uint64(1); want <= n; want++ {
			resp, err := st.Recv()
			if err != nil {
				t.Fatalf("answer %d: %v", want, err)
			}
			if got := resp.Results[0].Id; got != want {
				t.Fatalf("answer %d: got id %d", want, got)
			}
		}
		if err := st.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Recv(); !errors.Is(err, io.EOF) {
			t.Fatalf("after the server's clean end: %v, want io.EOF", err)
		}
	})
}

// TestAnswersFollowTheCallersClose: after the caller closed its side, the
// server still answers what it was sent, then ends cleanly.
func TestAnswersFollowTheCallersClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, st, cancel := openEcho(t, &echo{}, Faults{Delay: 5 * time.Millisecond})
		defer cancel()
		for i := range uint64(3) {
			if err := st.Send(op(i + 1)); err != nil {
				t.Fatal(err)
			}
		}
		if err := st.CloseSend(); err != nil {
			t.Fatal(err)
		}
		for want := uint64(1); want <= 3; want++ {
			resp, err := st.Recv()
			if err != nil || resp.Results[0].Id != want {
				t.Fatalf("answer %d after the caller's close: %v, %v", want, resp, err)
			}
		}
		if _, err := st.Recv(); !errors.Is(err, io.EOF) {
			t.Fatalf("end: %v, want io.EOF", err)
		}
	})
}

// TestStreamEndsWithTheServersStatus: the caller gets the answers sent
// before the server's handler returned, then its status.
func TestStreamEndsWithTheServersStatus(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		end := status.Error(codes.FailedPrecondition, "done here")
		_, st, cancel := openEcho(t, &echo{end: end, after: 2}, Faults{Delay: time.Millisecond})
		defer cancel()
		for i := range uint64(3) {
			if err := st.Send(op(i + 1)); err != nil {
				t.Fatal(err)
			}
		}
		for want := uint64(1); want <= 2; want++ {
			resp, err := st.Recv()
			if err != nil || resp.Results[0].Id != want {
				t.Fatalf("answer %d: %v, %v", want, resp, err)
			}
		}
		if _, err := st.Recv(); status.Code(err) != codes.FailedPrecondition {
			t.Fatalf("end: %v, want the server's FailedPrecondition", err)
		}
		// Sending on an ended stream reports io.EOF, as gRPC's does.
		synctest.Wait()
		if err := st.Send(op(9)); !errors.Is(err, io.EOF) {
			t.Fatalf("Send after the end: %v, want io.EOF", err)
		}
	})
}

// TestLostMessageBreaksTheStream: a message lost on the link breaks the
// stream, as a connection reset would: the caller gets Unavailable, and
// the server's side ends too.
func TestLostMessageBreaksTheStream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw, st, cancel := openEcho(t, &echo{}, Faults{Delay: time.Millisecond})
		defer cancel()
		if err := st.Send(op(1)); err != nil {
			t.Fatal(err)
		}
		if resp, err := st.Recv(); err != nil || resp.Results[0].Id != 1 {
			t.Fatalf("answer 1: %v, %v", resp, err)
		}
		nw.SetFaults("a", "b", Faults{Cut: true})
		if err := st.Send(op(2)); err != nil {
			t.Fatalf("Send of a message the link loses: %v, want nil (the sender cannot tell)", err)
		}
		if _, err := st.Recv(); status.Code(err) != codes.Unavailable {
			t.Fatalf("after a lost message: %v, want Unavailable", err)
		}
		select {
		case err := <-(nwEcho(nw)).ended:
			if status.Code(err) != codes.Unavailable {
				t.Fatalf("server's side ended with %v, want Unavailable", err)
			}
		case <-time.After(time.Minute):
			t.Fatal("server's side did not end")
		}
	})
}

// nwEcho is the echo service registered at "b".
func nwEcho(nw *Network) *echo { return nw.service("b").(*echo) }

// TestCallerEndEndsTheServer: the caller's context ending ends its side at
// once (with the context's status) and the server's.
func TestCallerEndEndsTheServer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw, st, cancel := openEcho(t, &echo{}, Faults{Delay: time.Millisecond})
		if err := st.Send(op(1)); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Recv(); err != nil {
			t.Fatal(err)
		}
		cancel()
		if _, err := st.Recv(); status.Code(err) != codes.Canceled {
			t.Fatalf("after the caller's end: %v, want Canceled", err)
		}
		if err := <-nwEcho(nw).ended; status.Code(err) != codes.Canceled {
			t.Fatalf("server's side ended with %v, want Canceled", err)
		}
	})
}

// TestStreamToNobodyIsRefused: a stream to an address with no service
// fails at once with Unavailable, as a refused connection.
func TestStreamToNobodyIsRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := New(1)
		c, err := nw.Endpoint("a").Peer("nobody")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Forward(t.Context()); status.Code(err) != codes.Unavailable {
			t.Fatalf("Forward to nobody: %v, want Unavailable", err)
		}
		if got := fmt.Sprint(nw.Stats().Refused); got != "1" {
			t.Fatalf("refused %s, want 1", got)
		}
	})
}

// TestResetReachesACallerWhoseServerDoesNotRead: a lost message resets
// both directions, so the caller learns of it even while the server reads
// nothing.
func TestResetReachesACallerWhoseServerDoesNotRead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := &echo{hold: make(chan struct{})}
		nw, st, cancel := openEcho(t, e, Faults{Delay: time.Millisecond})
		defer cancel()
		defer close(e.hold)
		nw.SetFaults("a", "b", Faults{Cut: true})
		if err := st.Send(op(1)); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Recv(); status.Code(err) != codes.Unavailable {
			t.Fatalf("after a lost message: %v, want Unavailable", err)
		}
	})
}

// TestLostOpeningNeverStartsTheServer: a stream whose opening is lost
// resets, and its server never runs.
func TestLostOpeningNeverStartsTheServer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := New(1)
		e := &echo{ended: make(chan error, 1), started: make(chan struct{})}
		nw.Register("b", e)
		nw.SetFaults("a", "b", Faults{Cut: true})
		c, err := nw.Endpoint("a").Peer("b")
		if err != nil {
			t.Fatal(err)
		}
		st, err := c.Forward(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Recv(); status.Code(err) != codes.Unavailable {
			t.Fatalf("after a lost opening: %v, want Unavailable", err)
		}
		synctest.Wait()
		select {
		case <-e.started:
			t.Fatal("the server ran a stream whose opening was lost")
		default:
		}
	})
}

// TestStreamCarriesCopies: what the receiver gets does not change when the
// sender reuses its message.
func TestStreamCarriesCopies(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, st, cancel := openEcho(t, &echo{}, Faults{Delay: time.Millisecond})
		defer cancel()
		m := op(1)
		if err := st.Send(m); err != nil {
			t.Fatal(err)
		}
		m.Ops[0].Id = 99
		if resp, err := st.Recv(); err != nil || resp.Results[0].Id != 1 {
			t.Fatalf("answer: %v, %v; want id 1 (the message as sent)", resp, err)
		}
	})
}

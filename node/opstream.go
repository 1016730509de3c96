package node

// The server side of the node's operation streams: the client service's
// Stream (client_stream.go) and the node-to-node Forward (forward.go).
// Each stream's operations run concurrently, each under its own deadline,
// and each answer goes out as soon as it is done; answers done together
// go together in one message.

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// maxAnswerBytes bounds one response message of a stream (answers that
// are done together go together up to it; a larger answer goes alone).
const maxAnswerBytes = 1 << 20

// stopFlush bounds how long a stopping node tries to send a stream's last
// answers.
const stopFlush = time.Second

// opServer is the state of one stream of operations whose answers are of
// type R.
type opServer[R proto.Message] struct {
	// ctx is the operations' context: it ends with the stream, and at
	// once when the node stops.
	ctx context.Context
	// serving is ctx bound to the node's serving state, shared by the
	// operations that need it (client operations, servingView.opContext).
	serving servingBinding

	mu      sync.Mutex
	closing bool // no operation starts any more
	answers []R
	final   bool          // flush: send what is queued, then stop
	wake    chan struct{} // an answer is queued (capacity 1)
	ops     sync.WaitGroup
	// slots holds one token per operation started and not yet answered
	// on the wire: when it is full, the stream reads no more of the
	// caller's messages until answers went out, so a caller that sends
	// and does not read cannot pile answers up in the node.
	slots chan struct{}
}

// serveOps serves one stream: recv reads the caller's messages and starts
// their operations (admit, then answer each once), send sends a message
// of answers, and at most slots operations are unanswered. It returns when
// the caller closes its side (once every operation is answered), when the
// stream breaks, or when the node stops (Unavailable, after at most
// stopFlush spent sending the last answers).
func serveOps[R proto.Message](n *Node, ctx context.Context, slots int, recv func(*opServer[R]) error, send func([]R) error) error {
	opsCtx, stopOps := context.WithCancel(ctx)
	defer stopOps()
	os := &opServer[R]{ctx: opsCtx, wake: make(chan struct{}, 1), slots: make(chan struct{}, slots)}
	os.serving.sv, os.serving.ctx = n.servingView, opsCtx
	sent := make(chan error, 1)
	go func() { sent <- os.sendLoop(ctx, send) }()
	received := make(chan error, 1)
	go func() { received <- recv(os) }()

	var err error
	sendDone, stopping := false, false
	select {
	case err = <-received:
		if errors.Is(err, io.EOF) || errors.Is(err, errClosing) {
			err = nil // the caller closed its side: answer what runs, then end
		}
	case <-n.ctx.Done():
		stopOps()
		stopping = true
		err = status.Errorf(codes.Unavailable, "node %s: stopping", n.cfg.ID)
	case err = <-sent:
		sendDone = true
	}
	// No operation starts from here on; the ones running end by their
	// deadlines (or at once, if the node stops) and are answered.
	os.mu.Lock()
	os.closing = true
	os.mu.Unlock()
	os.ops.Wait()
	os.serving.release()
	if !sendDone {
		// The answers go out. A stopping node waits for a caller that
		// does not read them at most stopFlush: its calls count as sent,
		// and the caller asks another node.
		os.flush()
		var limit <-chan time.Time
		if stopping {
			t := time.NewTimer(stopFlush)
			defer t.Stop()
			limit = t.C
		}
		select {
		case e := <-sent:
			if err == nil && e != nil && !errors.Is(e, context.Canceled) {
				err = e
			}
		case <-limit:
		}
	}
	return err
}

// receive reads a stream's request messages with recv until it ends, and
// admits and starts each of their operations with its deadline. An
// operation's time runs from its message's arrival, not from its start:
// one that waited here for a slot until its caller gave up is not run.
func receive[Op interface{ GetTimeoutUs() int64 }, Req interface{ GetOps() []Op }, R proto.Message](os *opServer[R], recv func() (Req, error), start func(op Op, deadline time.Time)) error {
	for {
		req, err := recv()
		if err != nil {
			return err
		}
		now := time.Now()
		for _, op := range req.GetOps() {
			deadline := opDeadline(now, op.GetTimeoutUs())
			if err := os.admit(); err != nil {
				return err
			}
			start(op, deadline)
		}
	}
}

// errClosing: the stream takes no more operations.
var errClosing = errors.New("node: the stream is closing")

// admit takes a slot for one more operation (waiting while every slot is
// taken); the operation must then be answered once. It fails once the
// stream ends or no longer takes operations.
func (os *opServer[R]) admit() error {
	select {
	case os.slots <- struct{}{}:
	case <-os.ctx.Done():
		return os.ctx.Err()
	}
	os.mu.Lock()
	defer os.mu.Unlock()
	if os.closing {
		<-os.slots
		return errClosing
	}
	os.ops.Add(1)
	return nil
}

// answer queues the answer of an admitted operation.
func (os *opServer[R]) answer(r R) {
	os.mu.Lock()
	os.answers = append(os.answers, r)
	os.mu.Unlock()
	os.ops.Done()
	select {
	case os.wake <- struct{}{}:
	default:
	}
}

// flush makes sendLoop send what is queued and return.
func (os *opServer[R]) flush() {
	os.mu.Lock()
	os.final = true
	os.mu.Unlock()
	select {
	case os.wake <- struct{}{}:
	default:
	}
}

// sendLoop sends the queued answers, those done together in one message,
// until the stream (ctx) ends or, after flush, nothing is queued.
func (os *opServer[R]) sendLoop(ctx context.Context, send func([]R) error) error {
	for {
		select {
		case <-os.wake:
		case <-ctx.Done():
			return ctx.Err()
		}
		os.mu.Lock()
		queued, final := os.answers, os.final
		os.answers = nil
		os.mu.Unlock()
		for len(queued) > 0 {
			k, bytes := 1, proto.Size(queued[0])
			for ; k < len(queued); k++ {
				size := proto.Size(queued[k])
				if bytes+size > maxAnswerBytes {
					break
				}
				bytes += size
			}
			if err := send(queued[:k]); err != nil {
				return err
			}
			for range k {
				<-os.slots
			}
			queued = queued[k:]
		}
		if final {
			return nil
		}
	}
}

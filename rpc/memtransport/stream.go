package memtransport

// Streams (Peer.Forward). A stream is one ordered connection: its
// messages each way go through their direction's link faults one by one,
// arrive in the order sent (a delay holds back the messages behind it,
// as on a TCP connection), and are never duplicated. A lost message
// resets the stream: each side gets the messages on their way before it,
// then Unavailable. (TCP would retransmit, and over a cut link stall until
// a keep-alive gives up; the reset is that end, come at once.) The
// caller's context bounds the stream and reaches the server; its end, or
// the network's Close, ends both sides at once. The caller's Send reports
// io.EOF once the server's end has arrived, as gRPC's does once the
// trailers have.

import (
	"context"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/kvstore/kvstore/rpc/kvpb"
)

// errBroken is the status a stream ends with after a lost message.
var errBroken = status.Error(codes.Unavailable, "memtransport: stream broken (a message was lost)")

// Forward opens a Forward stream to c.to.
func (c *client) Forward(ctx context.Context, opts ...grpc.CallOption) (grpc.BidiStreamingClient[kvpb.ForwardRequest, kvpb.ForwardResponse], error) {
	cs, err := openStream(ctx, c, opts, func(srv kvpb.PeerServer, ss grpc.ServerStream) error {
		return srv.Forward(&grpc.GenericServerStream[kvpb.ForwardRequest, kvpb.ForwardResponse]{ServerStream: ss})
	})
	if err != nil {
		return nil, err
	}
	return &grpc.GenericClientStream[kvpb.ForwardRequest, kvpb.ForwardResponse]{ClientStream: cs}, nil
}

// arrival is a message on its way, or a pipe's end, and when it arrives.
type arrival struct {
	msg proto.Message
	err error // the end: io.EOF (closed) or a status
	at  time.Time
}

// pipe is one direction of a stream.
type pipe struct {
	nw       *Network
	from, to string
	rev      *pipe // the other direction: a lost message resets both

	mu      sync.Mutex
	msgs    []arrival // sent, not read yet, in order
	lastAt  time.Time // when the latest message sent arrives
	end     *arrival  // set once: closed, or broken
	gone    bool      // the reader is gone (the server returned): what is sent is dropped
	changed chan struct{}
}

func newPipe(nw *Network, from, to string) *pipe {
	return &pipe{nw: nw, from: from, to: to, changed: make(chan struct{})}
}

// notifyLocked wakes the receiver.
func (p *pipe) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// send sends a copy of m. It reports nothing of what becomes of it: a
// lost message, or the stream's end, shows on the other direction.
func (p *pipe) send(m proto.Message) {
	p.mu.Lock()
	if p.end != nil || p.gone {
		p.mu.Unlock()
		return
	}
	f := p.nw.fate(p.from, p.to)
	now := time.Now()
	if f.lost {
		p.endLocked(errBroken, now)
		p.mu.Unlock()
		p.rev.closeNow(errBroken)
		return
	}
	at := now.Add(f.delay)
	if at.Before(p.lastAt) {
		at = p.lastAt
	}
	p.lastAt = at
	p.msgs = append(p.msgs, arrival{msg: proto.Clone(m), at: at})
	p.notifyLocked()
	p.mu.Unlock()
}

// close ends the pipe with err after the messages sent: the end is a
// message too, and if it is lost the stream resets.
func (p *pipe) close(err error) {
	p.mu.Lock()
	if p.end != nil {
		p.mu.Unlock()
		return
	}
	f := p.nw.fate(p.from, p.to)
	if f.lost {
		p.endLocked(errBroken, time.Now())
		p.mu.Unlock()
		p.rev.closeNow(errBroken)
		return
	}
	p.endLocked(err, time.Now().Add(f.delay))
	p.mu.Unlock()
}

// closeNow ends the pipe with err after what is on its way.
func (p *pipe) closeNow(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.endLocked(err, time.Now())
}

// breakNow ends the pipe with err at once; what is on its way is lost.
func (p *pipe) breakNow(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.end == nil {
		if n := len(p.msgs); n > 0 {
			p.nw.count(func(s *Stats) { s.Lost += uint64(n) })
		}
		p.msgs = nil
		p.lastAt = time.Time{}
		p.endLocked(err, time.Now())
	}
}

// readerGone drops what the pipe holds and what is sent on it from now on:
// its reader (a server's handler) returned.
func (p *pipe) readerGone() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.gone = true
	p.msgs = nil
}

// ended returns the pipe's end once it has arrived: io.EOF (closed) or a
// status; nil before.
func (p *pipe) ended() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.end != nil && !p.end.at.After(time.Now()) {
		return p.end.err
	}
	return nil
}

func (p *pipe) endLocked(err error, at time.Time) {
	if p.end != nil {
		return
	}
	if at.Before(p.lastAt) {
		at = p.lastAt
	}
	p.end = &arrival{err: err, at: at}
	p.notifyLocked()
}

// recv returns the next message once it arrived, or the pipe's end once
// every message before it was read, or ctx's status once ctx ends.
func (p *pipe) recv(ctx context.Context) (proto.Message, error) {
	for {
		p.mu.Lock()
		now := time.Now()
		var next time.Time
		switch {
		case len(p.msgs) > 0:
			if a := p.msgs[0]; !a.at.After(now) {
				p.msgs = p.msgs[1:]
				p.mu.Unlock()
				p.nw.count(func(s *Stats) { s.Delivered++ })
				return a.msg, nil
			}
			next = p.msgs[0].at
		case p.end != nil:
			if !p.end.at.After(now) {
				err := p.end.err
				p.mu.Unlock()
				return nil, err
			}
			next = p.end.at
		}
		changed := p.changed
		p.mu.Unlock()
		var timer <-chan time.Time
		var t *time.Timer
		if !next.IsZero() {
			t = time.NewTimer(next.Sub(now))
			timer = t.C
		}
		select {
		case <-changed:
		case <-timer:
		case <-ctx.Done():
		}
		if t != nil {
			t.Stop()
		}
		if err := ctx.Err(); err != nil {
			return nil, status.FromContextError(err).Err()
		}
	}
}

// openStream opens a stream from c's endpoint to c.to whose server side
// runs serve on the service there.
func openStream(ctx context.Context, c *client, opts []grpc.CallOption, serve func(kvpb.PeerServer, grpc.ServerStream) error) (*clientStream, error) {
	nw := c.e.nw
	if err := ctx.Err(); err != nil {
		return nil, status.FromContextError(err).Err()
	}
	if c.e.ctx.Err() != nil {
		return nil, status.Errorf(codes.Canceled, "memtransport: endpoint %s closed", c.e.from)
	}
	srv := nw.service(c.to)
	if srv == nil {
		nw.count(func(s *Stats) { s.Refused++ })
		return nil, status.Errorf(codes.Unavailable, "memtransport: no service at %s (connection refused)", c.to)
	}
	setPeer(opts, c.to)
	sctx, cancel := context.WithCancel(ctx)
	stopE := context.AfterFunc(c.e.ctx, cancel)
	stopN := context.AfterFunc(nw.ctx, cancel)
	cs := &clientStream{ctx: sctx, c: c, up: newPipe(nw, c.e.from, c.to), down: newPipe(nw, c.to, c.e.from)}
	cs.up.rev, cs.down.rev = cs.down, cs.up
	// The caller's end (or the endpoint's, or the network's) ends both
	// directions at once.
	context.AfterFunc(sctx, func() {
		stopE()
		stopN()
		err := ctxStatus(sctx, c)
		cs.up.breakNow(err)
		cs.down.breakNow(err)
	})
	// The stream's opening is a message: lost, the stream resets.
	open := nw.fate(c.e.from, c.to)
	if open.lost {
		cs.down.closeNow(errBroken)
		return cs, nil
	}
	started := nw.spawn(func() {
		if !wait(sctx, open.delay) {
			return
		}
		err := serve(srv, &serverStream{ctx: sctx, up: cs.up, down: cs.down})
		if err == nil {
			err = io.EOF
		} else if _, ok := status.FromError(err); !ok {
			err = status.Error(codes.Unknown, err.Error())
		}
		cs.up.readerGone()
		cs.down.close(err)
	})
	if !started {
		cancel()
		return nil, status.Error(codes.Unavailable, "memtransport: network closed")
	}
	return cs, nil
}

// clientStream is the caller's side of a stream (grpc.ClientStream).
type clientStream struct {
	ctx      context.Context
	c        *client
	up, down *pipe
}

func (s *clientStream) Header() (metadata.MD, error) { return nil, nil }
func (s *clientStream) Trailer() metadata.MD         { return nil }
func (s *clientStream) Context() context.Context     { return s.ctx }

func (s *clientStream) CloseSend() error {
	s.up.close(io.EOF)
	return nil
}

func (s *clientStream) SendMsg(m any) error {
	if s.ctx.Err() != nil || s.down.ended() != nil {
		return io.EOF
	}
	s.up.send(m.(proto.Message))
	return nil
}

func (s *clientStream) RecvMsg(m any) error {
	msg, err := s.down.recv(s.ctx)
	if err != nil {
		if s.ctx.Err() != nil {
			return ctxStatus(s.ctx, s.c)
		}
		return err
	}
	proto.Reset(m.(proto.Message))
	proto.Merge(m.(proto.Message), msg)
	return nil
}

// serverStream is the server's side of a stream (grpc.ServerStream).
type serverStream struct {
	ctx      context.Context
	up, down *pipe
}

func (s *serverStream) SetHeader(metadata.MD) error  { return nil }
func (s *serverStream) SendHeader(metadata.MD) error { return nil }
func (s *serverStream) SetTrailer(metadata.MD)       {}
func (s *serverStream) Context() context.Context     { return s.ctx }

func (s *serverStream) SendMsg(m any) error {
	if err := s.ctx.Err(); err != nil {
		return status.FromContextError(err).Err()
	}
	if err := s.up.ended(); err != nil && err != io.EOF {
		// The stream reset (a lost message). (After the caller closed
		// its side, io.EOF, answers still go.)
		return err
	}
	s.down.send(m.(proto.Message))
	return nil
}

func (s *serverStream) RecvMsg(m any) error {
	msg, err := s.up.recv(s.ctx)
	if err != nil {
		return err
	}
	proto.Reset(m.(proto.Message))
	proto.Merge(m.(proto.Message), msg)
	return nil
}

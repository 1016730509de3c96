package node

import (
	"context"
	"fmt"
	"sync"

	"google.golang.org/grpc"
	grpcpeer "google.golang.org/grpc/peer"
	"google.golang.org/protobuf/proto"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/rpc/kvpb"
)

// clientKeys is the client API's key limit: MaxKeySize, a longer key is
// ErrTooLarge.
func (l *limiter) clientKeys() keyLimit {
	return keyLimit{max: l.maxKey, name: "MaxKeySize", err: kvstore.ErrTooLarge}
}

// checkWrite refuses a write the client API must not take: a bad key or a
// value longer than MaxValueSize. It runs before anything is sent, so a
// refused write changes nothing.
func (l *limiter) checkWrite(key, value string) error {
	if err := checkKey("key", key, l.clientKeys()); err != nil {
		return err
	}
	if len(value) > l.maxValue {
		return fmt.Errorf("%w: value of %d bytes (MaxValueSize %d)", kvstore.ErrTooLarge, len(value), l.maxValue)
	}
	return nil
}

// limiter enforces the client API's per-request limits: the encoded size of
// each request (MaxRequestSize) and how many requests one client
// connection has in flight (MaxClientRequests). Node-to-node calls do not
// pass through it.
type limiter struct {
	maxSize     int
	maxInFlight int
	maxKey      int // MaxKeySize (clientKeys)
	maxValue    int // MaxValueSize (checkWrite)

	mu       sync.Mutex
	inFlight map[string]int // client connection (remote address) -> requests in flight
	streams  map[string]int // client connection -> Streams open
}

// maxClientStreams bounds the Streams one client connection has open. Each
// holds at most MaxClientRequests answers its client has not read, so the
// bound caps what one connection can make a node hold; the Go client opens
// two per node it calls (reads, writes).
const maxClientStreams = 64

func newLimiter(cfg *Config) *limiter {
	return &limiter{maxSize: cfg.MaxRequestSize, maxInFlight: cfg.MaxClientRequests, maxKey: cfg.MaxKeySize, maxValue: cfg.MaxValueSize,
		inFlight: make(map[string]int), streams: make(map[string]int)}
}

// openStream counts one more Stream open for who, or refuses it with
// ErrBusy if who has maxClientStreams open; done ends it.
func (l *limiter) openStream(who string) (done func(), err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.streams[who] >= maxClientStreams {
		return nil, fmt.Errorf("%w: client %s has %d streams open, the most one connection may", kvstore.ErrBusy, who, maxClientStreams)
	}
	l.streams[who]++
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.streams[who]--; l.streams[who] <= 0 {
			delete(l.streams, who)
		}
	}, nil
}

// serve runs the client API handler h for req within the limits, or
// refuses req at once with ErrTooLarge or ErrBusy.
func (l *limiter) serve(ctx context.Context, req any, h grpc.UnaryHandler) (any, error) {
	if m, ok := req.(proto.Message); ok {
		if size := proto.Size(m); size > l.maxSize {
			return nil, fmt.Errorf("%w: request of %d bytes (MaxRequestSize %d)", kvstore.ErrTooLarge, size, l.maxSize)
		}
	}
	who := "unknown client"
	if p, ok := grpcpeer.FromContext(ctx); ok && p.Addr != nil {
		who = p.Addr.String()
	}
	// A batch is as many requests as it carries operations.
	n := 1
	if b, ok := req.(*kvpb.BatchRequest); ok {
		n = max(1, len(b.Ops))
	}
	if !l.acquire(who, n) {
		return nil, fmt.Errorf("%w: client %s would have more than %d requests in flight (MaxClientRequests %d) with %d more", kvstore.ErrBusy, who, l.maxInFlight, l.maxInFlight, n)
	}
	defer l.release(who, n)
	return h(ctx, req)
}

// acquire counts n more requests in flight for who, unless that would
// take it over maxInFlight.
func (l *limiter) acquire(who string, n int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.inFlight[who]+n > l.maxInFlight {
		return false
	}
	l.inFlight[who] += n
	return true
}

// release ends n of who's requests in flight.
func (l *limiter) release(who string, n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.inFlight[who] <= n {
		delete(l.inFlight, who)
		return
	}
	l.inFlight[who] -= n
}

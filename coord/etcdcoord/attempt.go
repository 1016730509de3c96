package etcdcoord

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// A member that stops answering (SIGSTOP, a frozen VM, a long GC pause)
// keeps its TCP connections open: nothing tells the client it is gone
// until a transport ping times out, which grpc-go allows no sooner than
// every 10 s. The client sends each call to the next member in turn and
// keeps a stream on the member it was opened on. So every call that can
// be repeated is made in attempts of at most attemptTimeout, the next
// going to the next member, and every watch is checked for progress and
// opened again on a stream of its own when it makes none.
const (
	// attemptTimeout bounds one attempt of a call retried by retry: well
	// inside a session's deadline, long enough for a loaded etcd.
	attemptTimeout = 500 * time.Millisecond
	// transientWait is how long retry waits after an attempt that failed
	// fast with a transient error (no etcd leader, connection refused).
	transientWait = 50 * time.Millisecond
)

// retry runs f, bounded by ctx, in attempts of at most attemptTimeout,
// until it succeeds, fails with an error other than an attempt's timeout
// or a transient one, or ctx ends. f must be safe to repeat: an attempt
// that timed out may have been applied.
func (c *Coordinator) retry(ctx context.Context, f func(ctx context.Context) error) error {
	for {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		err := f(actx)
		timedOut := actx.Err() != nil
		cancel()
		switch {
		case err == nil || ctx.Err() != nil:
			return err
		case timedOut:
			continue // that member did not answer: the next attempt goes to the next one
		case !transient(err):
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(transientWait):
		}
	}
}

// transient reports whether err is worth another attempt: etcd has no
// leader, or the member or the connection is unavailable.
func transient(err error) bool {
	if ee, ok := errors.AsType[rpctypes.EtcdError](err); ok {
		return ee.Code() == codes.Unavailable
	}
	return status.Code(err) == codes.Unavailable
}

// streamSeq numbers the watch streams.
var streamSeq atomic.Uint64

// ownStream returns ctx with outgoing metadata no other context has. The
// client shares one gRPC stream among the watches whose contexts carry the
// same metadata, and that stream stays on the member it was opened on: a
// watch made with ownStream's context gets a new stream, opened on the
// next member, instead of joining one stuck on a member that does not
// answer.
func ownStream(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "kvstore-watch-stream", strconv.FormatUint(streamSeq.Add(1), 10))
}

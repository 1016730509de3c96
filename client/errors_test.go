package client_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/client"
	"github.com/kvstore/kvstore/rpc"
	"github.com/kvstore/kvstore/rpc/kvpb"
)

// sentinels are every error the client documents.
var sentinels = []error{
	client.ErrPartitioned, client.ErrNoLeader, client.ErrNoQuorum, client.ErrTimeout,
	client.ErrOutcomeUnknown, client.ErrStopped, client.ErrBadRequest, client.ErrTooLarge,
	client.ErrBusy, client.ErrNotVoter, client.ErrUnsafeRemoval, client.ErrRemoveLeader,
	client.ErrNotLeader, client.ErrStaleEpoch, client.ErrRemoved, client.ErrCanceled,
	client.ErrUnavailable, client.ErrTLS, client.ErrClosed, client.ErrRefused,
}

// fakeKV answers every call with answer's error (Get with a value too large
// to receive, if big).
type fakeKV struct {
	kvpb.UnimplementedKVServer
	answer func(ctx context.Context) error
	big    bool
}

func (f *fakeKV) Get(ctx context.Context, _ *kvpb.GetRequest) (*kvpb.GetResponse, error) {
	if f.big {
		return &kvpb.GetResponse{Value: strings.Repeat("x", rpc.MaxMsgSize+1<<20), Found: true}, nil
	}
	return nil, f.answer(ctx)
}

func (f *fakeKV) Put(ctx context.Context, _ *kvpb.PutRequest) (*kvpb.PutResponse, error) {
	return nil, f.answer(ctx)
}

func (f *fakeKV) Delete(ctx context.Context, _ *kvpb.DeleteRequest) (*kvpb.DeleteResponse, error) {
	return nil, f.answer(ctx)
}

func (f *fakeKV) Status(ctx context.Context, _ *kvpb.StatusRequest) (*kvpb.StatusResponse, error) {
	return nil, f.answer(ctx)
}

// serve runs a gRPC server with kv (none if nil) on a loopback port until
// the test ends; stop stops it at once.
func serve(t *testing.T, kv kvpb.KVServer) (addr string, stop func()) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	if kv != nil {
		kvpb.RegisterKVServer(srv, kv)
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	return l.Addr().String(), srv.Stop
}

// TestEveryErrorNamesASentinel feeds the client every gRPC code with a
// message that names no sentinel (what gRPC itself, a proxy or a server
// that is not a node may answer), every node sentinel as a node sends it,
// and the failures of the transport: each call's error matches one of the
// client's sentinels (the expected one) with errors.Is, never a bare gRPC
// status. A write's error is outcome unknown exactly when it may have been
// applied.
func TestEveryErrorNamesASentinel(t *testing.T) {
	type tc struct {
		name string
		// endpoint starts what the client calls.
		endpoint func(t *testing.T) string
		want     error
		// unknown: whether a write's error must (true) or must not
		// (false) be outcome unknown; nil: either.
		unknown *bool
		// cancel cancels the call's context as soon as it starts.
		cancel bool
		// not are sentinels the error must not match.
		not []error
	}
	yes, no := true, false
	answering := func(f func(ctx context.Context) error) func(t *testing.T) string {
		return func(t *testing.T) string {
			addr, _ := serve(t, &fakeKV{answer: f})
			return addr
		}
	}
	var cases []tc
	codeWant := map[codes.Code]error{
		codes.Canceled: client.ErrUnavailable, codes.Unknown: client.ErrUnavailable,
		codes.InvalidArgument: client.ErrBadRequest, codes.DeadlineExceeded: client.ErrTimeout,
		codes.NotFound: client.ErrUnavailable, codes.AlreadyExists: client.ErrUnavailable,
		codes.PermissionDenied: client.ErrTLS, codes.ResourceExhausted: client.ErrTooLarge,
		codes.FailedPrecondition: client.ErrUnavailable, codes.Aborted: client.ErrUnavailable,
		codes.OutOfRange: client.ErrBadRequest, codes.Unimplemented: client.ErrBadRequest,
		codes.Internal: client.ErrUnavailable, codes.Unavailable: client.ErrUnavailable,
		codes.DataLoss: client.ErrUnavailable, codes.Unauthenticated: client.ErrTLS,
	}
	for code := codes.Canceled; code <= codes.Unauthenticated; code++ {
		cases = append(cases, tc{name: "untyped " + code.String(), want: codeWant[code], endpoint: answering(func(context.Context) error {
			return status.Error(code, "something broke")
		})})
	}
	// What gRPC reports when the other side resets the stream.
	cases = append(cases,
		tc{name: "RST_STREAM deadline", want: client.ErrTimeout, endpoint: answering(func(context.Context) error {
			return status.Error(codes.DeadlineExceeded, "stream terminated by RST_STREAM with error code: CANCEL")
		})},
		tc{name: "RST_STREAM internal", want: client.ErrUnavailable, endpoint: answering(func(context.Context) error {
			return status.Error(codes.Internal, "stream terminated by RST_STREAM with error code: PROTOCOL_ERROR")
		})},
	)
	// Every sentinel as a node sends it: definite unless outcome unknown.
	for _, s := range []error{
		kvstore.ErrPartitioned, kvstore.ErrNoLeader, kvstore.ErrNoQuorum, kvstore.ErrNotLeader,
		kvstore.ErrTimeout, kvstore.ErrStopped, kvstore.ErrStaleEpoch, kvstore.ErrBadRequest,
		kvstore.ErrTooLarge, kvstore.ErrBusy, kvstore.ErrNotVoter, kvstore.ErrUnsafeRemoval,
		kvstore.ErrRemoveLeader, kvstore.ErrRemoved,
	} {
		cases = append(cases, tc{name: "node " + s.Error(), want: s, unknown: &no, endpoint: answering(func(context.Context) error {
			return rpc.ToStatus(fmt.Errorf("node n1: %w", s))
		})})
	}
	cases = append(cases,
		tc{name: "node outcome unknown", want: client.ErrOutcomeUnknown, unknown: &yes, endpoint: answering(func(context.Context) error {
			return rpc.ToStatus(fmt.Errorf("node n1: %w: %w", kvstore.ErrOutcomeUnknown, kvstore.ErrNoQuorum))
		})},
		tc{name: "node timed out, write unknown", want: client.ErrTimeout, unknown: &yes, endpoint: answering(func(context.Context) error {
			return rpc.ToStatus(fmt.Errorf("node n1: %w: %w", kvstore.ErrOutcomeUnknown, kvstore.ErrTimeout))
		})},
		// A node's answer quoting a key that holds every sentinel's text
		// matches its own sentinel only.
		tc{name: "node bad request quoting every sentinel", want: client.ErrBadRequest, unknown: &no, not: quotable(kvstore.ErrBadRequest),
			endpoint: answering(func(context.Context) error {
				return rpc.ToStatus(fmt.Errorf("node n1: key %q: %w", everySentinelText(), kvstore.ErrBadRequest))
			})},
		// A node older than the status details: its text names a
		// sentinel, but only the code counts; a write may have been
		// applied.
		tc{name: "node without details, outcome unknown", want: client.ErrUnavailable, unknown: &yes, not: quotable(kvstore.ErrTimeout), // it fails over until the deadline
			endpoint: answering(func(context.Context) error {
				return status.Error(codes.Unknown, "node n1: "+kvstore.ErrOutcomeUnknown.Error()+": "+kvstore.ErrNoQuorum.Error())
			})},
		tc{name: "node without details, bad request", want: client.ErrBadRequest, unknown: &yes, not: quotable(kvstore.ErrBadRequest),
			endpoint: answering(func(context.Context) error {
				return status.Error(codes.InvalidArgument, "node n1: key \"k\": "+kvstore.ErrBadRequest.Error())
			})},
		// The node never answers: the call's deadline ends it.
		tc{name: "no answer", want: client.ErrTimeout, unknown: &yes, endpoint: answering(func(ctx context.Context) error {
			<-ctx.Done()
			return ctx.Err()
		})},
		// The caller gives up.
		tc{name: "canceled by the caller", want: client.ErrCanceled, cancel: true, endpoint: answering(func(ctx context.Context) error {
			<-ctx.Done()
			return ctx.Err()
		})},
		// The node takes the request and drops the connection.
		tc{name: "dropped mid-call", want: client.ErrUnavailable, unknown: &yes, endpoint: func(t *testing.T) string {
			got := make(chan struct{}, 1)
			addr, stop := serve(t, &fakeKV{answer: func(ctx context.Context) error {
				select {
				case got <- struct{}{}:
				default:
				}
				<-ctx.Done()
				return ctx.Err()
			}})
			go func() { <-got; stop() }()
			return addr
		}},
		// Nothing listens: nothing was sent.
		tc{name: "connection refused", want: client.ErrUnavailable, unknown: &no, endpoint: deadEndpoint},
		// Something listens that is not a gRPC server.
		tc{name: "not gRPC", want: client.ErrUnavailable, unknown: &no, endpoint: func(t *testing.T) string {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { l.Close() })
			go func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					c.Close()
				}
			}()
			return l.Addr().String()
		}},
		// A gRPC server without the KV service.
		tc{name: "no KV service", want: client.ErrBadRequest, endpoint: func(t *testing.T) string {
			addr, _ := serve(t, nil)
			return addr
		}},
	)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			for _, op := range []struct {
				name  string
				write bool
				do    func(ctx context.Context, cl *client.Client) error
			}{
				{"get", false, func(ctx context.Context, cl *client.Client) error { _, _, err := cl.Get(ctx, "k"); return err }},
				{"put", true, func(ctx context.Context, cl *client.Client) error { return cl.Put(ctx, "k", "v") }},
				{"delete", true, func(ctx context.Context, cl *client.Client) error { return cl.Delete(ctx, "k") }},
				{"status", false, func(ctx context.Context, cl *client.Client) error { _, err := cl.Status(ctx); return err }},
			} {
				// A fresh endpoint and client for each call.
				cl, err := client.New(client.Config{Endpoints: []string{c.endpoint(t)}, RetryPause: 20 * time.Millisecond})
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
				if c.cancel {
					time.AfterFunc(50*time.Millisecond, cancel)
				}
				err = op.do(ctx, cl)
				cancel()
				cl.Close()
				if errors.Is(err, client.ErrTimeout) && !errors.Is(err, c.want) && !c.cancel {
					// A loaded machine took the whole 400 ms to connect
					// and answer: not the error under test. Once more,
					// with time to spare.
					t.Logf("%s: %v; again with 5 s", op.name, err)
					if cl, err = client.New(client.Config{Endpoints: []string{c.endpoint(t)}, RetryPause: 20 * time.Millisecond}); err != nil {
						t.Fatal(err)
					}
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					err = op.do(ctx, cl)
					cancel()
					cl.Close()
				}
				checkSentinel(t, op.name, err, c.want)
				for _, n := range c.not {
					if errors.Is(err, n) && !(op.write && n == client.ErrOutcomeUnknown && c.unknown != nil) {
						t.Errorf("%s: %v matches %v", op.name, err, n)
					}
				}
				if op.write && c.unknown != nil && errors.Is(err, client.ErrOutcomeUnknown) != *c.unknown {
					t.Errorf("%s: %v: outcome unknown %v, want %v", op.name, err, !*c.unknown, *c.unknown)
				}
			}
		})
	}
	// A value larger than the client may receive.
	t.Run("message too large", func(t *testing.T) {
		t.Parallel()
		addr, _ := serve(t, &fakeKV{big: true})
		cl, err := client.New(client.Config{Endpoints: []string{addr}})
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		_, _, err = cl.Get(ctxT(t, 2*time.Second), "k")
		checkSentinel(t, "get", err, client.ErrTooLarge)
	})
}

// checkSentinel fails unless err matches want, and so one of the client's
// sentinels.
func checkSentinel(t *testing.T, op string, err, want error) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error, want %v", op, want)
		return
	}
	any := false
	for _, s := range sentinels {
		any = any || errors.Is(err, s)
	}
	if !any {
		t.Errorf("%s: %v (%T) matches none of the client's sentinels", op, err, errors.Unwrap(err))
	}
	if !errors.Is(err, want) {
		t.Errorf("%s: %v, want it to match %v", op, err, want)
	}
}

// nodeSentinels are the sentinels a node sends.
var nodeSentinels = []error{
	kvstore.ErrPartitioned, kvstore.ErrNoLeader, kvstore.ErrNoQuorum, kvstore.ErrNotLeader,
	kvstore.ErrTimeout, kvstore.ErrOutcomeUnknown, kvstore.ErrStopped, kvstore.ErrStaleEpoch,
	kvstore.ErrBadRequest, kvstore.ErrTooLarge, kvstore.ErrBusy, kvstore.ErrNotVoter,
	kvstore.ErrUnsafeRemoval, kvstore.ErrRemoveLeader, kvstore.ErrRemoved,
}

// everySentinelText is a key that holds the text of every node sentinel.
func everySentinelText() string {
	var texts []string
	for _, s := range nodeSentinels {
		texts = append(texts, s.Error())
	}
	return strings.Join(texts, "|")
}

// quotable lists the node sentinels but those in except.
func quotable(except ...error) []error {
	var out []error
	for _, s := range nodeSentinels {
		if !slices.Contains(except, s) {
			out = append(out, s)
		}
	}
	return out
}

package rpc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/rpc/kvpb"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
)

func TestEverySentinelSurvivesTheWire(t *testing.T) {
	for _, tc := range table {
		wrapped := fmt.Errorf("node n1: %w", tc.err)
		st := ToStatus(wrapped)
		if got := status.Code(st); got != tc.code {
			t.Errorf("%v travels as %v, want %v", tc.err, got, tc.code)
		}
		back := FromStatus(st)
		if !errors.Is(back, tc.err) {
			t.Errorf("%v did not survive the round trip: %v", tc.err, back)
		}
	}
}

func TestOutcomeUnknownKeepsItsCause(t *testing.T) {
	err := fmt.Errorf("%w: %w", kvstore.ErrOutcomeUnknown, kvstore.ErrNoQuorum)
	back := FromStatus(ToStatus(err))
	if !errors.Is(back, kvstore.ErrOutcomeUnknown) || !errors.Is(back, kvstore.ErrNoQuorum) {
		t.Fatalf("lost a sentinel: %v", back)
	}
	if errors.Is(back, kvstore.ErrPartitioned) {
		t.Fatalf("gained a sentinel: %v", back)
	}
}

func TestPlainErrors(t *testing.T) {
	if ToStatus(nil) != nil || FromStatus(nil) != nil {
		t.Fatal("nil must stay nil")
	}
	if c := status.Code(ToStatus(context.DeadlineExceeded)); c != codes.DeadlineExceeded {
		t.Fatalf("deadline travels as %v", c)
	}
	transport := status.Error(codes.Unavailable, "connection refused")
	if got := FromStatus(transport); got != transport {
		t.Fatalf("a transport error was rewritten: %v", got)
	}
}

// TestTableIsOneToOne: a reason names one sentinel, a sentinel has one
// reason, and every reason is a stable non-empty name.
func TestTableIsOneToOne(t *testing.T) {
	reasons := map[string]error{}
	errs := map[error]string{}
	for _, tc := range table {
		if tc.reason == "" || strings.ToUpper(tc.reason) != tc.reason {
			t.Errorf("%v: reason %q, want UPPER_SNAKE_CASE", tc.err, tc.reason)
		}
		if prev, dup := reasons[tc.reason]; dup {
			t.Errorf("reason %q names both %v and %v", tc.reason, prev, tc.err)
		}
		if prev, dup := errs[tc.err]; dup {
			t.Errorf("%v has reasons %q and %q", tc.err, prev, tc.reason)
		}
		reasons[tc.reason], errs[tc.err] = tc.err, tc.reason
	}
}

// matchedSentinels lists the table's sentinels err matches.
func matchedSentinels(err error) []error {
	var got []error
	for _, tc := range table {
		if errors.Is(err, tc.err) {
			got = append(got, tc.err)
		}
	}
	return got
}

// TestTextNamesNoSentinel: an error whose message quotes a key that holds a
// sentinel's text does not match that sentinel after the trip, whether it
// carries another sentinel, none, or comes as a status without details (a
// node older than the details, or a server that is not a node).
func TestTextNamesNoSentinel(t *testing.T) {
	for i, tc := range table {
		key := "user/" + tc.err.Error() + "/x"
		carrier := table[(i+1)%len(table)].err
		// A sentinel of its own, and the quoted text of another.
		back := FromStatus(ToStatus(fmt.Errorf("node n1: key %q: %w", key, carrier)))
		if got := matchedSentinels(back); len(got) != 1 || got[0] != carrier {
			t.Errorf("%v quoting %q: matches %v, want only %v", carrier, key, got, carrier)
		}
		if !strings.Contains(back.Error(), key) {
			t.Errorf("the message lost its context: %q", back.Error())
		}
		// No sentinel at all.
		plain := ToStatus(fmt.Errorf("node n1: key %q: disk on fire", key))
		if back := FromStatus(plain); Typed(plain) || len(matchedSentinels(back)) != 0 {
			t.Errorf("a plain error quoting %q reads as %v (typed %v)", key, matchedSentinels(back), Typed(plain))
		}
		// A status without details: judged by its code only.
		old := status.Error(tc.code, "node n1: "+tc.err.Error())
		if back := FromStatus(old); back != old || Typed(old) {
			t.Errorf("a status without details naming %v was rewritten to %v (typed %v)", tc.err, back, Typed(old))
		}
	}
}

// TestForeignDetailsNameNoSentinel: an ErrorInfo of another domain, or a
// reason this version does not know, names no sentinel.
func TestForeignDetailsNameNoSentinel(t *testing.T) {
	for _, info := range []*errdetails.ErrorInfo{
		{Reason: "NOT_LEADER", Domain: "example.com"},
		{Reason: "SOMETHING_NEWER", Domain: Domain},
	} {
		st, err := status.New(codes.FailedPrecondition, "kvstore: not the leader").WithDetails(info)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Err(); Typed(err) || len(matchedSentinels(FromStatus(err))) != 0 {
			t.Errorf("%v: read as %v", info, matchedSentinels(FromStatus(err)))
		}
	}
}

// keyErrors answers a Get for key k with the error errs[k], as a node's
// interceptor sends it.
type keyErrors struct {
	kvpb.UnimplementedKVServer
	errs map[string]error
}

func (s *keyErrors) Get(_ context.Context, req *kvpb.GetRequest) (*kvpb.GetResponse, error) {
	return nil, ToStatus(s.errs[req.Key])
}

// TestEverySentinelOverGRPC sends each sentinel, wrapped with a message that
// quotes a key holding the text of every sentinel, through a gRPC server and
// client: it arrives matching exactly its own sentinels, with its message,
// and still does once wrapped again.
func TestEverySentinelOverGRPC(t *testing.T) {
	var all []string
	for _, tc := range table {
		all = append(all, tc.err.Error())
	}
	quoted := strings.Join(all, "|")
	errs := map[string]error{}
	want := map[string][]error{}
	for i, tc := range table {
		k := fmt.Sprintf("k%d", i)
		errs[k] = fmt.Errorf("node n1: key %q: %w", quoted, tc.err)
		want[k] = []error{tc.err}
	}
	errs["both"] = fmt.Errorf("node n1: key %q: %w: %w", quoted, kvstore.ErrOutcomeUnknown, kvstore.ErrNoQuorum)
	want["both"] = []error{kvstore.ErrNoQuorum, kvstore.ErrOutcomeUnknown}
	errs["none"] = fmt.Errorf("node n1: key %q: disk on fire", quoted)
	want["none"] = nil

	l := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	kvpb.RegisterKVServer(srv, &keyErrors{errs: errs})
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	cc, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return l.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	kv := kvpb.NewKVClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for k, sent := range errs {
		_, raw := kv.Get(ctx, &kvpb.GetRequest{Key: k})
		if raw == nil {
			t.Fatalf("%s: no error", k)
		}
		if want := status.Code(ToStatus(sent)); status.Code(raw) != want {
			t.Errorf("%s: arrived as %v, want %v", k, status.Code(raw), want)
		}
		if Typed(raw) != (want[k] != nil) {
			t.Errorf("%s: typed %v, want %v", k, Typed(raw), want[k] != nil)
		}
		back := fmt.Errorf("call: %w", FromStatus(raw))
		if got := matchedSentinels(back); fmt.Sprint(got) != fmt.Sprint(want[k]) {
			t.Errorf("%s: %v matches %v, want %v", k, back, got, want[k])
		}
		if !strings.Contains(back.Error(), sent.Error()) {
			t.Errorf("%s: message %q lost %q", k, back.Error(), sent.Error())
		}
	}
}

// TestMarshalStatusNeverReadsAsSuccess: an error whose text does not
// marshal (not UTF-8) still travels as an error, with its code.
func TestMarshalStatusNeverReadsAsSuccess(t *testing.T) {
	err := UnmarshalStatus(MarshalStatus(fmt.Errorf("%w: key \xff\xfe", kvstore.ErrBadRequest)))
	if err == nil || status.Code(err) != codes.InvalidArgument {
		t.Fatalf("round trip of a non-UTF-8 error: %v (code %v), want an InvalidArgument error", err, status.Code(err))
	}
	err = UnmarshalStatus(MarshalStatus(fmt.Errorf("%w: fine", kvstore.ErrNoQuorum)))
	if !errors.Is(FromStatus(err), kvstore.ErrNoQuorum) || !Typed(err) {
		t.Fatalf("round trip: %v, want ErrNoQuorum, typed", err)
	}
	if MarshalStatus(nil) != nil || UnmarshalStatus(nil) != nil {
		t.Fatal("nil did not stay nil")
	}
}

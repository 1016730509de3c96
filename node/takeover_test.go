package node

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/rpc"
	"github.com/kvstore/kvstore/rpc/kvpb"
	"github.com/kvstore/kvstore/store"
)

// snapshotPeer answers GetSnapshot with a fixed snapshot.
type snapshotPeer struct {
	kvpb.UnimplementedPeerServer
	snap *kvpb.Snapshot
}

func (p *snapshotPeer) GetSnapshot(context.Context, *kvpb.GetSnapshotRequest) (*kvpb.Snapshot, error) {
	return p.snap, nil
}

// TestTakeoverRefusesAMalformedSnapshot: a new leader adopts the state of
// the most up-to-date voter, and that state becomes every follower's; a
// snapshot that no history produces (a key listed twice, an item versioned
// beyond the snapshot's position) is refused with ErrBadRequest instead of
// restored. A well-formed one at the prepared position is taken.
func TestTakeoverRefusesAMalformedSnapshot(t *testing.T) {
	pos := func(e int64, s uint64) *kvpb.Position { return &kvpb.Position{Epoch: e, Seq: s} }
	for _, tc := range []struct {
		name string
		snap *kvpb.Snapshot
		want string // "" means accepted
	}{
		{"well formed", &kvpb.Snapshot{Applied: pos(2, 5), Items: []*kvpb.Item{{Key: "a", Value: "1", Version: pos(2, 4)}}}, ""},
		{"key twice", &kvpb.Snapshot{Applied: pos(2, 5), Items: []*kvpb.Item{{Key: "a", Value: "1", Version: pos(2, 3)}, {Key: "a", Value: "2", Version: pos(2, 4)}}}, `key "a" does not follow "a"`},
		{"item beyond the position", &kvpb.Snapshot{Applied: pos(2, 5), Items: []*kvpb.Item{{Key: "a", Value: "1", Version: pos(2, 9)}}}, "beyond the applied position"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			srv := grpc.NewServer()
			kvpb.RegisterPeerServer(srv, &snapshotPeer{snap: tc.snap})
			go func() { _ = srv.Serve(lis) }()
			defer srv.Stop()

			n := &Node{cfg: DefaultConfig(), pool: rpc.NewPool(nil, nil)}
			defer n.pool.Close()
			l := newLeader(n, 3, nil, t.Context(), nil)
			snap, err := (&takeover{leader: l}).pullSnapshot("", lis.Addr().String(), fromPos(pos(2, 5)))
			if tc.want == "" {
				if err != nil || snap.Len() != 1 {
					t.Fatalf("well-formed snapshot: %v, %v", err, snap)
				}
				return
			}
			if !errors.Is(err, kvstore.ErrBadRequest) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("pullSnapshot = %v; want ErrBadRequest naming %q", err, tc.want)
			}
		})
	}
}

// chunkPeer answers GetSnapshot from a store's view in chunks of max
// bytes, as a voter does, and counts the calls.
type chunkPeer struct {
	kvpb.UnimplementedPeerServer
	view  *store.View
	max   int
	calls atomic.Int64
}

func (p *chunkPeer) GetSnapshot(_ context.Context, req *kvpb.GetSnapshotRequest) (*kvpb.Snapshot, error) {
	p.calls.Add(1)
	items, reqs, last := chunk(p.view, req.After, int(req.RequestsFrom), p.max)
	return &kvpb.Snapshot{Applied: toPos(p.view.Applied()), Items: items, Requests: reqs, More: !last}, nil
}

// servePeer serves srv over real gRPC on loopback for the test.
func servePeer(t testing.TB, srv kvpb.PeerServer) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.MaxRecvMsgSize(rpc.MaxMsgSize), grpc.MaxSendMsgSize(rpc.MaxMsgSize))
	kvpb.RegisterPeerServer(g, srv)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	return lis.Addr().String()
}

// chunkedStore is a store of keys items (values of varied sizes, some
// deleted) and every request id of its writes.
func chunkedStore(t testing.TB, keys, valueBytes int) *store.Store {
	s := store.New(keys)
	for i := range keys {
		e := store.Entry{Version: store.Version{Epoch: 2, Seq: uint64(i + 1)}, Op: store.OpSet,
			Key: fmt.Sprintf("k%06d", i*7919%keys), Value: strings.Repeat("v", valueBytes/2+i%valueBytes), ReqID: fmt.Sprintf("c.r%d", i)}
		if i%11 == 0 {
			e.Op, e.Value = store.OpDelete, ""
		}
		if _, err := s.Apply(e); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// TestTakeoverPullsInChunks: a new leader pulls a voter's state of many
// chunks (items, then request ids across chunk boundaries) and gets
// exactly that state: each call, sent ahead before the chunk before it is
// checked and added, asks for what follows that chunk. (Its speed is
// BenchmarkTakeoverPull's.)
func TestTakeoverPullsInChunks(t *testing.T) {
	src := chunkedStore(t, 500, 40)
	peer := &chunkPeer{view: src.View(), max: 700}
	addr := servePeer(t, peer)
	n := &Node{cfg: DefaultConfig(), pool: rpc.NewPool(nil, nil)}
	defer n.pool.Close()
	l := newLeader(n, 3, nil, t.Context(), nil)
	got, err := (&takeover{leader: l}).pullSnapshot("", addr, src.View().Applied())
	if err != nil {
		t.Fatal(err)
	}
	if calls := peer.calls.Load(); calls < 20 {
		t.Fatalf("%d GetSnapshot calls: the state did not span many chunks", calls)
	}
	want := src.Snapshot()
	have := got.Snapshot()
	if have.Applied != want.Applied || !maps.Equal(have.Items, want.Items) || !slices.Equal(have.Requests, want.Requests) {
		t.Fatalf("pulled %d items, %d request ids at %s; want %d, %d at %s", len(have.Items), len(have.Requests), have.Applied, len(want.Items), len(want.Requests), want.Applied)
	}
	t.Logf("%d items and %d request ids in %d chunks", len(have.Items), len(have.Requests), peer.calls.Load())
}

// BenchmarkTakeoverPull is a new leader's pull of a voter's state of
// KVSTORE_PULL_KEYS keys (default 20,000) of 1 KiB over loopback gRPC, in
// chunks of DefaultSnapshotChunkBytes.
func BenchmarkTakeoverPull(b *testing.B) {
	keys := 20000
	if v, err := strconv.Atoi(os.Getenv("KVSTORE_PULL_KEYS")); err == nil {
		keys = v
	}
	src := chunkedStore(b, keys, 1024)
	peer := &chunkPeer{view: src.View(), max: DefaultSnapshotChunkBytes}
	addr := servePeer(b, peer)
	n := &Node{cfg: DefaultConfig(), pool: rpc.NewPool(nil, nil)}
	defer n.pool.Close()
	l := newLeader(n, 3, nil, b.Context(), nil)
	b.SetBytes(int64(keys) * 1024)
	for b.Loop() {
		if _, err := (&takeover{leader: l}).pullSnapshot("", addr, src.View().Applied()); err != nil {
			b.Fatal(err)
		}
	}
}

// TestChooseAdoption is the takeover's choice of whose state to adopt
// (steps 1 and 2), with no network: the most up-to-date voter among those
// that answered Prepare with their data, if they are a majority.
func TestChooseAdoption(t *testing.T) {
	ok := func(e int64, s uint64) *kvpb.PrepareResponse {
		return &kvpb.PrepareResponse{Ok: true, Applied: &kvpb.Position{Epoch: e, Seq: s}}
	}
	recovering := func() *kvpb.PrepareResponse { r := ok(9, 99); r.Recovering = true; return r }
	abc := []string{"a", "b", "c"}
	for _, tc := range []struct {
		name    string
		voters  []string
		answers map[string]*kvpb.PrepareResponse
		behind  string
		quorum  bool
		from    string
		at      store.Version
		why     string
	}{
		{"all at one position: self, nothing to pull", abc,
			map[string]*kvpb.PrepareResponse{"a": ok(2, 5), "b": ok(2, 5), "c": ok(2, 5)}, "", true, "a", store.Version{Epoch: 2, Seq: 5}, "this node's"},
		{"a later seq wins", abc,
			map[string]*kvpb.PrepareResponse{"a": ok(2, 5), "b": ok(2, 7)}, "", true, "b", store.Version{Epoch: 2, Seq: 7}, "b's state"},
		{"a later epoch wins over a longer history", abc,
			map[string]*kvpb.PrepareResponse{"a": ok(2, 50), "c": ok(3, 4)}, "", true, "c", store.Version{Epoch: 3, Seq: 4}, "c's state"},
		{"a tie between others goes to the lowest id", abc,
			map[string]*kvpb.PrepareResponse{"a": ok(1, 1), "c": ok(2, 5), "b": ok(2, 5)}, "", true, "b", store.Version{Epoch: 2, Seq: 5}, "b's state"},
		{"a tie with self goes to self", abc,
			map[string]*kvpb.PrepareResponse{"c": ok(2, 5), "a": ok(2, 5)}, "", true, "a", store.Version{Epoch: 2, Seq: 5}, "this node's"},
		{"a recovering voter counts for nothing, however far it claims", abc,
			map[string]*kvpb.PrepareResponse{"a": ok(2, 5), "b": recovering()}, "", false, "", store.Version{}, "1 of 3"},
		{"a non-voter counts for nothing", abc,
			map[string]*kvpb.PrepareResponse{"a": ok(2, 5), "x": ok(4, 1), "y": ok(4, 1)}, "", false, "", store.Version{}, "no majority"},
		{"a non-voter ahead is not adopted", abc,
			map[string]*kvpb.PrepareResponse{"a": ok(2, 5), "b": ok(2, 5), "x": ok(4, 1)}, "", true, "a", store.Version{Epoch: 2, Seq: 5}, "this node's"},
		{"a plain refusal is no answer", abc,
			map[string]*kvpb.PrepareResponse{"a": ok(2, 5), "b": {AcceptedEpoch: 3}, "c": ok(2, 6)}, "", true, "c", store.Version{Epoch: 2, Seq: 6}, "c's state"},
		{"a later promise ends the leadership", abc,
			map[string]*kvpb.PrepareResponse{"a": ok(2, 5), "b": ok(2, 5), "c": {AcceptedEpoch: 4}}, "c", false, "", store.Version{}, ""},
		{"another leadership of the epoch ends it", abc,
			map[string]*kvpb.PrepareResponse{"a": ok(2, 5), "c": {AcceptedEpoch: 3, OtherLeadership: true}, "b": {AcceptedEpoch: 5}}, "b", false, "", store.Version{}, ""},
		{"no voter record", nil,
			map[string]*kvpb.PrepareResponse{"a": ok(2, 5)}, "", false, "", store.Version{}, "no majority"},
		{"two of four is no majority", []string{"a", "b", "c", "d"},
			map[string]*kvpb.PrepareResponse{"a": ok(2, 5), "d": ok(2, 9)}, "", false, "", store.Version{}, "2 of 4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := chooseAdoption("a", 3, tc.voters, tc.answers)
			if a.behind != tc.behind || a.quorum != tc.quorum || a.from != tc.from || a.at != tc.at || !strings.Contains(a.why, tc.why) {
				t.Errorf("chooseAdoption = behind %q quorum %v from %q at %s (%s); want behind %q quorum %v from %q at %s (%q)",
					a.behind, a.quorum, a.from, a.at, a.why, tc.behind, tc.quorum, tc.from, tc.at, tc.why)
			}
		})
	}
}

// TestUnansweredTargets is step 4's rule with no network: which silent
// nodes make a new leader wait out the leases of older epochs.
func TestUnansweredTargets(t *testing.T) {
	targets := map[string]string{"a": "addr-a", "b": "addr-b", "c": "", "d": "addr-d", "e": ""}
	answers := map[string]*kvpb.PrepareResponse{
		"a": {Ok: true},
		"b": {Ok: false, AcceptedEpoch: 2}, // refused: no answer that counts
		"e": {Ok: true},                    // answered, though no member of the view
	}
	for _, tc := range []struct {
		skipGone bool
		want     string
	}{
		// A fresh view: a voter with no live session serves nothing.
		{true, "[b d]"},
		// No fresh view (or Faults.WaitForGoneVoters): every silent target.
		{false, "[b c d]"},
	} {
		if got := fmt.Sprint(unansweredTargets(targets, answers, tc.skipGone)); got != tc.want {
			t.Errorf("unansweredTargets(skipGone %v) = %s, want %s", tc.skipGone, got, tc.want)
		}
	}
	if got := unansweredTargets(targets, map[string]*kvpb.PrepareResponse{"a": {Ok: true}, "b": {Ok: true}, "d": {Ok: true}}, true); got != nil {
		t.Errorf("every member answered: %v, want none", got)
	}
}

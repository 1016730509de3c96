package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
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
			snap, err := (&takeover{leader: l}).pullSnapshot(lis.Addr().String(), fromPos(pos(2, 5)))
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

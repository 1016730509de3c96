package node

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"

	"google.golang.org/grpc"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/rpc"
	"github.com/kvstore/kvstore/rpc/kvpb"
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
		{"key twice", &kvpb.Snapshot{Applied: pos(2, 5), Items: []*kvpb.Item{{Key: "a", Value: "1", Version: pos(2, 3)}, {Key: "a", Value: "2", Version: pos(2, 4)}}}, `key "a" is listed twice`},
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
			l := &leader{n: n, epoch: 3, ctx: t.Context()}
			snap, err := l.pullSnapshot(lis.Addr().String(), fromPos(pos(2, 5)))
			if tc.want == "" {
				if err != nil || len(snap.Items) != 1 {
					t.Fatalf("well-formed snapshot: %v, %d items", err, len(snap.Items))
				}
				return
			}
			if !errors.Is(err, kvstore.ErrBadRequest) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("pullSnapshot = %v; want ErrBadRequest naming %q", err, tc.want)
			}
		})
	}
}

package node

import (
	"errors"
	"testing"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/rpc/kvpb"
)

// TestSameEpochFromAnotherLeadershipIsRefused: a coordinator restored from
// an older backup can hand the same epoch to two leaders. A node's promise
// names the leadership (leader id and its random number), durably: a
// Prepare, Append or GetSnapshot of the same epoch from another leadership
// is refused as stale, before and after a restart, and changes nothing; a
// higher epoch is promised as before.
func TestSameEpochFromAnotherLeadershipIsRefused(t *testing.T) {
	dir := t.TempDir()
	h := newHarness(t, dir)
	defer func() { h.close() }()
	pos := func(e int64, s uint64) *kvpb.Position { return &kvpb.Position{Epoch: e, Seq: s} }
	prep := func(epoch int64, id string, nonce uint64) *kvpb.PrepareResponse {
		t.Helper()
		r, err := h.srv.Prepare(h.ctx, &kvpb.PrepareRequest{Cluster: fuzzCluster, Epoch: epoch, LeaderId: id, Leadership: nonce})
		if err != nil {
			t.Fatalf("prepare(%d, %s): %v", epoch, id, err)
		}
		return r
	}
	if r := prep(7, "a", 1); !r.Ok {
		t.Fatalf("first prepare(7) refused: %+v", r)
	}
	a, err := h.srv.Append(h.ctx, &kvpb.AppendRequest{Cluster: fuzzCluster, Epoch: 7, LeaderId: "a", Leadership: 1, Prev: pos(0, 0),
		Entries: []*kvpb.Entry{{Epoch: 7, Seq: 1}, {Epoch: 7, Seq: 2, Op: kvpb.Op_OP_SET, Key: "k", Value: "a's"}}})
	if err != nil || !a.Ok {
		t.Fatalf("append of the promised leadership: %+v, %v", a, err)
	}
	before := h.state()

	checkRefused := func(when string) {
		t.Helper()
		if r := prep(7, "b", 2); r.Ok || !r.OtherLeadership || r.AcceptedEpoch != 7 {
			t.Fatalf("%s: prepare(7) of another leadership = %+v, want refused as another leadership's", when, r)
		}
		r, err := h.srv.Append(h.ctx, &kvpb.AppendRequest{Cluster: fuzzCluster, Epoch: 7, LeaderId: "b", Leadership: 2,
			Snapshot: &kvpb.Snapshot{Applied: pos(7, 1)}})
		if err != nil || r.Ok || !r.OtherLeadership {
			t.Fatalf("%s: append(7) of another leadership = %+v, %v; want refused as another leadership's", when, r, err)
		}
		if _, err := h.srv.GetSnapshot(h.ctx, &kvpb.GetSnapshotRequest{Cluster: fuzzCluster, Epoch: 7, LeaderId: "b", Leadership: 2}); !errors.Is(err, kvstore.ErrStaleEpoch) {
			t.Fatalf("%s: snapshot for another leadership of epoch 7 = %v, want ErrStaleEpoch", when, err)
		}
		// The same leader id with another number is another leadership too.
		if r := prep(7, "a", 3); r.Ok || !r.OtherLeadership {
			t.Fatalf("%s: prepare(7) of a's other leadership = %+v, want refused", when, r)
		}
		if after := h.state(); !sameSnap(after.snap, before.snap) || after.epoch != 7 {
			t.Fatalf("%s: the refusals changed the node: %+v", when, after)
		}
	}
	checkRefused("before a restart")
	h.close()
	h = newHarness(t, dir)
	checkRefused("after a restart")

	// The promised leadership goes on; a higher epoch is promised.
	if r := prep(7, "a", 1); !r.Ok {
		t.Fatalf("prepare(7) of the promised leadership after the restart: %+v", r)
	}
	if r := prep(8, "b", 2); !r.Ok || r.AcceptedEpoch != 8 {
		t.Fatalf("prepare(8) = %+v, want promised", r)
	}
}

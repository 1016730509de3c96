package node

import (
	"context"
	"testing"
	"time"

	"github.com/kvstore/kvstore/coord"
	"github.com/kvstore/kvstore/durable"
	"github.com/kvstore/kvstore/rpc/kvpb"
	"github.com/kvstore/kvstore/store"
)

// noCoord is a coordinator the test never reaches: New does not use it.
type noCoord struct{ coord.Coordinator }

// TestNewRestoresStoreAndPromiseFromDataDir: a node opened on a data
// directory starts from what it holds, the promised epoch included (a
// restarted node must keep refusing leaders older than one it promised).
func TestNewRestoresStoreAndPromiseFromDataDir(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, st, err := durable.Open(dir, durable.Options{})
	if err != nil || !st.Fresh {
		t.Fatalf("open a new data directory: fresh %v, %v", st.Fresh, err)
	}
	entries := []store.Entry{
		{Version: store.Version{Epoch: 3, Seq: 1}, Op: store.OpSet, Key: "a", Value: "1", ReqID: "r1"},
		{Version: store.Version{Epoch: 3, Seq: 2}, Op: store.OpDelete, Key: "b"},
	}
	if err := db.Append(entries).Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if err := db.Promise(7).Wait(ctx); err != nil {
		t.Fatal(err)
	}
	// A leader reconciled this state (as its snapshot or its takeover
	// would record): it is restored data.
	if err := db.Reconciled().Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	cfg := DefaultConfig()
	cfg.ID, cfg.Coordinator, cfg.DataDir = "n1", noCoord{}, dir
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close(ctx)
	if got := n.rep.epoch(); got != 7 {
		t.Errorf("accepted epoch %d after restart, want the promised 7", got)
	}
	if got := n.Applied(); got != (store.Version{Epoch: 3, Seq: 2}) {
		t.Errorf("applied %v after restart, want 3.2", got)
	}
	if v, found, _ := n.LocalItem("a"); !found || v != "1" {
		t.Errorf("a = %q (found %v) after restart, want 1", v, found)
	}
	if _, found, ver := n.LocalItem("b"); found || ver.Seq != 2 {
		t.Errorf("b found %v at %v after restart, want a tombstone at seq 2", found, ver)
	}
	if !n.rep.restored {
		t.Error("the node does not know it was restored: as a voter it would rejoin as recovering")
	}
}

// TestUnreconciledDataDirIsNotRestored: files no leader reconciled since
// they were created are not restored data, however they were left: empty
// (position 0) by a crash right after the first start created them, or
// holding entries and a promise the node took while it was recovering.
// Restarted, a voter with them is recovering again.
func TestUnreconciledDataDirIsNotRestored(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name    string
		entries []store.Entry
	}{
		{"empty store at position 0", nil},
		{"entries taken while recovering", []store.Entry{{Version: store.Version{Epoch: 3, Seq: 1}, Op: store.OpSet, Key: "a", Value: "1"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			db, _, err := durable.Open(dir, durable.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if len(tc.entries) > 0 {
				if err := db.Append(tc.entries).Wait(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if err := db.Promise(4).Wait(ctx); err != nil {
				t.Fatal(err)
			}
			if err := db.Crash(); err != nil {
				t.Fatal(err)
			}
			// Twice: the node's own start must not make the files look
			// restored to the next one.
			for i := 0; i < 2; i++ {
				cfg := DefaultConfig()
				cfg.ID, cfg.Coordinator, cfg.DataDir = "n1", noCoord{}, dir
				n, err := New(cfg)
				if err != nil {
					t.Fatal(err)
				}
				restored, unreconciled := n.rep.restored, n.rep.unreconciled
				n.Kill()
				if restored || !unreconciled {
					t.Fatalf("start %d: restored %v, unreconciled %v: files no leader reconciled were taken for restored data", i+1, restored, unreconciled)
				}
			}
		})
	}
}

// TestEntriesDoNotReconcileARecoveringNode: a recovering node that takes
// entries from its empty store (the leader's history starting at position
// 0) holds a prefix that may stop short of entries it acknowledged before it
// lost its store and the leader counted as committed. It stays recovering,
// keeps asking for a snapshot (Reconcile), and keeps the durable mark; the
// leader's snapshot reconciles it, in the Restore record itself.
func TestEntriesDoNotReconcileARecoveringNode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.ID, cfg.Coordinator, cfg.DataDir = "n1", noCoord{}, dir
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n.rep.setRecovering() // as Start decides for a voter
	appendOK := func(req *kvpb.AppendRequest) *kvpb.AppendResponse {
		t.Helper()
		req.Cluster, req.Epoch, req.LeaderId = cfg.Cluster, 5, "n2"
		if err := validateAppend(req); err != nil {
			t.Fatal(err)
		}
		resp, p, err := (&peerServer{n: n}).append(context.Background(), req)
		if err != nil || !resp.Ok {
			t.Fatalf("append: %v %v", resp, err)
		}
		if err := n.waitDurable(ctx, p); err != nil {
			t.Fatal(err)
		}
		return resp
	}
	resp := appendOK(&kvpb.AppendRequest{Prev: &kvpb.Position{}, Entries: []*kvpb.Entry{
		{Epoch: 5, Seq: 1, Op: kvpb.Op_OP_NOOP},
		{Epoch: 5, Seq: 2, Op: kvpb.Op_OP_SET, Key: "a", Value: "1"},
	}})
	if !resp.Reconcile || !n.Recovering() {
		t.Fatalf("after entries from position 0: reconcile %v, recovering %v; want both (a prefix is not a reconcile)", resp.Reconcile, n.Recovering())
	}
	resp = appendOK(&kvpb.AppendRequest{Snapshot: &kvpb.Snapshot{
		Applied: &kvpb.Position{Epoch: 5, Seq: 3},
		Items:   []*kvpb.Item{{Key: "a", Value: "1", Version: &kvpb.Position{Epoch: 5, Seq: 2}}, {Key: "b", Value: "2", Version: &kvpb.Position{Epoch: 5, Seq: 3}}},
	}})
	if resp.Reconcile || n.Recovering() {
		t.Fatalf("after the leader's snapshot: reconcile %v, recovering %v; want neither", resp.Reconcile, n.Recovering())
	}
	n.Kill()
	// The snapshot's record cleared the durable mark: restarted, the node
	// has restored data.
	n, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Kill()
	if !n.rep.restored || n.rep.unreconciled {
		t.Fatalf("restart after the snapshot: restored %v, unreconciled %v", n.rep.restored, n.rep.unreconciled)
	}
}

package node

import (
	"context"
	"testing"
	"time"

	"github.com/kvstore/kvstore/coord"
	"github.com/kvstore/kvstore/durable"
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
	if got := n.acceptedEpochA.Load(); got != 7 {
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
	if !n.restored {
		t.Error("the node does not know it was restored: as a voter it would rejoin as recovering")
	}
}

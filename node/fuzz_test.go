package node

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/durable"
	"github.com/kvstore/kvstore/internal/fuzzcorpus"
	"github.com/kvstore/kvstore/rpc/kvpb"
	"github.com/kvstore/kvstore/store"
)

// Fuzzing of the node-to-node service (docs/testing.md, Fuzzing).
//
// FuzzPeerDecode: the wire bytes of any message of kvstore_peer.proto decode
// without a panic, and what decodes encodes and decodes again to the same
// message.
//
// FuzzPeer and FuzzPeerDurable: a sequence of messages, decoded from their
// wire bytes, is handed to the real handlers (peerServer) of a node built
// with New (no coordinator session: Fetch and Write find no leader). After
// every message the store must satisfy its invariants (store.Check), the
// accepted epoch and the applied position must not have gone back, and the
// message must have been applied exactly as the protocol says (Append) or
// refused with an error that changed nothing but the promised epoch.
// FuzzPeerDurable runs the same on a node with a data directory and, at the
// end, reopens the directory: it must hold what the node held in memory.

// fuzzCluster is the cluster name of the fuzzed node.
const fuzzCluster = "fuzz"

// Message kinds of a fuzz step.
const (
	stepPrepare byte = iota
	stepAppend
	stepGetSnapshot
	stepFetch
	stepWrite
	stepKinds
)

// fuzzMaxRequests is the fuzzed node's request table size: small, so that
// eviction happens.
const fuzzMaxRequests = 8

// A fuzz input is a sequence of steps: kind (1 byte, modulo stepKinds) |
// length (uvarint) | the message's wire bytes.
type step struct {
	kind byte
	msg  []byte
}

func parseSteps(data []byte) []step {
	var out []step
	for len(data) > 0 && len(out) < 32 {
		k := data[0] % stepKinds
		l, n := binary.Uvarint(data[1:])
		if n <= 0 {
			break
		}
		data = data[1+n:]
		l = min(l, uint64(len(data)))
		out = append(out, step{kind: k, msg: data[:l]})
		data = data[l:]
	}
	return out
}

func encodeSteps(msgs ...proto.Message) []byte {
	var b []byte
	for _, m := range msgs {
		var k byte
		switch m.(type) {
		case *kvpb.PrepareRequest:
			k = stepPrepare
		case *kvpb.AppendRequest:
			k = stepAppend
		case *kvpb.GetSnapshotRequest:
			k = stepGetSnapshot
		case *kvpb.FetchRequest:
			k = stepFetch
		case *kvpb.WriteRequest:
			k = stepWrite
		default:
			panic(fmt.Sprintf("no step kind for %T", m))
		}
		w, err := proto.Marshal(m)
		if err != nil {
			panic(err)
		}
		b = append(b, k)
		b = binary.AppendUvarint(b, uint64(len(w)))
		b = append(b, w...)
	}
	return b
}

// peerMessages are fresh values of every message of the Peer service.
func peerMessages() []proto.Message {
	return []proto.Message{
		&kvpb.PrepareRequest{}, &kvpb.PrepareResponse{},
		&kvpb.AppendRequest{}, &kvpb.AppendResponse{},
		&kvpb.GetSnapshotRequest{}, &kvpb.Snapshot{},
		&kvpb.FetchRequest{}, &kvpb.FetchResponse{},
		&kvpb.WriteRequest{}, &kvpb.WriteResponse{},
		&kvpb.Entry{}, &kvpb.Item{}, &kvpb.Request{}, &kvpb.Position{},
	}
}

// The seeds of the fuzz targets are in testdata/fuzz/<FuzzName>/
// (TestFuzzCorpus makes them from peerSeeds).

func FuzzPeerDecode(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, m := range peerMessages() {
			if err := proto.Unmarshal(data, m); err != nil {
				continue
			}
			w, err := proto.Marshal(m)
			if err != nil {
				t.Fatalf("%T decoded from %x does not encode: %v", m, data, err)
			}
			again := m.ProtoReflect().New().Interface()
			if err := proto.Unmarshal(w, again); err != nil {
				t.Fatalf("%T re-encoded as %x does not decode: %v", m, w, err)
			}
			if !proto.Equal(m, again) {
				t.Fatalf("%T changed in a round trip:\n%v\n%v", m, m, again)
			}
		}
	})
}

func FuzzPeer(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		h := newHarness(t, "")
		defer h.close()
		for _, s := range parseSteps(data) {
			h.step(s)
		}
	})
}

func FuzzPeerDurable(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		h := newHarness(t, t.TempDir())
		defer h.close()
		for _, s := range parseSteps(data) {
			h.step(s)
		}
		h.reopen()
	})
}

// harness is one fuzzed node and what the checks remember between steps.
type harness struct {
	t   *testing.T
	n   *Node
	srv *peerServer
	dir string
	ctx context.Context

	closed bool
}

func newHarness(t *testing.T, dir string) *harness {
	cfg := DefaultConfig()
	cfg.ID, cfg.Cluster, cfg.Coordinator = "f1", fuzzCluster, noCoord{}
	cfg.MaxRequests = fuzzMaxRequests
	if dir != "" {
		cfg.DataDir, cfg.NoFsync = dir, true
	}
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return &harness{t: t, n: n, srv: &peerServer{n: n}, dir: dir, ctx: ctx}
}

func (h *harness) close() {
	if !h.closed {
		h.closed = true
		_ = h.n.Close(h.ctx)
	}
}

// state is what a node holds: its store and promised epoch.
type state struct {
	snap  store.Snapshot
	epoch int64
}

func (h *harness) state() state {
	r := h.n.rep
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.store.Check(); err != nil {
		h.t.Fatalf("the store is inconsistent: %v", err)
	}
	return state{snap: r.store.Snapshot(), epoch: r.promised}
}

// expected applies entries to a copy of snap as a reference store would.
func expected(snap store.Snapshot, f func(*store.Store) error) (store.Snapshot, error) {
	s := store.New(fuzzMaxRequests)
	s.Restore(snap)
	err := f(s)
	return s.Snapshot(), err
}

func sameSnap(a, b store.Snapshot) bool {
	return a.Applied == b.Applied && maps.Equal(a.Items, b.Items) && slices.Equal(a.Requests, b.Requests)
}

// refusal reports whether err is one a handler may answer bad input with.
func refusal(err error) bool {
	return errors.Is(err, kvstore.ErrBadRequest) || errors.Is(err, kvstore.ErrStaleEpoch) || errors.Is(err, kvstore.ErrNotLeader)
}

func (h *harness) step(s step) {
	t := h.t
	var m proto.Message
	switch s.kind {
	case stepPrepare:
		m = &kvpb.PrepareRequest{}
	case stepAppend:
		m = &kvpb.AppendRequest{}
	case stepGetSnapshot:
		m = &kvpb.GetSnapshotRequest{}
	case stepFetch:
		m = &kvpb.FetchRequest{}
	default:
		m = &kvpb.WriteRequest{}
	}
	if err := proto.Unmarshal(s.msg, m); err != nil {
		return // not a message: gRPC refuses it before any handler
	}
	before := h.state()
	var err error
	switch req := m.(type) {
	case *kvpb.PrepareRequest:
		var resp *kvpb.PrepareResponse
		resp, err = h.srv.Prepare(h.ctx, req)
		if err == nil {
			after := h.state()
			h.unchanged("prepare", before.snap, after.snap)
			if resp.Ok != (req.Epoch >= before.epoch) || resp.AcceptedEpoch != after.epoch || fromPos(resp.Applied) != after.snap.Applied && resp.Ok {
				t.Fatalf("prepare(%d) with %d promised: answered %v", req.Epoch, before.epoch, resp)
			}
		}
	case *kvpb.AppendRequest:
		var resp *kvpb.AppendResponse
		resp, err = h.srv.Append(h.ctx, req)
		if err == nil {
			h.checkAppend(req, resp, before)
		}
	case *kvpb.GetSnapshotRequest:
		var snap *kvpb.Snapshot
		snap, err = h.srv.GetSnapshot(h.ctx, req)
		if err == nil {
			after := h.state()
			h.unchanged("snapshot", before.snap, after.snap)
			if got := fromSnapshot(snap); !sameSnap(got, after.snap) {
				t.Fatalf("GetSnapshot answered %v, the store holds %v", got, after.snap)
			}
			// What a node hands out, every node must accept.
			if verr := validateSnapshot(snap, req.Epoch); verr != nil {
				t.Fatalf("the node's own snapshot is refused: %v", verr)
			}
		}
	case *kvpb.FetchRequest:
		_, err = h.srv.Fetch(h.ctx, req)
		if err == nil {
			t.Fatalf("fetch answered by a node that does not lead")
		}
	case *kvpb.WriteRequest:
		_, err = h.srv.Write(h.ctx, req)
		if err == nil {
			t.Fatalf("write answered by a node that does not lead")
		}
	}
	after := h.state()
	if after.epoch < before.epoch {
		t.Fatalf("%T: promised epoch went back from %d to %d", m, before.epoch, after.epoch)
	}
	if after.snap.Applied.Less(before.snap.Applied) {
		t.Fatalf("%T: applied position went back from %s to %s", m, before.snap.Applied, after.snap.Applied)
	}
	if err != nil {
		if !refusal(err) {
			t.Fatalf("%T %v: refused with %v, which names no bad request, stale epoch or leader", m, m, err)
		}
		h.unchanged(fmt.Sprintf("%T refused with %v", m, err), before.snap, after.snap)
	}
}

func (h *harness) unchanged(what string, before, after store.Snapshot) {
	h.t.Helper()
	if !sameSnap(before, after) {
		h.t.Fatalf("%s changed the store:\nbefore %v\nafter  %v", what, before, after)
	}
}

// checkAppend checks an answered Append against the protocol.
func (h *harness) checkAppend(req *kvpb.AppendRequest, resp *kvpb.AppendResponse, before state) {
	t := h.t
	after := h.state()
	if resp.AcceptedEpoch != after.epoch || fromPos(resp.Applied) != after.snap.Applied {
		t.Fatalf("append answered %v, the node promised %d at %s", resp, after.epoch, after.snap.Applied)
	}
	switch {
	case req.Epoch < before.epoch:
		if resp.Ok {
			t.Fatalf("append of epoch %d accepted after a promise of %d", req.Epoch, before.epoch)
		}
		h.unchanged("a stale append", before.snap, after.snap)
	case req.Snapshot != nil:
		if !resp.Ok {
			t.Fatalf("snapshot refused with %v", resp)
		}
		want := fromSnapshot(req.Snapshot)
		if want.Applied.Less(before.snap.Applied) {
			want = before.snap // an older snapshot of this epoch: ignored
		} else {
			want, _ = expected(want, func(*store.Store) error { return nil })
		}
		if !sameSnap(want, after.snap) {
			t.Fatalf("snapshot at %s applied as\n%v\nwant\n%v", fromPos(req.Snapshot.Applied), after.snap, want)
		}
	case fromPos(req.Prev) != before.snap.Applied:
		if resp.Ok {
			t.Fatalf("append after %s accepted at %s", fromPos(req.Prev), before.snap.Applied)
		}
		h.unchanged("an append that does not follow", before.snap, after.snap)
	default:
		if !resp.Ok {
			t.Fatalf("append of %d entries after %s refused with %v", len(req.Entries), fromPos(req.Prev), resp)
		}
		want, err := expected(before.snap, func(s *store.Store) error {
			for _, e := range req.Entries {
				if _, err := s.Apply(fromEntry(e)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("append accepted entries a store refuses: %v", err)
		}
		if !sameSnap(want, after.snap) {
			t.Fatalf("entries applied as\n%v\nwant\n%v", after.snap, want)
		}
	}
}

// reopen closes the node and opens its data directory: it must hold what
// the node held.
func (h *harness) reopen() {
	t := h.t
	want := h.state()
	h.close()
	db, st, err := durable.Open(h.dir, durable.Options{MaxRequests: fuzzMaxRequests, NoSync: true})
	if err != nil {
		t.Fatalf("reopen the node's data directory: %v", err)
	}
	defer db.Close()
	if st.AcceptedEpoch != want.epoch {
		t.Errorf("data directory: promised epoch %d, the node had %d", st.AcceptedEpoch, want.epoch)
	}
	if !sameSnap(st.Snapshot, want.snap) && !(st.Fresh && reflect.DeepEqual(want.snap, store.New(1).Snapshot())) {
		t.Errorf("data directory holds\n%v\nthe node held\n%v", st.Snapshot, want.snap)
	}
}

// peerSeeds are message sequences a real leader sends, for the seed corpus.
func peerSeeds() [][]byte {
	pos := func(e int64, s uint64) *kvpb.Position { return &kvpb.Position{Epoch: e, Seq: s} }
	set := func(e int64, s uint64, k, v, id string) *kvpb.Entry {
		return &kvpb.Entry{Epoch: e, Seq: s, Op: kvpb.Op_OP_SET, Key: k, Value: v, ReqId: id}
	}
	del := func(e int64, s uint64, k, id string) *kvpb.Entry {
		return &kvpb.Entry{Epoch: e, Seq: s, Op: kvpb.Op_OP_DELETE, Key: k, ReqId: id}
	}
	noop := func(e int64, s uint64) *kvpb.Entry { return &kvpb.Entry{Epoch: e, Seq: s} }
	app := func(e int64, prev *kvpb.Position, es ...*kvpb.Entry) *kvpb.AppendRequest {
		return &kvpb.AppendRequest{Cluster: fuzzCluster, Epoch: e, LeaderId: "n0", Prev: prev, Entries: es}
	}
	snap := &kvpb.Snapshot{
		Applied: pos(5, 9),
		Items: []*kvpb.Item{
			{Key: "a", Value: "1", Version: pos(3, 4)},
			{Key: "b", Deleted: true, Version: pos(5, 8)},
			{Key: "c", Value: "", Version: pos(4, 6)},
		},
		Requests: []*kvpb.Request{{Id: "n1.x.1", Version: pos(3, 4)}, {Id: "c.r", Version: pos(5, 8)}},
	}
	return [][]byte{
		// A takeover: prepare, the no-op, writes, a heartbeat.
		encodeSteps(
			&kvpb.PrepareRequest{Cluster: fuzzCluster, Epoch: 3, LeaderId: "n0"},
			app(3, pos(0, 0), noop(3, 1)),
			app(3, pos(3, 1), set(3, 2, "k", "v", "n0.a.1"), set(3, 3, "k2", "v2", "n1.b.1"), del(3, 4, "k", "c.x")),
			app(3, pos(3, 4)),
			app(3, pos(3, 4), set(3, 5, "k", "again", "n0.a.1")), // a retried request id
		),
		// A new leader replaces the state with a snapshot, then appends.
		encodeSteps(
			app(2, pos(0, 0), noop(2, 1), set(2, 2, "old", "x", "")),
			&kvpb.PrepareRequest{Cluster: fuzzCluster, Epoch: 5, LeaderId: "n2"},
			&kvpb.AppendRequest{Cluster: fuzzCluster, Epoch: 5, LeaderId: "n2", Snapshot: snap},
			app(5, pos(5, 9), set(5, 10, "a", "2", "c.s")),
			&kvpb.GetSnapshotRequest{Cluster: fuzzCluster, Epoch: 6},
			app(5, pos(5, 10), set(5, 11, "a", "3", "")), // stale now
		),
		// Reads and writes forwarded to a node that does not lead.
		encodeSteps(
			&kvpb.FetchRequest{Cluster: fuzzCluster, Key: "k", FromId: "n1"},
			&kvpb.WriteRequest{Cluster: fuzzCluster, Op: kvpb.Op_OP_SET, Key: "k", Value: "v", ReqId: "n1.a.1", FromId: "n1"},
			&kvpb.WriteRequest{Cluster: fuzzCluster, Op: kvpb.Op_OP_DELETE, Key: "k", ReqId: "n1.a.2", FromId: "n1"},
		),
		// Bad input: entries out of order, an unknown op, an empty key,
		// a message for another cluster.
		encodeSteps(
			app(4, pos(0, 0), noop(4, 1), set(4, 3, "k", "v", "")),
			app(4, pos(0, 0), &kvpb.Entry{Epoch: 4, Seq: 1, Op: 7, Key: "k"}),
			app(4, pos(0, 0), noop(4, 1), set(4, 2, "", "v", "")),
			&kvpb.PrepareRequest{Cluster: "other", Epoch: 9},
		),
	}
}

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the fuzz seed corpora in testdata/fuzz/")

// TestFuzzCorpus keeps testdata/fuzz/ in step with peerSeeds
// (-update-corpus rewrites it).
func TestFuzzCorpus(t *testing.T) {
	var steps, msgs []fuzzcorpus.Seed
	for i, s := range peerSeeds() {
		steps = append(steps, fuzzcorpus.Seed{Name: fmt.Sprint(i + 1), Values: []any{s}})
		for j, st := range parseSteps(s) {
			msgs = append(msgs, fuzzcorpus.Seed{Name: fmt.Sprintf("%d-%02d", i+1, j+1), Values: []any{st.msg}})
		}
	}
	fuzzcorpus.Sync(t, "FuzzPeer", *updateCorpus, steps)
	fuzzcorpus.Sync(t, "FuzzPeerDurable", *updateCorpus, steps)
	fuzzcorpus.Sync(t, "FuzzPeerDecode", *updateCorpus, msgs)
}

// TestPeerSeedsAreAccepted checks the seeds themselves: the first two are
// what a real leader sends, so no message of theirs may be refused.
func TestPeerSeedsAreAccepted(t *testing.T) {
	for i, s := range peerSeeds()[:2] {
		h := newHarness(t, "")
		for _, st := range parseSteps(s) {
			m := &kvpb.AppendRequest{}
			if st.kind != stepAppend || proto.Unmarshal(st.msg, m) != nil {
				continue
			}
			resp, err := h.srv.Append(h.ctx, m)
			if err != nil || (!resp.Ok && m.Epoch >= h.n.rep.epoch()) {
				t.Errorf("seed %d: append %v: %v, %v", i, m, resp, err)
			}
		}
		h.close()
	}
	if !strings.Contains(string(peerSeeds()[3]), "other") {
		t.Fatal("the bad-input seed lost its message for another cluster")
	}
}

package node

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/durable"
	"github.com/kvstore/kvstore/store"
)

// eventLog records a replica's events, in order, as text.
type eventLog struct{ got []string }

func (e *eventLog) promised(epoch int64) { e.got = append(e.got, fmt.Sprintf("promised %d", epoch)) }
func (e *eventLog) applied(en store.Entry) {
	e.got = append(e.got, fmt.Sprintf("applied %s %s", en.Version, en.Key))
}
func (e *eventLog) restored() { e.got = append(e.got, "restored") }

// testReplica is a replica with a data directory (when dir is not empty)
// and an event log.
func testReplica(t *testing.T, dir string) (*replica, *eventLog) {
	t.Helper()
	ev := &eventLog{}
	r := newReplica(0, ev)
	if dir != "" {
		db, st, err := durable.Open(dir, durable.Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = db.Close() })
		r.open(db, st)
	}
	return r, ev
}

func waitSubmitted(t *testing.T, p *durable.Pending) {
	t.Helper()
	if p == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Wait(ctx); err != nil {
		t.Fatal(err)
	}
}

func pos(epoch int64, seq uint64) store.Version { return store.Version{Epoch: epoch, Seq: seq} }

func setEntry(ver store.Version, key, value, reqID string) store.Entry {
	return store.Entry{Version: ver, Op: store.OpSet, Key: key, Value: value, ReqID: reqID}
}

// TestReplicaPromise is the table of the promise rules every leader's
// message passes (prepare here): a lower epoch is refused, the promised
// epoch of another leadership is refused as other, a higher epoch is
// promised (an event, a submission), and a promise that named no
// leadership records the first one that comes.
func TestReplicaPromise(t *testing.T) {
	a, b := leadership{"n1", 11}, leadership{"n2", 22}
	for _, tc := range []struct {
		name       string
		from       int64      // promised before
		fromLd     leadership // to
		epoch      int64
		ld         leadership
		refused    bool
		other      bool
		promised   int64
		to         leadership
		events     []string
		submission bool
	}{
		{name: "higher", from: 3, fromLd: a, epoch: 4, ld: b, promised: 4, to: b, events: []string{"promised 4"}, submission: true},
		{name: "lower", from: 3, fromLd: a, epoch: 2, ld: b, refused: true, promised: 3, to: a},
		{name: "same, same leadership", from: 3, fromLd: a, epoch: 3, ld: a, promised: 3, to: a},
		{name: "same, other leadership", from: 3, fromLd: a, epoch: 3, ld: b, refused: true, other: true, promised: 3, to: a},
		{name: "same, first leadership named", from: 3, epoch: 3, ld: b, promised: 3, to: b, submission: true},
		{name: "same, no leadership named", from: 3, fromLd: a, epoch: 3, promised: 3, to: a},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, ev := testReplica(t, t.TempDir())
			r.mu.Lock()
			r.promised, r.ld = tc.from, tc.fromLd
			r.promisedA.Store(tc.from)
			r.mu.Unlock()
			st, p := r.prepare(tc.epoch, tc.ld)
			if st.refused != tc.refused || st.other != tc.other || st.promised != tc.promised || st.to != tc.to {
				t.Errorf("prepare(%d, %v) = refused %v other %v promised %d to %v; want %v %v %d %v",
					tc.epoch, tc.ld, st.refused, st.other, st.promised, st.to, tc.refused, tc.other, tc.promised, tc.to)
			}
			if r.epoch() != tc.promised {
				t.Errorf("epoch() = %d, want %d", r.epoch(), tc.promised)
			}
			if !reflect.DeepEqual(ev.got, tc.events) {
				t.Errorf("events %q, want %q", ev.got, tc.events)
			}
			if (p != nil) != tc.submission {
				t.Errorf("submission %v, want %v", p != nil, tc.submission)
			}
			waitSubmitted(t, p)
		})
	}
}

// TestReplicaAppendEntries: entries that follow the position are applied
// (an event for each), entries that do not are answered not ok with the
// position (the leader backfills) but the promise still holds, and a
// recovering replica stays recovering (a prefix is no reconcile).
func TestReplicaAppendEntries(t *testing.T) {
	ld := leadership{"n1", 1}
	r, ev := testReplica(t, "")
	r.setRecovering()
	st, _, err := r.appendAt(5, ld, pos(0, 0), []store.Entry{
		{Version: pos(5, 1), Op: store.OpNoop},
		setEntry(pos(5, 2), "a", "1", "r1"),
	}, false)
	if err != nil || !st.ok || st.applied != pos(5, 2) || !st.reconcile {
		t.Fatalf("append from 0.0: ok %v applied %s reconcile %v, %v; want ok at 5.2, reconcile", st.ok, st.applied, st.reconcile, err)
	}
	want := []string{"promised 5", "applied 5.1 ", "applied 5.2 a"}
	if !reflect.DeepEqual(ev.got, want) {
		t.Errorf("events %q, want %q", ev.got, want)
	}
	st, _, err = r.appendAt(5, ld, pos(5, 7), []store.Entry{setEntry(pos(5, 8), "b", "2", "")}, false)
	if err != nil || st.ok || st.refused || st.applied != pos(5, 2) {
		t.Errorf("append after a gap: ok %v refused %v applied %s, %v; want not ok at 5.2", st.ok, st.refused, st.applied, err)
	}
	st, _, err = r.appendAt(6, leadership{"n2", 2}, pos(5, 7), nil, false)
	if err != nil || st.ok || st.promised != 6 || r.epoch() != 6 {
		t.Errorf("a later leader's Append after a gap: ok %v promised %d, %v; want not ok, the promise made", st.ok, st.promised, err)
	}
	st, _, err = r.appendAt(5, ld, pos(5, 2), []store.Entry{setEntry(pos(5, 3), "c", "3", "")}, false)
	if err != nil || !st.refused || st.applied != pos(5, 2) {
		t.Errorf("a stale leader's Append: refused %v applied %s, %v; want refused at 5.2", st.refused, st.applied, err)
	}
	// An entry the store refuses (validateAppend would have caught it):
	// the ones before it stay applied.
	st, _, err = r.appendAt(6, leadership{"n2", 2}, pos(5, 2), []store.Entry{
		{Version: pos(6, 3), Op: store.OpNoop},
		setEntry(pos(6, 4), "", "x", ""),
	}, false)
	if !errors.Is(err, kvstore.ErrBadRequest) || r.applied() != pos(6, 3) {
		t.Errorf("a bad entry: %v at %s; want ErrBadRequest at 6.3", err, r.applied())
	}
}

// TestReplicaInstallSnapshot: a snapshot ahead of the position replaces
// the state and reconciles the replica; one behind it is a late copy in
// the same epoch (nothing changes) and refused from a later epoch.
func TestReplicaInstallSnapshot(t *testing.T) {
	ld := leadership{"n1", 1}
	snap := store.Snapshot{Applied: pos(5, 3), Items: map[string]store.Item{"a": {Value: "1", Version: pos(5, 2)}}}
	r, ev := testReplica(t, t.TempDir())
	r.setRecovering()
	st, p, err := r.installSnapshot(5, ld, snap)
	if err != nil || !st.ok || st.applied != pos(5, 3) || st.reconcile || r.isRecovering() {
		t.Fatalf("install: ok %v applied %s reconcile %v recovering %v, %v; want ok at 5.3, reconciled", st.ok, st.applied, st.reconcile, r.isRecovering(), err)
	}
	if p == nil {
		t.Error("install with a data directory submitted nothing")
	}
	waitSubmitted(t, p)
	if want := []string{"promised 5", "restored"}; !reflect.DeepEqual(ev.got, want) {
		t.Errorf("events %q, want %q", ev.got, want)
	}
	if _, _, err := r.appendAt(5, ld, pos(5, 3), []store.Entry{setEntry(pos(5, 4), "b", "2", "")}, false); err != nil {
		t.Fatal(err)
	}
	st, _, err = r.installSnapshot(5, ld, snap)
	if err != nil || !st.ok || st.applied != pos(5, 4) {
		t.Errorf("a late copy: ok %v applied %s, %v; want ok, unchanged at 5.4", st.ok, st.applied, err)
	}
	st, _, err = r.installSnapshot(6, leadership{"n2", 2}, snap)
	if !errors.Is(err, kvstore.ErrBadRequest) || r.applied() != pos(5, 4) {
		t.Errorf("a later epoch's snapshot behind the position: %v at %s; want ErrBadRequest, unchanged", err, r.applied())
	}
}

// TestATakeoverChangesNothingAfterALaterPromise: a takeover (epoch 5,
// leadership b) pulls a voter's state for a while; meanwhile this node
// promises a later leader (epoch 6, c) and takes its no-op and a write,
// which c counts toward their commit. The takeover's later steps, which
// its ended context no longer stops once past their look at it, change
// nothing: restoring the pulled state would drop c's write from a node
// that acknowledged it (found by a review of takeover.go), and opening
// epoch 5 after epoch 6's entries used to panic.
func TestATakeoverChangesNothingAfterALaterPromise(t *testing.T) {
	r, _ := testReplica(t, t.TempDir())
	b, c := leadership{"n2", 2}, leadership{"n3", 3}
	if st, _ := r.prepare(5, b); st.refused {
		t.Fatal("prepare(5) refused")
	}
	if st, _, err := r.appendAt(6, c, pos(0, 0), []store.Entry{{Version: pos(6, 1), Op: store.OpNoop}, setEntry(pos(6, 2), "k", "w", "")}, false); err != nil || !st.ok {
		t.Fatalf("the later leader's Append: ok %v, %v", st.ok, err)
	}
	pulled := store.New(0)
	for _, e := range []store.Entry{{Version: pos(4, 1), Op: store.OpNoop}, setEntry(pos(4, 2), "k", "old", "")} {
		if _, err := pulled.Apply(e); err != nil {
			t.Fatal(err)
		}
	}
	unchanged := func(step string, err error) {
		t.Helper()
		if !errors.Is(err, kvstore.ErrNotLeader) {
			t.Errorf("%s after a promise of epoch 6: %v, want ErrNotLeader", step, err)
		}
		if it, _ := r.get("k"); r.applied() != pos(6, 2) || it.Value != "w" {
			t.Fatalf("after %s: at %s, k = %q; want 6.2 and the later leader's write", step, r.applied(), it.Value)
		}
	}
	_, err := r.restore(5, b, pulled.View())
	unchanged("restore", err)
	_, err = r.adopted(5, b)
	unchanged("adopted", err)
	_, _, _, err = r.openEpoch(5, b)
	unchanged("openEpoch", err)
}

// TestReplicaLead: the leader applies its writes only while the replica
// is its own (tenure), a repeated request id is answered with its first
// version, and every change survives a restart from the data directory.
func TestReplicaLead(t *testing.T) {
	dir := t.TempDir()
	ld := leadership{"n1", 1}
	r, ev := testReplica(t, dir)
	if _, p := r.prepare(4, ld); p == nil {
		t.Fatal("a promise with a data directory submitted nothing")
	}
	base, noop, p, err := r.openEpoch(4, ld)
	if err != nil || base != pos(0, 0) || noop.Version != pos(4, 1) || p == nil {
		t.Fatalf("openEpoch: base %s noop %s submission %v, %v", base, noop.Version, p != nil, err)
	}
	own := tenure{epoch: 4, ld: ld, started: true, last: pos(4, 1)}
	res, err := r.lead(own, setEntry(pos(4, 2), "k", "1", "r1"))
	if err != nil || res.dup || res.ver != pos(4, 2) || res.p == nil || res.had {
		t.Fatalf("lead: %+v, %v; want 4.2 applied, a submission, no item replaced", res, err)
	}
	own.last = pos(4, 2)
	res, err = r.lead(own, setEntry(pos(4, 3), "k", "2", "r1"))
	if err != nil || !res.dup || res.ver != pos(4, 2) || res.p != nil || r.applied() != pos(4, 2) {
		t.Errorf("a retried request id: %+v, %v at %s; want dup at 4.2, nothing applied", res, err, r.applied())
	}
	for _, bad := range []tenure{
		{epoch: 3, ld: ld, started: true, last: pos(4, 2)},                  // an older epoch
		{epoch: 4, ld: leadership{"n2", 2}, started: true, last: pos(4, 2)}, // another leadership
		{epoch: 4, ld: ld, started: true, last: pos(4, 1)},                  // the store moved
	} {
		if _, err := r.lead(bad, setEntry(pos(4, 3), "k", "x", "")); !errors.Is(err, kvstore.ErrNotLeader) {
			t.Errorf("lead with tenure %+v: %v, want ErrNotLeader", bad, err)
		}
		if _, err := r.current("k", bad); !errors.Is(err, kvstore.ErrNotLeader) {
			t.Errorf("current with tenure %+v: %v, want ErrNotLeader", bad, err)
		}
	}
	if it, err := r.current("k", own); err != nil || it.Value != "1" {
		t.Errorf("current: %v, %v; want k = 1", it, err)
	}
	want := []string{"promised 4", "applied 4.1 ", "applied 4.2 k"}
	if !reflect.DeepEqual(ev.got, want) {
		t.Errorf("events %q, want %q", ev.got, want)
	}
	waitSubmitted(t, r.last)
	_ = r.disk.Close()

	again, _ := testReplica(t, dir)
	if again.applied() != pos(4, 2) || again.epoch() != 4 {
		t.Errorf("reopened: at %s promised %d; want 4.2 promised 4", again.applied(), again.epoch())
	}
	if it, ok := again.get("k"); !ok || it.Value != "1" {
		t.Errorf("reopened: k = %v (%v), want 1", it, ok)
	}
	if !strings.Contains(fmt.Sprint(again.keys()), "k") {
		t.Errorf("reopened: keys %v, want k", again.keys())
	}
}

package durable

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/kvstore/kvstore/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const waitLimit = 30 * time.Second

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	return ctx
}

func mustOpen(t testing.TB, dir string, o Options) (*DB, State) {
	t.Helper()
	db, st, err := Open(dir, o)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { db.Close() })
	return db, st
}

func mustWait(t testing.TB, p *Pending) {
	t.Helper()
	if err := p.Wait(ctxT(t)); err != nil {
		t.Fatalf("Wait: %v", err)
	}
}

func mustClose(t testing.TB, db *DB) {
	t.Helper()
	if err := db.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// writer submits entries to a DB and applies them to a reference store.
type writer struct {
	t   testing.TB
	db  *DB
	ref *store.Store
}

func newWriter(t testing.TB, db *DB, ref *store.Store) *writer {
	return &writer{t: t, db: db, ref: ref}
}

// entry builds the next entry, of the reference's epoch (at least 1: a
// store refuses an entry of an earlier epoch than its position).
func (w *writer) next(i int, op store.Op, key, value, req string) store.Entry {
	return store.Entry{Version: store.Version{Epoch: max(1, w.ref.Applied().Epoch), Seq: w.ref.Applied().Seq + uint64(i) + 1}, Op: op, Key: key, Value: value, ReqID: req}
}

// append submits es, applies them to the reference and waits.
func (w *writer) append(es ...store.Entry) {
	w.t.Helper()
	p := w.db.Append(es)
	for _, e := range es {
		if dup, err := w.ref.Apply(e); err != nil || dup {
			w.t.Fatalf("reference store: apply %+v: dup %v err %v", e, dup, err)
		}
	}
	mustWait(w.t, p)
}

func sameSnapshot(t testing.TB, what string, got, want store.Snapshot) {
	t.Helper()
	if got.Applied != want.Applied {
		t.Errorf("%s: applied %s, want %s", what, got.Applied, want.Applied)
	}
	if !reflect.DeepEqual(got.Items, want.Items) {
		t.Errorf("%s: items differ:\n got %v\nwant %v", what, got.Items, want.Items)
	}
	if !slices.Equal(got.Requests, want.Requests) {
		t.Errorf("%s: requests differ:\n got %v\nwant %v", what, got.Requests, want.Requests)
	}
}

// checkpointNow makes db checkpoint everything logged so far and waits for
// it.
func checkpointNow(t testing.TB, db *DB) {
	t.Helper()
	db.ckMu.Lock()
	defer db.ckMu.Unlock()
	target := db.ckLast
	for db.ckIdx < target && db.ckErr == nil {
		signal(db.ckUrgent)
		db.ckCond.Wait()
	}
	if db.ckErr != nil {
		t.Fatalf("checkpoint: %v", db.ckErr)
	}
}

func TestRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	db, st := mustOpen(t, dir, Options{})
	if !st.Fresh || st.AcceptedEpoch != 0 || len(st.Snapshot.Items) != 0 || st.Snapshot.Applied != (store.Version{}) || len(st.Snapshot.Requests) != 0 {
		t.Fatalf("new dir: state %+v, want fresh and empty", st)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("dir mode: %v %v, want 0700", fi.Mode(), err)
	}
	ref := store.New(0)
	w := newWriter(t, db, ref)
	mustWait(t, db.Promise(3))
	w.append(w.next(0, store.OpSet, "a", "1", "r1"))
	w.append(
		w.next(0, store.OpSet, "b", "2", ""),
		w.next(1, store.OpDelete, "a", "", "r2"),
		w.next(2, store.OpNoop, "", "", "r3"),
		w.next(3, store.OpSet, "empty", "", ""),
		w.next(4, store.OpNoop, "", "", ""),
	)
	mustWait(t, db.Promise(7))
	mustWait(t, db.Promise(5)) // lower: ignored
	e := w.next(0, store.OpSet, "b", "3", "r4")
	e.Version.Epoch = 7
	w.append(e)
	w.append(w.next(0, store.OpDelete, "never-set", "", ""))
	mustClose(t, db)

	db, st = mustOpen(t, dir, Options{})
	if st.Fresh {
		t.Errorf("reopen: Fresh, want false")
	}
	if st.AcceptedEpoch != 7 {
		t.Errorf("reopen: accepted epoch %d, want 7", st.AcceptedEpoch)
	}
	sameSnapshot(t, "reopen", st.Snapshot, ref.Snapshot())

	// The reopened DB goes on from where it was.
	w.db = db
	w.append(w.next(0, store.OpSet, "c", "4", "r5"), w.next(1, store.OpDelete, "b", "", ""))
	mustClose(t, db)
	_, st = mustOpen(t, dir, Options{})
	if st.Fresh || st.AcceptedEpoch != 7 {
		t.Errorf("second reopen: fresh %v epoch %d", st.Fresh, st.AcceptedEpoch)
	}
	sameSnapshot(t, "second reopen", st.Snapshot, ref.Snapshot())
}

func TestRestoreReplacesEverything(t *testing.T) {
	dir := t.TempDir()
	db, _ := mustOpen(t, dir, Options{})
	ref := store.New(0)
	w := newWriter(t, db, ref)
	w.append(w.next(0, store.OpSet, "a", "1", "r1"), w.next(1, store.OpSet, "b", "2", "r2"), w.next(2, store.OpSet, "c", "3", ""))

	snap := store.Snapshot{
		Applied: store.Version{Epoch: 4, Seq: 100},
		Items: map[string]store.Item{
			"b": {Value: "from-snapshot", Version: store.Version{Epoch: 4, Seq: 90}},
			"d": {Deleted: true, Version: store.Version{Epoch: 3, Seq: 50}},
			"e": {Value: "e", Version: store.Version{Epoch: 2, Seq: 7}},
		},
		Requests: []store.Request{{ID: "x", Version: store.Version{Epoch: 2, Seq: 7}}, {ID: "y", Version: store.Version{Epoch: 4, Seq: 90}}},
	}
	mustWait(t, db.Restore(snap))
	ref.Restore(snap)
	w.append(w.next(0, store.OpSet, "f", "6", "z")) // follows the restored position
	mustClose(t, db)

	_, st := mustOpen(t, dir, Options{})
	sameSnapshot(t, "after restore", st.Snapshot, ref.Snapshot())
	for _, k := range []string{"a", "c"} {
		if _, ok := st.Snapshot.Items[k]; ok {
			t.Errorf("key %q survived the restore", k)
		}
	}
	if ids := requestIDs(st.Snapshot.Requests); !slices.Equal(ids, []string{"x", "y", "z"}) {
		t.Errorf("requests %v, want [x y z]", ids)
	}
}

func requestIDs(rs []store.Request) []string {
	var ids []string
	for _, r := range rs {
		ids = append(ids, r.ID)
	}
	return ids
}

func TestGroupCommit(t *testing.T) {
	dir := t.TempDir()
	db, _ := mustOpen(t, dir, Options{})
	const writers, each = 64, 50
	var (
		mu   sync.Mutex
		seq  uint64
		wg   sync.WaitGroup
		errs = make(chan error, writers)
		ctx  = ctxT(t)
	)
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				mu.Lock()
				seq++
				p := db.Append([]store.Entry{{Version: store.Version{Epoch: 1, Seq: seq}, Op: store.OpSet,
					Key: fmt.Sprintf("g%02d-%02d", g, i), Value: fmt.Sprint(seq), ReqID: fmt.Sprintf("req-%d", seq)}})
				mu.Unlock()
				if err := p.Wait(ctx); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	s := db.Stats()
	t.Logf("stats: %+v (%.1f submissions per commit)", s, float64(s.Submissions)/float64(s.Commits))
	if s.Submissions != writers*each {
		t.Errorf("submissions %d, want %d", s.Submissions, writers*each)
	}
	if s.Commits == 0 || s.Commits > s.Submissions/3 {
		t.Errorf("commits %d for %d submissions: no group commit", s.Commits, s.Submissions)
	}
	mustClose(t, db)
	_, st := mustOpen(t, dir, Options{})
	if st.Snapshot.Applied.Seq != writers*each || len(st.Snapshot.Items) != writers*each || len(st.Snapshot.Requests) != writers*each {
		t.Fatalf("reopen: applied %s, %d items, %d requests; want %d of each", st.Snapshot.Applied, len(st.Snapshot.Items), len(st.Snapshot.Requests), writers*each)
	}
	for g := range writers {
		for i := range each {
			if _, ok := st.Snapshot.Items[fmt.Sprintf("g%02d-%02d", g, i)]; !ok {
				t.Fatalf("key g%02d-%02d missing after reopen", g, i)
			}
		}
	}
	for i, r := range st.Snapshot.Requests {
		if r.ID != fmt.Sprintf("req-%d", i+1) || r.Version.Seq != uint64(i+1) {
			t.Fatalf("request %d is %+v, want req-%d at seq %d", i, r, i+1, i+1)
		}
	}
}

func TestAppendOutOfOrderIsSticky(t *testing.T) {
	dir := t.TempDir()
	db, _ := mustOpen(t, dir, Options{})
	ref := store.New(0)
	w := newWriter(t, db, ref)
	w.append(w.next(0, store.OpSet, "a", "1", ""))
	good := db.Append([]store.Entry{w.next(0, store.OpSet, "b", "2", "")}) // seq 2, queued
	bad := db.Append([]store.Entry{{Version: store.Version{Epoch: 1, Seq: 2}, Op: store.OpSet, Key: "c"}})
	if err := bad.Wait(ctxT(t)); err == nil || !strings.Contains(err.Error(), "does not follow") {
		t.Fatalf("append of seq 2 after seq 2: %v, want a 'does not follow' error", err)
	}
	if err := good.Wait(ctxT(t)); err != nil {
		t.Fatalf("submission before the bad one: %v", err)
	}
	for name, p := range map[string]*Pending{
		"next append": db.Append([]store.Entry{{Version: store.Version{Epoch: 1, Seq: 3}, Op: store.OpSet, Key: "c"}}),
		"promise":     db.Promise(9),
		"restore":     db.Restore(store.Snapshot{}),
	} {
		if err := p.Wait(ctxT(t)); err == nil || !strings.Contains(err.Error(), "does not follow") {
			t.Errorf("%s after a bad append: %v, want the sticky error", name, err)
		}
	}
	// An entry inside a batch that breaks the sequence fails too.
	dir2 := t.TempDir()
	db2, _ := mustOpen(t, dir2, Options{})
	p := db2.Append([]store.Entry{{Version: store.Version{Seq: 1}}, {Version: store.Version{Seq: 3}}})
	if err := p.Wait(ctxT(t)); err == nil {
		t.Errorf("batch with a gap: no error")
	}
	mustClose(t, db2)
	mustClose(t, db)
	_, st := mustOpen(t, dir, Options{})
	if st.Snapshot.Applied.Seq != 2 || st.AcceptedEpoch != 0 {
		t.Errorf("reopen: applied %s epoch %d, want seq 2 and epoch 0", st.Snapshot.Applied, st.AcceptedEpoch)
	}
}

func TestFailedCommitIsSticky(t *testing.T) {
	dir := t.TempDir()
	db, _ := mustOpen(t, dir, Options{})
	ref := store.New(0)
	w := newWriter(t, db, ref)
	w.append(w.next(0, store.OpSet, "a", "1", ""))
	want := ref.Snapshot()

	injected := errors.New("injected disk failure")
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	db.testHookCommit = func() error {
		entered <- struct{}{}
		<-release
		return injected
	}
	p1 := db.Append([]store.Entry{{Version: store.Version{Epoch: 1, Seq: 2}, Op: store.OpSet, Key: "b"}})
	select {
	case <-entered:
	case <-time.After(waitLimit):
		t.Fatal("the committer never started the group")
	}
	// Queued while the failing group runs: must fail too.
	p2 := db.Append([]store.Entry{{Version: store.Version{Epoch: 1, Seq: 3}, Op: store.OpSet, Key: "c"}})
	close(release)
	for i, p := range []*Pending{p1, p2} {
		if err := p.Wait(ctxT(t)); !errors.Is(err, injected) {
			t.Errorf("pending %d: %v, want the injected error", i+1, err)
		}
	}
	if err := db.Promise(4).Wait(ctxT(t)); !errors.Is(err, injected) {
		t.Errorf("submission after the failure: %v, want the injected error", err)
	}
	mustClose(t, db)
	_, st := mustOpen(t, dir, Options{})
	sameSnapshot(t, "reopen after a failed group", st.Snapshot, want)
}

// metaPages returns the file offsets of the two bbolt meta pages' meta
// structs, newest first.
func metaPages(t *testing.T, data []byte) (newest, older int) {
	t.Helper()
	pageSize := int(binary.NativeEndian.Uint32(data[metaOffset+8:]))
	txid := func(page int) uint64 { return binary.NativeEndian.Uint64(data[page*pageSize+metaOffset+48:]) }
	if txid(1) > txid(0) {
		return pageSize + metaOffset, metaOffset
	}
	return metaOffset, pageSize + metaOffset
}

func TestTornFinalCommit(t *testing.T) {
	dir := t.TempDir()
	db, _ := mustOpen(t, dir, Options{})
	ref := store.New(0)
	w := newWriter(t, db, ref)
	for i := range 10 {
		w.append(w.next(0, store.OpSet, fmt.Sprintf("k%d", i%4), fmt.Sprintf("v%d", i), fmt.Sprintf("r%d", i)),
			w.next(1, store.OpDelete, fmt.Sprintf("k%d", (i+1)%4), "", ""))
	}
	mustWait(t, db.Promise(2))
	checkpointNow(t, db) // the last group gets a checkpoint of its own
	w.append(w.next(0, store.OpSet, "k0", "last", "r-last"), w.next(1, store.OpSet, "new", "last", ""))
	commits := db.Stats().Commits
	mustClose(t, db)
	if db.Stats().Commits != commits {
		t.Fatalf("Close committed an extra group")
	}

	// The last checkpoint's meta page torn (as a crash while it was
	// written leaves it): its checksum fails, and bbolt uses the older
	// one. The log the older checkpoint lacks is still there (Close keeps
	// the newest log file; a crash deletes none): Open replays it, and the
	// state is the last one. (Before Close kept a log file, this returned
	// the older checkpoint's state: writes reported durable were lost.)
	path := filepath.Join(dir, fileName)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	newest, _ := metaPages(t, data)
	for i := 16; i < 40; i++ { // root bucket, freelist and pgid fields
		data[newest+i] ^= 0x5a
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}

	db, st := mustOpen(t, dir, Options{})
	sameSnapshot(t, "after torn commit", st.Snapshot, ref.Snapshot())
	if st.AcceptedEpoch != 2 {
		t.Errorf("accepted epoch %d, want 2", st.AcceptedEpoch)
	}
	// The DB goes on from the recovered state.
	w = newWriter(t, db, ref)
	w.append(w.next(0, store.OpSet, "after", "recovery", "r-after"))
	mustClose(t, db)
	_, st = mustOpen(t, dir, Options{})
	sameSnapshot(t, "after recovery and a new commit", st.Snapshot, ref.Snapshot())
}

// fill writes n entries with 256-byte values (and a few deletes) and
// returns the reference store.
func fill(t *testing.T, db *DB, n int, marker string) *store.Store {
	ref := store.New(0)
	w := newWriter(t, db, ref)
	val := strings.Repeat("v", 256)
	for i := 0; i < n; i += 10 {
		var es []store.Entry
		for j := range 10 {
			es = append(es, w.next(j, store.OpSet, fmt.Sprintf("key-%04d", i+j), val, fmt.Sprintf("req-%d", i+j)))
		}
		es[3].Op, es[3].Key = store.OpDelete, fmt.Sprintf("key-%04d", i/2)
		w.append(es...)
	}
	if marker != "" {
		w.append(w.next(0, store.OpSet, "victim", marker, ""))
	}
	return ref
}

func TestCorruptValue(t *testing.T) {
	dir := t.TempDir()
	db, _ := mustOpen(t, dir, Options{})
	const marker = "MARKER-7f3a9c-the-one-value"
	fill(t, db, 100, marker)
	mustClose(t, db)

	path := filepath.Join(dir, fileName)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for i := bytes.Index(data, []byte(marker)); i >= 0; {
		data[i+len(marker)/2] ^= 0x01
		n++
		j := bytes.Index(data[i+1:], []byte(marker))
		if j < 0 {
			break
		}
		i += 1 + j
	}
	if n == 0 {
		t.Fatal("marker not found in the file")
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err = Open(dir, Options{})
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open of a file with a flipped value: %v, want ErrCorrupt", err)
	}
	for _, want := range []string{path, `"items"`, `"victim"`, "checksum"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	t.Logf("error: %v", err)
}

func TestTruncatedFile(t *testing.T) {
	dir := t.TempDir()
	db, _ := mustOpen(t, dir, Options{})
	fill(t, db, 300, "")
	mustClose(t, db)
	path := filepath.Join(dir, fileName)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	newest, _ := metaPages(t, data)
	pageSize := int64(binary.NativeEndian.Uint32(data[metaOffset+8:]))
	used := int64(binary.NativeEndian.Uint64(data[newest+40:])) * pageSize // high water mark
	// Every size cuts into the pages the newest meta page uses: bbolt grows
	// the file ahead of use, so a cut at half the file's size may keep
	// every used page (how far ahead depends on how many checkpoint
	// transactions ran, which is timing) and then opens, rightly.
	for _, size := range []int64{used / 2, used - pageSize/2, 4096 + 100, 100, 0} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			d := t.TempDir()
			if err := os.WriteFile(filepath.Join(d, fileName), data[:size], 0o600); err != nil {
				t.Fatal(err)
			}
			db, st, err := Open(d, Options{})
			if err == nil {
				db.Close()
				t.Fatalf("Open of a file truncated from %d to %d bytes succeeded with %d items", fi.Size(), size, len(st.Snapshot.Items))
			}
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), d) {
				t.Errorf("error %v: want ErrCorrupt naming the file", err)
			}
			t.Logf("error: %v", err)
		})
	}
}

// TestRandomFlips flips one byte at a time in the pages after the meta pages:
// Open must fail with ErrCorrupt or return exactly the state written, and
// never panic.
func TestRandomFlips(t *testing.T) {
	dir := t.TempDir()
	db, _ := mustOpen(t, dir, Options{MaxRequests: 40})
	ref := fill(t, db, 200, "")
	want := store.New(40)
	want.Restore(ref.Snapshot())
	mustClose(t, db)
	data, err := os.ReadFile(filepath.Join(dir, fileName))
	if err != nil {
		t.Fatal(err)
	}
	pageSize := int(binary.NativeEndian.Uint32(data[metaOffset+8:]))
	newest, _ := metaPages(t, data)
	used := int(binary.NativeEndian.Uint64(data[newest+40:])) * pageSize // high water mark
	rng := rand.New(rand.NewPCG(1, 2))
	flips := 300
	if testing.Short() {
		flips = 50
	}
	detected, same := 0, 0
	for range flips {
		off := 2*pageSize + rng.IntN(used-2*pageSize)
		bad := slices.Clone(data)
		bad[off] ^= byte(1 + rng.IntN(255))
		d := t.TempDir()
		if err := os.WriteFile(filepath.Join(d, fileName), bad, 0o600); err != nil {
			t.Fatal(err)
		}
		db, st, err := Open(d, Options{MaxRequests: 40})
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("flip at %d (page %d): %v, want ErrCorrupt", off, off/pageSize, err)
			}
			detected++
			continue
		}
		db.Close()
		sameSnapshot(t, fmt.Sprintf("undetected flip at %d (page %d)", off, off/pageSize), st.Snapshot, want.Snapshot())
		same++
	}
	t.Logf("%d flips: %d detected, %d harmless (unused bytes)", flips, detected, same)
	if detected == 0 {
		t.Errorf("no flip detected")
	}
}

func TestSecondOpenFailsFast(t *testing.T) {
	dir := t.TempDir()
	db, _ := mustOpen(t, dir, Options{})
	start := time.Now()
	_, _, err := Open(dir, Options{})
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("second Open: %v, want ErrLocked naming the directory", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("second Open took %v", d)
	}
	t.Logf("error after %v: %v", time.Since(start).Round(time.Millisecond), err)
	mustClose(t, db)
	db, _ = mustOpen(t, dir, Options{}) // free again
	mustClose(t, db)
}

// holdCommits makes db's commits wait inside their transaction until the
// returned channel is closed; awaitCommitting waits until one is waiting.
func holdCommits(db *DB) (entered <-chan struct{}, release chan struct{}) {
	release = make(chan struct{})
	in := make(chan struct{}, 1)
	db.testHookCommit = func() error {
		select {
		case in <- struct{}{}:
		default:
		}
		<-release
		return nil
	}
	return in, release
}

func awaitCommitting(t *testing.T, entered <-chan struct{}) {
	t.Helper()
	select {
	case <-entered:
	case <-time.After(waitLimit):
		t.Fatal("the committer never started the group")
	}
}

func TestCloseAndWait(t *testing.T) {
	dir := t.TempDir()
	db, _ := mustOpen(t, dir, Options{})

	// Wait with a cancelled ctx while the group is still committing.
	entered, release := holdCommits(db)
	p := db.Append([]store.Entry{{Version: store.Version{Epoch: 1, Seq: 1}, Op: store.OpSet, Key: "a", Value: "1"}})
	awaitCommitting(t, entered)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.Wait(cancelled); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait with a cancelled ctx on an uncommitted group: %v, want context.Canceled", err)
	}
	close(release)
	mustWait(t, p)
	if err := p.Wait(cancelled); err != nil {
		t.Errorf("Wait with a cancelled ctx on a durable submission: %v, want nil", err)
	}

	// Close commits what was submitted.
	q := db.Append([]store.Entry{{Version: store.Version{Epoch: 1, Seq: 2}, Op: store.OpSet, Key: "b", Value: "2"}})
	mustClose(t, db)
	select {
	case <-q.done:
	default:
		t.Fatal("Close returned before the submission before it was done")
	}
	mustWait(t, q)
	mustClose(t, db) // idempotent
	for name, p := range map[string]*Pending{
		"append":  db.Append([]store.Entry{{Version: store.Version{Epoch: 1, Seq: 3}}}),
		"restore": db.Restore(store.Snapshot{}),
		"promise": db.Promise(1),
	} {
		if err := p.Wait(ctxT(t)); !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
	_, st := mustOpen(t, dir, Options{})
	if st.Snapshot.Applied.Seq != 2 || len(st.Snapshot.Items) != 2 {
		t.Errorf("reopen: applied %s with %d items, want seq 2 with 2", st.Snapshot.Applied, len(st.Snapshot.Items))
	}
}

func TestMaxRequestsEviction(t *testing.T) {
	dir := t.TempDir()
	const maxReqs = 100
	db, _ := mustOpen(t, dir, Options{MaxRequests: maxReqs})
	ref := store.New(maxReqs)
	w := newWriter(t, db, ref)
	for i := 0; i < 3*maxReqs; {
		var es []store.Entry
		for j := range 7 {
			if i+j < 3*maxReqs {
				es = append(es, w.next(j, store.OpNoop, "", "", fmt.Sprintf("id-%03d", i+j)))
			}
		}
		i += len(es)
		w.append(es...)
	}
	mustClose(t, db)
	if n := db.cs.dg.Reqs; n > 2*maxReqs {
		t.Errorf("file holds %d request ids, more than 2*MaxRequests", n)
	}
	db, st := mustOpen(t, dir, Options{MaxRequests: maxReqs})
	sameSnapshot(t, "reopen", st.Snapshot, ref.Snapshot())
	var want []string
	for i := 2 * maxReqs; i < 3*maxReqs; i++ {
		want = append(want, fmt.Sprintf("id-%03d", i))
	}
	if got := requestIDs(st.Snapshot.Requests); !slices.Equal(got, want) {
		t.Fatalf("requests after reopen:\n got %v\nwant %v", got, want)
	}
	for _, r := range st.Snapshot.Requests {
		if v, _ := ref.Request(r.ID); v != r.Version {
			t.Errorf("request %s at %s, want %s", r.ID, r.Version, v)
		}
	}
	mustClose(t, db)
	_, st = mustOpen(t, dir, Options{MaxRequests: 10})
	if got := requestIDs(st.Snapshot.Requests); !slices.Equal(got, want[len(want)-10:]) {
		t.Errorf("with MaxRequests 10: %v, want the newest 10", got)
	}
}

func BenchmarkAppend(b *testing.B) {
	value := strings.Repeat("x", 256)
	for _, fsync := range []bool{true, false} {
		for _, parallel := range []bool{false, true} {
			name := map[bool]string{true: "sync", false: "nosync"}[fsync] + "/" + map[bool]string{true: "parallel", false: "serial"}[parallel]
			b.Run(name, func(b *testing.B) {
				db, _ := mustOpen(b, b.TempDir(), Options{NoSync: !fsync})
				var (
					mu  sync.Mutex
					seq uint64
				)
				appendOne := func() error {
					mu.Lock()
					seq++
					p := db.Append([]store.Entry{{Version: store.Version{Epoch: 1, Seq: seq}, Op: store.OpSet,
						Key: fmt.Sprintf("key-%09d", seq), Value: value, ReqID: fmt.Sprintf("req-%d", seq)}})
					mu.Unlock()
					return p.Wait(context.Background())
				}
				b.ResetTimer()
				if parallel {
					b.SetParallelism(32)
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							if err := appendOne(); err != nil {
								b.Error(err)
								return
							}
						}
					})
				} else {
					for range b.N {
						if err := appendOne(); err != nil {
							b.Fatal(err)
						}
					}
				}
				b.StopTimer()
				s := db.Stats()
				b.ReportMetric(float64(s.Commits)/float64(s.Submissions), "commits/op")
				if err := db.Close(); err != nil {
					b.Fatal(err)
				}
			})
		}
	}
}

// TestCrashDropsWhatIsNotCommitted: Crash commits nothing more. A group the
// committer already took completes; what is still queued is lost and its
// waiters are told (ErrClosed), never that it is durable.
func TestCrashDropsWhatIsNotCommitted(t *testing.T) {
	dir := t.TempDir()
	db, _ := mustOpen(t, dir, Options{})
	entered, release := holdCommits(db)
	first := db.Append([]store.Entry{{Version: store.Version{Epoch: 1, Seq: 1}, Op: store.OpSet, Key: "a", Value: "1"}})
	awaitCommitting(t, entered)
	queued := db.Append([]store.Entry{{Version: store.Version{Epoch: 1, Seq: 2}, Op: store.OpSet, Key: "b", Value: "2"}})
	crashed := make(chan error, 1)
	go func() { crashed <- db.Crash() }()
	if err := queued.Wait(ctxT(t)); !errors.Is(err, ErrClosed) {
		t.Fatalf("a submission queued at the crash: %v, want ErrClosed", err)
	}
	close(release)
	mustWait(t, first)
	if err := <-crashed; err != nil {
		t.Fatalf("Crash: %v", err)
	}
	_, st := mustOpen(t, dir, Options{})
	if st.Snapshot.Applied.Seq != 1 || len(st.Snapshot.Items) != 1 {
		t.Fatalf("reopen after the crash: applied %s with %d items, want only the group that was committing (seq 1, 1 item)", st.Snapshot.Applied, len(st.Snapshot.Items))
	}
}

// tune sets the log and checkpoint tuning for one test.
func tune(t *testing.T, rotate int64, interval time.Duration) {
	r, i := walRotateBytes, checkpointInterval
	walRotateBytes, checkpointInterval = rotate, interval
	t.Cleanup(func() { walRotateBytes, checkpointInterval = r, i })
}

// workload submits n groups of mixed entries (sets, deletes, noops, request
// ids) and a few promises, waiting for each; it returns the highest epoch
// promised.
func workload(t *testing.T, w *writer, n int, tag string) int64 {
	t.Helper()
	var epoch int64
	for i := range n {
		k := func(j int) string { return fmt.Sprintf("%s-key-%03d", tag, (i*7+j)%150) }
		w.append(
			w.next(0, store.OpSet, k(0), fmt.Sprintf("%s-v%d-%s", tag, i, strings.Repeat("x", i%40)), fmt.Sprintf("%s-r%d", tag, i)),
			w.next(1, store.OpDelete, k(3), "", ""),
			w.next(2, store.OpNoop, "", "", fmt.Sprintf("%s-n%d", tag, i)),
		)
		if i%50 == 0 {
			epoch = int64(i/50 + 1)
			mustWait(t, w.db.Promise(epoch))
		}
	}
	return epoch
}

func walFiles(t *testing.T, dir string) []walFile {
	t.Helper()
	fs, err := listWAL(dir)
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

// TestReplayAfterCrash: a Crash right after many Waits, before any
// checkpoint: the reopened state holds everything waited for.
func TestReplayAfterCrash(t *testing.T) {
	tune(t, walRotateBytes, time.Hour) // no checkpoint but Open's
	dir := t.TempDir()
	db, _ := mustOpen(t, dir, Options{MaxRequests: 100})
	ref := store.New(100)
	w := newWriter(t, db, ref)
	epoch := workload(t, w, 400, "a")
	if s := db.Stats(); s.Checkpoints != 0 || s.Commits != s.Submissions {
		t.Fatalf("stats %+v: want no checkpoint and one commit per serial submission", s)
	}
	if err := db.Crash(); err != nil {
		t.Fatal(err)
	}
	if fs := walFiles(t, dir); len(fs) != 1 {
		t.Fatalf("log files after the crash: %v, want 1", fs)
	}
	db, st := mustOpen(t, dir, Options{MaxRequests: 100})
	if st.Fresh || st.AcceptedEpoch != epoch {
		t.Errorf("reopen: fresh %v epoch %d, want false and %d", st.Fresh, st.AcceptedEpoch, epoch)
	}
	sameSnapshot(t, "replay after a crash", st.Snapshot, ref.Snapshot())
	// It goes on, and a second crash replays again on top of Open's
	// checkpoint.
	w.db = db
	workload(t, w, 30, "b")
	if err := db.Crash(); err != nil {
		t.Fatal(err)
	}
	_, st = mustOpen(t, dir, Options{MaxRequests: 100})
	sameSnapshot(t, "second replay", st.Snapshot, ref.Snapshot())
}

// groupsEnd is where the groups of log file data end (its preallocated
// zeros start).
func groupsEnd(t *testing.T, data []byte) int64 {
	t.Helper()
	salt, ok := fileHeader(data)
	if !ok {
		t.Fatal("no file header")
	}
	off := fileHeaderLen
	for {
		n, _, ok := groupHeader(data[off:], salt)
		if !ok {
			return int64(off)
		}
		off += groupHeaderLen + int(n)
	}
}

// crashedDir writes n groups, remembers the state and where the log's
// groups end, writes one more group and crashes; it returns the state
// before the last group and the log file with the offset of the last
// record.
func crashedDir(t *testing.T, dir string, n int) (before store.Snapshot, epoch int64, log string, last int64) {
	t.Helper()
	db, _ := mustOpen(t, dir, Options{})
	ref := store.New(0)
	w := newWriter(t, db, ref)
	epoch = workload(t, w, n, "t")
	before = ref.Snapshot()
	fs := walFiles(t, dir)
	log = filepath.Join(dir, fs[len(fs)-1].name)
	data, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	w.append(w.next(0, store.OpSet, "last", "the-last-value", "r-last"))
	if err := db.Crash(); err != nil {
		t.Fatal(err)
	}
	return before, epoch, log, groupsEnd(t, data)
}

func TestTornFinalRecord(t *testing.T) {
	tune(t, walRotateBytes, time.Hour)
	for _, tc := range []struct {
		name string
		// damage gets the whole file, whose groups end at end (the last
		// starting at last), then preallocated zeros. Truncated files are
		// what a crash leaves of a file that grew; damage with the zeros
		// kept, what it leaves of a preallocated one.
		damage func(data []byte, last, end int) []byte
	}{
		{"truncated", func(data []byte, last, end int) []byte { return data[:end-3] }},
		{"header-only", func(data []byte, last, end int) []byte { return data[:last+5] }},
		{"zeroed-tail", func(data []byte, last, end int) []byte { clear(data[end-3 : end]); return data }},
		{"flipped", func(data []byte, last, end int) []byte { data[last+(end-last)/2] ^= 0x10; return data }},
		{"length-flipped", func(data []byte, last, end int) []byte { data[last+1] ^= 0x40; return data }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			before, epoch, log, last := crashedDir(t, dir, 60)
			data, err := os.ReadFile(log)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(log, tc.damage(data, int(last), int(groupsEnd(t, data))), 0o600); err != nil {
				t.Fatal(err)
			}
			// The log alone: the torn record is cut off.
			only := t.TempDir()
			damaged, _ := os.ReadFile(log)
			if err := os.WriteFile(filepath.Join(only, filepath.Base(log)), damaged, 0o600); err != nil {
				t.Fatal(err)
			}
			recs, _, _, torn, err := readWAL(only, 0, true)
			if err != nil || torn == "" || !strings.Contains(torn, fmt.Sprintf("offset %d", last)) {
				t.Fatalf("readWAL: torn %q, err %v; want a torn record at offset %d", torn, err, last)
			}
			if fi, err := os.Stat(filepath.Join(only, filepath.Base(log))); err != nil || fi.Size() != last {
				t.Fatalf("log after readWAL: %v bytes (%v), want truncated to %d", fi.Size(), err, last)
			}
			if recs[len(recs)-1].idx != uint64(len(recs)) {
				t.Fatalf("records %d, last index %d", len(recs), recs[len(recs)-1].idx)
			}
			// Open: the state before that record, and it goes on.
			var out bytes.Buffer
			db, st := mustOpen(t, dir, Options{Logger: slog.New(slog.NewTextHandler(&out, nil))})
			sameSnapshot(t, "after a torn final record", st.Snapshot, before)
			if st.AcceptedEpoch != epoch {
				t.Errorf("epoch %d, want %d", st.AcceptedEpoch, epoch)
			}
			if !strings.Contains(out.String(), "torn final log record") {
				t.Errorf("Open did not report the torn record:\n%s", out.String())
			}
			ref := store.New(0)
			ref.Restore(before)
			w := newWriter(t, db, ref)
			w.append(w.next(0, store.OpSet, "after", "recovery", "r-after"))
			if err := db.Crash(); err != nil {
				t.Fatal(err)
			}
			_, st = mustOpen(t, dir, Options{})
			sameSnapshot(t, "after recovery", st.Snapshot, ref.Snapshot())
		})
	}
}

func TestCorruptLogRecord(t *testing.T) {
	tune(t, walRotateBytes, time.Hour)
	dir := t.TempDir()
	_, _, log, last := crashedDir(t, dir, 60)
	data, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{20, last / 2, last - 2} {
		t.Run(fmt.Sprint(off), func(t *testing.T) {
			d := t.TempDir()
			bad := slices.Clone(data)
			bad[off] ^= 0x01
			for _, f := range []string{fileName, filepath.Base(log)} {
				b, err := os.ReadFile(filepath.Join(dir, f))
				if f == filepath.Base(log) {
					b = bad
				}
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(d, f), b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			_, _, err := Open(d, Options{})
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), filepath.Join(d, filepath.Base(log))) || !strings.Contains(err.Error(), "offset") {
				t.Fatalf("Open with a damaged record before the last: %v, want ErrCorrupt naming the file and offset", err)
			}
			t.Logf("error: %v", err)
		})
	}
}

// TestPreparedLogFiles: log files are made ahead, full of zeros (the
// prepared next one waits as wal-next.tmp, removed by Close); a failed
// background preparation is retried at the rotation rather than failing
// the group; and what was written reads back after a crash.
func TestPreparedLogFiles(t *testing.T) {
	tune(t, 4<<10, time.Hour)
	var fails atomic.Int64
	fails.Store(2) // the first two background preparations fail
	testHookPrepare = func() error {
		if fails.Add(-1) >= 0 {
			return errors.New("test: no space left on device")
		}
		return nil
	}
	t.Cleanup(func() { testHookPrepare = nil })
	dir := t.TempDir()
	db, _ := mustOpen(t, dir, Options{})
	ref := store.New(0)
	w := newWriter(t, db, ref)
	workload(t, w, 200, "p")
	files := walFiles(t, dir)
	if len(files) < 3 {
		t.Fatalf("log files %v: the workload did not rotate twice", files)
	}
	for _, f := range files {
		fi, err := os.Stat(filepath.Join(dir, f.name))
		if err != nil || fi.Size() < walPreallocBytes() {
			t.Fatalf("log file %s: %v bytes (%v), want at least the %d preallocated", f.name, fi.Size(), err, walPreallocBytes())
		}
	}
	if _, err := os.Stat(filepath.Join(dir, walNextName)); err != nil {
		t.Fatalf("no prepared next log file: %v", err)
	}
	if err := db.Crash(); err != nil {
		t.Fatal(err)
	}
	db, st := mustOpen(t, dir, Options{})
	sameSnapshot(t, "after rotations into prepared files and a crash", st.Snapshot, ref.Snapshot())
	mustClose(t, db)
	if _, err := os.Stat(filepath.Join(dir, walNextName)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Close left the prepared next log file: %v", err)
	}
}

// TestCheckpointAndRotation: with small log files and frequent checkpoints,
// old log files are deleted, and the state survives a crash and a close.
func TestCheckpointAndRotation(t *testing.T) {
	tune(t, 4<<10, time.Millisecond)
	dir := t.TempDir()
	db, _ := mustOpen(t, dir, Options{MaxRequests: 50})
	ref := store.New(50)
	w := newWriter(t, db, ref)
	epoch := workload(t, w, 300, "c")
	checkpointNow(t, db)
	w.append(w.next(0, store.OpSet, "rotated", "yes", "")) // starts a new file
	checkpointNow(t, db)
	s := db.Stats()
	if s.Checkpoints < 2 || s.Checkpoints >= s.Commits {
		t.Errorf("stats %+v: want several checkpoints, fewer than commits", s)
	}
	if fs := walFiles(t, dir); len(fs) > 2 || fs[0].first < 100 {
		t.Errorf("log files after checkpoints: %v, want the old ones deleted", fs)
	}
	workload(t, w, 20, "d")
	if err := db.Crash(); err != nil {
		t.Fatal(err)
	}
	db, st := mustOpen(t, dir, Options{MaxRequests: 50})
	sameSnapshot(t, "after checkpoints, rotations and a crash", st.Snapshot, ref.Snapshot())
	if st.AcceptedEpoch != epoch {
		t.Errorf("epoch %d, want %d", st.AcceptedEpoch, epoch)
	}
	if fs := walFiles(t, dir); len(fs) != 1 {
		t.Errorf("log files after Open: %v, want one new file", fs)
	}
	mustClose(t, db)
	if fs := walFiles(t, dir); len(fs) != 1 {
		t.Errorf("log files after Close: %v, want the newest only", fs)
	}
	_, st = mustOpen(t, dir, Options{MaxRequests: 50})
	sameSnapshot(t, "after close", st.Snapshot, ref.Snapshot())
}

// TestLogGap: a log file missing between two others is ErrCorrupt.
func TestLogGap(t *testing.T) {
	tune(t, 1<<10, time.Hour)
	dir := t.TempDir()
	db, _ := mustOpen(t, dir, Options{})
	workload(t, newWriter(t, db, store.New(0)), 100, "g")
	if err := db.Crash(); err != nil {
		t.Fatal(err)
	}
	fs := walFiles(t, dir)
	if len(fs) < 3 {
		t.Fatalf("log files %v, want at least 3", fs)
	}
	if err := os.Remove(filepath.Join(dir, fs[1].name)); err != nil {
		t.Fatal(err)
	}
	_, _, err := Open(dir, Options{})
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "gap") {
		t.Fatalf("Open with a log file missing: %v, want ErrCorrupt (gap)", err)
	}
	t.Logf("error: %v", err)
}

// TestRestoreInLog: a Restore replayed from the log replaces everything.
func TestRestoreInLog(t *testing.T) {
	tune(t, walRotateBytes, time.Hour)
	dir := t.TempDir()
	db, _ := mustOpen(t, dir, Options{})
	ref := store.New(0)
	w := newWriter(t, db, ref)
	workload(t, w, 20, "old")
	checkpointNow(t, db) // the old state is in the bbolt file
	workload(t, w, 5, "logged")
	snap := store.Snapshot{
		Applied: store.Version{Epoch: 4, Seq: 1000},
		Items: map[string]store.Item{
			"b": {Value: "from-snapshot", Version: store.Version{Epoch: 4, Seq: 990}},
			"d": {Deleted: true, Version: store.Version{Epoch: 3, Seq: 50}},
		},
		Requests: []store.Request{{ID: "x", Version: store.Version{Epoch: 2, Seq: 7}}},
	}
	mustWait(t, db.Restore(snap))
	ref.Restore(snap)
	w.append(w.next(0, store.OpSet, "f", "6", "z"))
	if err := db.Crash(); err != nil {
		t.Fatal(err)
	}
	_, st := mustOpen(t, dir, Options{})
	sameSnapshot(t, "restore replayed", st.Snapshot, ref.Snapshot())
	if len(st.Snapshot.Items) != 3 {
		t.Errorf("items %v, want b, d and f only", st.Snapshot.Items)
	}
}

func TestNoSync(t *testing.T) {
	dir := t.TempDir()
	db, _ := mustOpen(t, dir, Options{NoSync: true})
	ref := store.New(0)
	w := newWriter(t, db, ref)
	workload(t, w, 100, "n")
	if err := db.Crash(); err != nil {
		t.Fatal(err)
	}
	db, st := mustOpen(t, dir, Options{NoSync: true})
	sameSnapshot(t, "nosync after a crash", st.Snapshot, ref.Snapshot())
	w.db = db
	workload(t, w, 10, "m")
	mustClose(t, db)
	_, st = mustOpen(t, dir, Options{})
	sameSnapshot(t, "nosync after close", st.Snapshot, ref.Snapshot())
}

// TestDamagedMetaPageAfterClose: after Close, damage to the newest meta
// page makes bbolt use the older one, a checkpoint behind the last: Open
// must replay the log from there (Close keeps the newest log file), or
// fail with ErrCorrupt, never return the older state. Before the fix Close
// deleted every log file, and Open returned the older state silently.
func TestDamagedMetaPageAfterClose(t *testing.T) {
	for _, tc := range []struct {
		name   string
		rotate bool // the newest log file starts after the older checkpoint
	}{{"replayed", false}, {"gap", true}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			db, _ := mustOpen(t, dir, Options{})
			ref := store.New(0)
			w := newWriter(t, db, ref)
			w.append(w.next(0, store.OpSet, "a", "1", ""))
			checkpointNow(t, db)
			if tc.rotate {
				tune(t, 1, time.Hour) // every group starts a new file
				w.append(w.next(0, store.OpSet, "x", "2", ""))
				checkpointNow(t, db)
			}
			w.append(w.next(0, store.OpSet, "b", "3", ""))
			mustClose(t, db)
			path := filepath.Join(dir, fileName)
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			newest, _ := metaPages(t, data)
			data[newest+20] ^= 0x01 // the root page id: the meta page's checksum fails
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			db, st, err := Open(dir, Options{})
			if err != nil {
				if !errors.Is(err, ErrCorrupt) || !tc.rotate {
					t.Fatalf("open: %v", err)
				}
				t.Logf("open: %v", err)
				return
			}
			defer db.Close()
			sameSnapshot(t, "after damage to the newest meta page", st.Snapshot, ref.Snapshot())
		})
	}
}

// TestLogStartsAfterCheckpoint: a log whose first file starts after the
// record following the checkpoint is ErrCorrupt, even with no record in it
// (the empty newest file Close keeps, after a checkpoint that went back).
func TestLogStartsAfterCheckpoint(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, walName(7)), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, _, _, err := readWAL(dir, 5, true); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "starts at index 7 but the checkpoint holds only up to 5") {
		t.Fatalf("readWAL after 5 of a log from 7: %v, want ErrCorrupt naming the gap", err)
	}
	if _, _, _, _, err := readWAL(dir, 6, true); err != nil {
		t.Fatalf("readWAL after 6 of a log from 7: %v", err)
	}
}

// TestCheckpointKeepsNoHugeStage: a checkpoint stages its items by key
// (group.stage) in a map it keeps for the next one, but not a map that
// grew past maxStaged keys (a cleared map keeps its size, and clearing it
// costs that size every time).
func TestCheckpointKeepsNoHugeStage(t *testing.T) {
	for _, tc := range []struct {
		keys int
		kept bool
	}{{10, true}, {maxStaged + 1, false}} {
		db, _ := mustOpen(t, t.TempDir(), Options{NoSync: true})
		w := newWriter(t, db, store.New(0))
		es := make([]store.Entry, tc.keys)
		for i := range es {
			es[i] = w.next(i, store.OpSet, fmt.Sprintf("k%06d", i), "v", "")
		}
		w.append(es...)
		mustClose(t, db) // checkpoints everything; the checkpointer is done
		if kept := db.arena.staged != nil; kept != tc.kept || len(db.arena.staged) != 0 || len(db.arena.keys) != 0 {
			t.Errorf("%d keys staged: map kept %v (len %d, keys %d), want kept %v and empty", tc.keys, kept, len(db.arena.staged), len(db.arena.keys), tc.kept)
		}
	}
}

// TestCommitterKeepsItsBuffer: the committer encodes the next group into
// the last one's buffer, unless that grew past maxKeptBuf.
func TestCommitterKeepsItsBuffer(t *testing.T) {
	db, _ := mustOpen(t, t.TempDir(), Options{})
	w := newWriter(t, db, store.New(100))
	w.append(w.next(0, store.OpSet, "small", "v", ""))
	// Wait returned after the committer's last use of db.buf.
	if cap(db.buf) == 0 {
		t.Error("the committer kept no buffer after a group")
	}
	w.append(w.next(0, store.OpSet, "big", strings.Repeat("v", 2*maxKeptBuf), ""))
	if c := cap(db.buf); c > maxKeptBuf {
		t.Errorf("the committer kept a buffer of %d bytes, want at most %d", c, maxKeptBuf)
	}
}

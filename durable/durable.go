package durable

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/kvstore/kvstore/store"
)

// Options configure a DB.
type Options struct {
	// NoSync commits to the log and checkpoints without fsync (benchmarks:
	// "fsync off"). A crash of the machine may then lose recent groups, or
	// more; a crash of the process alone loses nothing that was committed.
	NoSync bool
	// MaxRequests is how many request ids are remembered, as store.New
	// (<= 0: store.DefaultMaxRequests).
	MaxRequests int
	// Logger receives open, close and failure reports (nil: discard).
	Logger *slog.Logger
	// ObserveSync, if set, is called by the committer with the time each
	// group's fdatasync took (kvstore_disk_wal_fsync_duration_seconds).
	ObserveSync func(time.Duration)
	// CommitDelay makes the committer wait this long before it takes each
	// group, as a slow disk would: submissions queue up meanwhile (and a
	// Crash drops them). For tests; 0 in production.
	CommitDelay time.Duration

	// trace, if set, sees every operation on the log's files (the
	// crash-state tests).
	trace func(walEvent)
}

// State is what Open recovered.
type State struct {
	// Snapshot holds the items (tombstones included), the applied position
	// and the remembered request ids, oldest first, at most MaxRequests (the
	// newest).
	Snapshot store.Snapshot
	// AcceptedEpoch is the highest epoch promised (Promise).
	AcceptedEpoch int64
	// AcceptedLeader and AcceptedLeadership name the leadership
	// AcceptedEpoch was promised to (PromiseLeadership); "" and 0 if it
	// was promised without one (Promise, or a directory older than
	// leadership promises).
	AcceptedLeader     string
	AcceptedLeadership uint64
	// Fresh reports that no state existed in the directory (a new data
	// directory): the Snapshot is empty.
	Fresh bool
	// Unreconciled reports that no leader has reconciled this state since
	// the directory was created: a directory is born unreconciled (a new
	// node, a lost disk, a corrupt directory set aside), and only a
	// Restore or a Reconciled submission clears the mark, durably. A
	// directory written before the mark existed (format 1) counts as
	// unreconciled when its position is zero: an empty store is never
	// restored data.
	Unreconciled bool
	// Incarnation is the cluster incarnation the directory belongs to
	// (SetIncarnation): "" in a new directory and in one written before
	// incarnations existed.
	Incarnation string
}

// Stats counts the DB's work since Open. Commits < Submissions shows group
// commit: one log write (and one fdatasync) covered several submissions.
type Stats struct {
	Submissions uint64 // submissions accepted into the queue
	Commits     uint64 // groups written to the log (one write and one fdatasync each)
	Checkpoints uint64 // checkpoints: logged groups applied to the bbolt file
}

// Errors. Match them with errors.Is: they are wrapped with context.
var (
	// ErrCorrupt: the data file fails a check (checksum, structure, digest);
	// the message names the file and the bad record or page.
	ErrCorrupt = errors.New("durable: data is corrupt")
	// ErrClosed: the DB was closed before the submission.
	ErrClosed = errors.New("durable: closed")
	// ErrLocked: another DB (in this or another process) has the directory
	// open.
	ErrLocked = errors.New("durable: data directory is in use")
)

const (
	fileName    = "state.db"
	lockName    = "LOCK"
	lockTimeout = time.Second
)

// DB is a node's replicated state on disk. Its methods are safe for
// concurrent use; submissions (Append, Restore, Promise, Reconciled) are applied in the
// order their calls returned.
type DB struct {
	dir, path string
	bolt      *bolt.DB
	lock      *os.File
	maxReqs   int
	delay     time.Duration // Options.CommitDelay
	noSync    bool
	observe   func(time.Duration) // Options.ObserveSync
	log       *slog.Logger

	mu      sync.Mutex
	cond    sync.Cond
	queue   []*Pending    // submitted, not yet taken by the committer
	next    store.Version // position after every accepted submission
	refuse  error         // sticky: later submissions fail with it
	closing bool
	torn    []*Pending // PowerLoss: written as a torn group by the committer as it stops

	// Owned by the committer goroutine.
	spare     []*Pending
	failed    error         // a group failed: everything after it fails too
	wal       *logFile      // the log file being written
	nextIdx   uint64        // index of the next submission logged
	prealloc  int64         // walPreallocBytes when opened
	prep      chan prepared // the next log file, once prepared (prepareNext)
	preparing bool          // prep will deliver one
	buf       []byte        // the last group's buffer, for the next one

	// Owned by the checkpointer goroutine (by Open before it starts).
	cs    committed // what the last checkpoint left
	arena arena
	recs  []logged // a checkpoint's records, the slice kept for the next one

	// Between the committer and the checkpointer.
	ckMu     sync.Mutex
	ckCond   sync.Cond
	ckq      []ckGroup     // logged, not yet checkpointed
	ckBytes  int           // bytes in ckq
	ckLast   uint64        // index of the last record handed to the checkpointer
	ckIdx    uint64        // index of the last record checkpointed
	ckErr    error         // sticky: a checkpoint failed
	ckKick   chan struct{} // ckq became non-empty
	ckUrgent chan struct{} // checkpoint now
	ckQuit   chan struct{} // closed once the committer stopped
	ckDone   chan struct{}
	crashed  atomic.Bool

	submissions, commits, checkpoints atomic.Uint64
	stopped                           chan struct{}
	crashNow                          chan struct{} // closed by Crash: ends a CommitDelay at once
	closeOnce                         sync.Once
	closeErr                          error

	// testHookCommit, if set, runs before each group is written to the
	// log; an error fails the group.
	testHookCommit func() error
	// trace, if set (Options.trace, tests only), sees every write, sync,
	// creation and removal of a log file, in order.
	trace func(walEvent)
}

// committed is the part of the stored state the committer keeps in memory.
type committed struct {
	applied store.Version
	epoch   int64
	leader  string // the leadership epoch was promised to ("" and 0: none)
	nonce   uint64
	dg      digest
	nextReq uint64 // key of the next remembered request
	logged  uint64 // index of the last log record applied
	// unreconciled is the mark State.Unreconciled reports.
	unreconciled bool
	incarnation  string // State.Incarnation
	format       uint32 // format version the file holds
}

type kind uint8

const (
	kindAppend kind = iota
	kindRestore
	kindPromise
	kindReconciled
	kindPromiseLeadership // a promise naming the leadership (newer than kindPromise)
	kindIncarnation       // the cluster incarnation the directory belongs to
	// A Restore is logged as one unit, in one group: a kindRestoreBegin
	// record (the position and the request ids; it empties the items),
	// then kindRestoreItems records of about restoreChunkBytes of items
	// each. No record is then bigger than about a chunk, whatever the
	// state's size; the checkpointer may apply the unit in several
	// transactions, and a crash between them leaves the rest of the unit
	// in the log, which Open replays. (kindRestore, one record for the
	// whole state, is still read from older logs.)
	kindRestoreBegin
	kindRestoreItems
)

// restoreChunkBytes is about how many bytes of items one kindRestoreItems
// record holds (a variable for the tests, which make units of many
// records out of small states).
var restoreChunkBytes = 1 << 20

// replayChunk is how many log records Open replays in one bbolt
// transaction (a variable for the tests).
var replayChunk = 4096

// testHookReplayed, if set (tests only), runs after each transaction of
// Open's replay; an error ends Open there, as a crash would.
var testHookReplayed func(*DB) error

// Pending is a submission on its way to disk.
type Pending struct {
	done chan struct{}
	err  error
	sub
}

// sub is a submission's content.
type sub struct {
	kind    kind
	entries []store.Entry
	snap    store.Snapshot
	epoch   int64
	leader  string // kindPromiseLeadership
	nonce   uint64 // kindPromiseLeadership
	inc     string // kindIncarnation
}

// Wait waits until the submission is durable (its group written to the log,
// and fdatasynced unless Options.NoSync), and returns nil; or returns the
// error that failed it; or ctx's error if ctx ends first (the submission
// goes on).
func (p *Pending) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		return p.err
	default:
	}
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Durable reports, without waiting, whether the submission is durable: its
// group was written and synced without error.
func (p *Pending) Durable() bool {
	select {
	case <-p.done:
		return p.err == nil
	default:
		return false
	}
}

func (p *Pending) finish(err error) *Pending {
	p.err = err
	p.entries, p.snap = nil, store.Snapshot{}
	close(p.done)
	return p
}

func newPending(k kind) *Pending { return &Pending{done: make(chan struct{}), sub: sub{kind: k}} }

// Open opens the DB in dir, creating dir (0o700) and dir/state.db if
// missing, verifies the whole file, replays the log written since its last
// checkpoint (discarding a torn final record), checkpoints it and returns
// the state. It fails with ErrLocked within about a second if another DB has
// dir open, with ErrCorrupt if the file or the log fails a check, and never
// returns a partial state.
func Open(dir string, o Options) (*DB, State, error) {
	start := time.Now()
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	maxReqs := o.MaxRequests
	if maxReqs <= 0 {
		maxReqs = store.DefaultMaxRequests
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, State{}, fmt.Errorf("durable: %w", err)
	}
	lockPath := filepath.Join(dir, lockName)
	lock, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, State{}, fmt.Errorf("durable: %w", err)
	}
	if err := lockFile(lock, lockTimeout); err != nil {
		lock.Close()
		return nil, State{}, fmt.Errorf("%w: %s is locked by another DB (waited %v for %s): %v", ErrLocked, dir, lockTimeout, lockPath, err)
	}
	d := &DB{dir: dir, path: filepath.Join(dir, fileName), lock: lock, maxReqs: maxReqs, delay: o.CommitDelay, noSync: o.NoSync, observe: o.ObserveSync, log: log, trace: o.trace,
		stopped: make(chan struct{}), prealloc: walPreallocBytes(), prep: make(chan prepared, 1), crashNow: make(chan struct{}), ckKick: make(chan struct{}, 1), ckUrgent: make(chan struct{}, 1), ckQuit: make(chan struct{}), ckDone: make(chan struct{})}
	st, err := d.open(o)
	if err != nil {
		if d.bolt != nil {
			_ = guard(d.path, d.bolt.Close)
		}
		if d.wal != nil {
			d.wal.f.Close()
		}
		lock.Close()
		log.Error("durable: open failed", "dir", dir, "err", err)
		return nil, State{}, err
	}
	d.cond.L = &d.mu
	d.ckCond.L = &d.ckMu
	d.next = d.cs.applied
	d.nextIdx = d.cs.logged + 1
	d.ckIdx, d.ckLast = d.cs.logged, d.cs.logged
	d.prepareNext()
	go d.run()
	go d.checkpointer()
	log.Info("durable: opened", "file", d.path, "fresh", st.Fresh, "items", len(st.Snapshot.Items),
		"requests", len(st.Snapshot.Requests), "applied", st.Snapshot.Applied.String(),
		"accepted_epoch", st.AcceptedEpoch, "nosync", o.NoSync, "took", time.Since(start))
	return d, st, nil
}

func (d *DB) open(o Options) (State, error) {
	fresh := false
	if _, err := os.Stat(d.path); errors.Is(err, fs.ErrNotExist) {
		if err := create(d.path); err != nil {
			return State{}, fmt.Errorf("durable: creating %s: %w", d.path, err)
		}
		fresh = true
	} else if err != nil {
		return State{}, fmt.Errorf("durable: %w", err)
	}

	// Check the structure with plain reads before bbolt maps the file.
	f, err := os.Open(d.path)
	if err != nil {
		return State{}, fmt.Errorf("durable: %w", err)
	}
	fi, err := f.Stat()
	if err == nil {
		err = guard(d.path, func() error {
			if err := checkFile(f, fi.Size()); err != nil {
				return corrupt(d.path, "%v", err)
			}
			return nil
		})
	}
	f.Close()
	if err != nil {
		return State{}, err
	}

	var st State
	err = guard(d.path, func() error {
		b, err := bolt.Open(d.path, 0o600, boltOptions(o.NoSync))
		if err != nil {
			if errors.Is(err, berrors.ErrTimeout) {
				return fmt.Errorf("%w: %s: %v", ErrLocked, d.path, err)
			}
			return fmt.Errorf("durable: bbolt cannot open %s: %w", d.path, err)
		}
		d.bolt = b
		return b.View(func(tx *bolt.Tx) error {
			st, d.cs, err = load(tx, d.path, d.maxReqs)
			return err
		})
	})
	if err != nil {
		return st, err
	}
	if d.cs.format != formatVersion {
		if err := d.upgrade(); err != nil {
			return st, fmt.Errorf("durable: upgrading %s to format %d: %w", d.path, formatVersion, err)
		}
	}

	// Replay the log: apply what the checkpoint does not cover, checkpoint
	// at once, and start a new log file.
	recs, _, files, torn, err := readWAL(d.dir, d.cs.logged, o.NoSync)
	if err != nil {
		return st, err
	}
	if torn != "" {
		d.log.Warn("durable: discarded a torn final log record", "where", torn)
	}
	if len(recs) > 0 {
		for rest := recs; len(rest) > 0; { // in chunks, as the checkpointer
			n := min(len(rest), replayChunk)
			if err := d.checkpoint(rest[:n]); err != nil {
				if errors.As(err, new(contentError)) {
					return st, corrupt(d.path, "replaying the log (records %d to %d): %v", rest[0].idx, rest[n-1].idx, err)
				}
				// The records are sound; the disk refused the write (full,
				// failing). The next Open replays what is left of them.
				return st, fmt.Errorf("durable: replaying the log into %s (records %d to %d): %w", d.path, rest[0].idx, rest[n-1].idx, err)
			}
			rest = rest[n:]
			if testHookReplayed != nil {
				if err := testHookReplayed(d); err != nil {
					return st, err
				}
			}
		}
		err = guard(d.path, func() error {
			return d.bolt.View(func(tx *bolt.Tx) error {
				st, d.cs, err = load(tx, d.path, d.maxReqs)
				return err
			})
		})
		if err != nil {
			return st, err
		}
		d.log.Info("durable: replayed the log", "records", len(recs), "from", recs[0].idx, "to", recs[len(recs)-1].idx)
	}
	if err := removeWAL(d.dir, files, o.NoSync, d.trace); err != nil {
		return st, fmt.Errorf("durable: removing replayed log files: %w", err)
	}
	if d.wal, err = createWAL(d.dir, d.cs.logged+1, d.prealloc, o.NoSync, d.trace); err != nil {
		return st, fmt.Errorf("durable: creating a log file: %w", err)
	}
	st.Fresh = fresh && len(recs) == 0
	return st, nil
}

// upgrade rewrites a format 1 file as format 2: the format record and the
// unreconciled mark load derived. Nothing else changes.
func (d *DB) upgrade() error {
	cs := d.cs
	cs.format = formatVersion
	err := guard(d.path, func() error {
		return d.bolt.Update(func(tx *bolt.Tx) error {
			var g group
			if err := g.init(tx, &cs, &d.arena, d.maxReqs); err != nil {
				return err
			}
			g.formatDirty, g.unreconciledDirty = true, true
			return g.finish()
		})
	})
	if err == nil {
		d.cs = cs
		d.log.Info("durable: upgraded the file format", "file", d.path, "format", formatVersion, "unreconciled", cs.unreconciled)
	}
	return err
}

func boltOptions(noSync bool) *bolt.Options {
	return &bolt.Options{
		Timeout:        lockTimeout,
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
		NoSync:         noSync,
	}
}

// guard runs fn, turning a panic or a memory fault (bbolt reading a damaged
// mapping) into ErrCorrupt.
func guard(path string, fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = corrupt(path, "bbolt failed on the file: %v", r)
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	return fn()
}

func corrupt(path, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrCorrupt, path, fmt.Sprintf(format, args...))
}

// create makes a new, empty state file at path atomically: it is built and
// synced under a temporary name, then renamed, so a state.db that exists
// always holds a complete state (a crash during create leaves a fresh
// directory, never an empty file that would pass for one).
func create(path string) error {
	tmp := path + ".tmp"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	b, err := bolt.Open(tmp, 0o600, boltOptions(false))
	if err != nil {
		return err
	}
	err = b.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketItems, bucketMeta, bucketRequests} {
			if _, err := tx.CreateBucket(name); err != nil {
				return err
			}
		}
		var g group
		if err := g.init(tx, &committed{nextReq: 1, unreconciled: true}, &arena{}, 0); err != nil {
			return err
		}
		g.appliedDirty, g.epochDirty, g.digestDirty, g.formatDirty, g.loggedDirty = true, true, true, true, true
		g.unreconciledDirty, g.leadershipDirty = true, true
		return g.finish()
	})
	if cerr := b.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer dir.Close()
	return dir.Sync()
}

// load reads and verifies every record.
func load(tx *bolt.Tx, path string, maxReqs int) (State, committed, error) {
	var cs committed
	meta, items, reqs := tx.Bucket(bucketMeta), tx.Bucket(bucketItems), tx.Bucket(bucketRequests)
	for _, b := range []struct {
		name []byte
		b    *bolt.Bucket
	}{{bucketMeta, meta}, {bucketItems, items}, {bucketRequests, reqs}} {
		if b.b == nil {
			return State{}, cs, corrupt(path, "bucket %q is missing", b.name)
		}
	}
	get := func(key []byte, size int) ([]byte, error) {
		v := meta.Get(key)
		if v == nil {
			return nil, corrupt(path, "bucket %q: key %q is missing", bucketMeta, key)
		}
		p, err := open(bucketMeta, key, v)
		if err == nil && size >= 0 && len(p) != size {
			err = fmt.Errorf("payload of %d bytes, want %d", len(p), size)
		}
		if err != nil {
			return nil, corrupt(path, "bucket %q key %q: %v", bucketMeta, key, err)
		}
		return p, nil
	}
	p, err := get(keyFormat, 4)
	if err != nil {
		return State{}, cs, err
	}
	cs.format = binary.BigEndian.Uint32(p)
	if cs.format != formatVersion && cs.format != formatV1 {
		return State{}, cs, fmt.Errorf("durable: %s: unsupported format version %d (this build reads %d and %d)", path, cs.format, formatV1, formatVersion)
	}
	if p, err = get(keyApplied, 16); err != nil {
		return State{}, cs, err
	}
	cs.applied = readVersion(p)
	if cs.format == formatV1 {
		// Written before the mark existed: an empty store is not
		// restored data (it may be what a lost disk left).
		cs.unreconciled = cs.applied == store.Version{}
	} else {
		if p, err = get(keyUnreconciled, 1); err != nil {
			return State{}, cs, err
		}
		switch p[0] {
		case 0, 1:
			cs.unreconciled = p[0] == 1
		default:
			return State{}, cs, corrupt(path, "bucket %q key %q: value %d, want 0 or 1", bucketMeta, keyUnreconciled, p[0])
		}
	}
	if p, err = get(keyEpoch, 8); err != nil {
		return State{}, cs, err
	}
	cs.epoch = int64(binary.BigEndian.Uint64(p))
	if v := meta.Get(keyLeadership); v != nil { // absent from files older than leadership promises
		p, err := open(bucketMeta, keyLeadership, v)
		if err == nil {
			cs.leader, cs.nonce, err = decodeLeadership(p)
		}
		if err != nil {
			return State{}, cs, corrupt(path, "bucket %q key %q: %v", bucketMeta, keyLeadership, err)
		}
	}
	if v := meta.Get(keyIncarnation); v != nil { // absent: none recorded
		p, err := open(bucketMeta, keyIncarnation, v)
		if err == nil && len(p) == 0 {
			err = errors.New("empty incarnation")
		}
		if err != nil {
			return State{}, cs, corrupt(path, "bucket %q key %q: %v", bucketMeta, keyIncarnation, err)
		}
		cs.incarnation = string(p)
	}
	if v := meta.Get(keyLogged); v != nil { // absent from files older than the log
		p, err := open(bucketMeta, keyLogged, v)
		if err == nil && len(p) != 8 {
			err = fmt.Errorf("payload of %d bytes, want 8", len(p))
		}
		if err != nil {
			return State{}, cs, corrupt(path, "bucket %q key %q: %v", bucketMeta, keyLogged, err)
		}
		cs.logged = binary.BigEndian.Uint64(p)
	}
	if p, err = get(keyDigest, -1); err != nil {
		return State{}, cs, err
	}
	stored, err := decodeDigest(p)
	if err != nil {
		return State{}, cs, corrupt(path, "bucket %q key %q: %v", bucketMeta, keyDigest, err)
	}

	snap := store.Snapshot{Applied: cs.applied, Items: make(map[string]store.Item, min(stored.Items, 1<<16))}
	c := items.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		p, err := open(bucketItems, k, v)
		if v == nil {
			err = errors.New("a nested bucket where an item belongs")
		}
		var it store.Item
		if err == nil {
			it, err = decodeItem(p)
		}
		if err != nil {
			return State{}, cs, corrupt(path, "bucket %q key %q: %v", bucketItems, k, err)
		}
		snap.Items[string(k)] = it
		cs.dg.Items++
		cs.dg.ItemSum += uint64(storedCRC(v))
	}
	var all []store.Request
	var last uint64
	c = reqs.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		p, err := open(bucketRequests, k, v)
		if v == nil {
			err = errors.New("a nested bucket where a request belongs")
		} else if len(k) != 8 {
			err = fmt.Errorf("key of %d bytes, want 8", len(k))
		}
		var r store.Request
		if err == nil {
			r, err = decodeRequest(p)
		}
		if err != nil {
			return State{}, cs, corrupt(path, "bucket %q key %x: %v", bucketRequests, k, err)
		}
		all = append(all, r)
		last = binary.BigEndian.Uint64(k)
		cs.dg.Reqs++
		cs.dg.ReqSum += uint64(storedCRC(v))
	}
	if cs.dg != stored {
		return State{}, cs, corrupt(path, "records do not match the digest in bucket %q (a record is missing, duplicated or stale): found %d items (sum %x) and %d requests (sum %x), digest says %d items (sum %x) and %d requests (sum %x)",
			bucketMeta, cs.dg.Items, cs.dg.ItemSum, cs.dg.Reqs, cs.dg.ReqSum, stored.Items, stored.ItemSum, stored.Reqs, stored.ReqSum)
	}
	cs.nextReq = last + 1
	if len(all) > maxReqs {
		all = all[len(all)-maxReqs:]
	}
	snap.Requests = slices.Clip(all)

	var errs []error
	for err := range tx.Check() {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return State{}, cs, corrupt(path, "bbolt consistency check: %v", errors.Join(errs...))
	}
	return State{Snapshot: snap, AcceptedEpoch: cs.epoch, AcceptedLeader: cs.leader, AcceptedLeadership: cs.nonce, Unreconciled: cs.unreconciled, Incarnation: cs.incarnation}, cs, nil
}

// Append submits entries as the node applied them, in seq order: the first
// must directly follow the position of every earlier submission
// (Seq == applied.Seq+1) and each the one before it. OpSet and OpDelete write
// the item (a delete keeps a tombstone with its version); OpNoop only moves
// the position; a non-empty ReqID is remembered with the entry's version.
// Entries must not repeat a remembered request id (the node turns a duplicate
// into an OpNoop without ReqID). An entry out of order, with an unknown op,
// or a set/delete of an empty key or one longer than bbolt.MaxKeySize fails
// the returned Pending at once and every later submission: it is a bug, and
// the DB must not record anything after it.
func (d *DB) Append(entries []store.Entry) *Pending {
	p := newPending(kindAppend)
	p.entries = slices.Clone(entries)
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.refused(); err != nil {
		return p.finish(err)
	}
	next := d.next
	for i, e := range entries {
		var err error
		switch {
		case e.Version.Seq != next.Seq+1:
			err = fmt.Errorf("entry %s does not follow position %s", e.Version, next)
		case e.Op != store.OpNoop && e.Op != store.OpSet && e.Op != store.OpDelete:
			err = fmt.Errorf("entry %s has unknown op %d", e.Version, e.Op)
		case e.Op != store.OpNoop:
			err = checkKey(e.Key)
		}
		if err != nil {
			d.refuse = fmt.Errorf("durable: bad append (entry %d of %d): %w", i, len(entries), err)
			return p.finish(d.refuse)
		}
		next = e.Version
	}
	d.next = next
	d.enqueue(p)
	return p
}

// Restore submits a replacement of the whole state (items, applied position,
// remembered requests, keeping the newest MaxRequests) by snap, as one unit
// of log records of about 1 MiB each, written in one group (and, later,
// checkpointed in as many transactions as the checkpointer needs). The snapshot is a
// leader's state: the same record clears the unreconciled mark. The caller must not
// modify snap until the Pending is done. A snapshot with an empty or too
// long key, or an empty request id, fails the Pending and every later
// submission.
func (d *DB) Restore(snap store.Snapshot) *Pending {
	p := newPending(kindRestore)
	p.snap = snap
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.refused(); err != nil {
		return p.finish(err)
	}
	var err error
	for k := range snap.Items {
		if err = checkKey(k); err != nil {
			break
		}
	}
	for _, r := range snap.Requests {
		if r.ID == "" {
			err = fmt.Errorf("empty request id at %s", r.Version)
			break
		}
	}
	if err != nil {
		d.refuse = fmt.Errorf("durable: bad restore: %w", err)
		return p.finish(d.refuse)
	}
	d.next = snap.Applied
	d.enqueue(p)
	return p
}

// Promise submits the accepted epoch. It is only ever raised: an epoch not
// above the stored one changes nothing.
func (d *DB) Promise(epoch int64) *Pending {
	p := newPending(kindPromise)
	p.epoch = epoch
	return d.submit(p)
}

// Reconciled submits the end of the unreconciled mark (State.Unreconciled):
// a leader has reconciled the state submitted before it. It changes nothing
// if the mark is already clear. A Restore clears the mark by itself, in its
// own record.
func (d *DB) Reconciled() *Pending {
	p := newPending(kindReconciled)
	return d.submit(p)
}

// SetIncarnation submits the cluster incarnation the directory belongs to
// (State.Incarnation), replacing any recorded one. An empty id fails the
// Pending and changes nothing.
func (d *DB) SetIncarnation(id string) *Pending {
	p := newPending(kindIncarnation)
	p.inc = id
	if id == "" {
		return p.finish(errors.New("durable: set incarnation: empty id"))
	}
	return d.submit(p)
}

// PromiseLeadership submits the accepted epoch with the leadership it is
// promised to (the leader's id and its random leadership number): a higher
// epoch replaces epoch and leadership; the same epoch, promised with no
// leadership so far, records it; anything else changes nothing.
func (d *DB) PromiseLeadership(epoch int64, leader string, nonce uint64) *Pending {
	p := newPending(kindPromiseLeadership)
	p.epoch, p.leader, p.nonce = epoch, leader, nonce
	return d.submit(p)
}

// MaxKeyLen is the longest key a DB stores (bbolt's limit). A node must
// refuse longer keys before it applies them: a submission with one fails,
// and so does every later one.
const MaxKeyLen = bolt.MaxKeySize

func checkKey(k string) error {
	if k == "" {
		return errors.New("empty key")
	}
	if len(k) > MaxKeyLen {
		return fmt.Errorf("key of %d bytes, more than %d", len(k), MaxKeyLen)
	}
	return nil
}

// refused returns why a new submission must fail, if it must. d.mu is held.
func (d *DB) refused() error {
	if d.closing {
		return ErrClosed
	}
	if d.refuse != nil {
		return fmt.Errorf("durable: refused after an earlier failure: %w", d.refuse)
	}
	return nil
}

// submit queues p for the committer, or fails it if the DB refuses new
// submissions.
func (d *DB) submit(p *Pending) *Pending {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.refused(); err != nil {
		return p.finish(err)
	}
	d.enqueue(p)
	return p
}

// enqueue queues p for the committer. d.mu is held.
func (d *DB) enqueue(p *Pending) {
	d.queue = append(d.queue, p)
	d.submissions.Add(1)
	d.cond.Signal()
}

// Stats returns the DB's counters.
func (d *DB) Stats() Stats {
	return Stats{Submissions: d.submissions.Load(), Commits: d.commits.Load(), Checkpoints: d.checkpoints.Load()}
}

// SetCommitDelay changes Options.CommitDelay from the next group on: a disk
// that turns slow, for tests. A committer already waiting out the old
// delay keeps it; Crash ends the wait at once.
func (d *DB) SetCommitDelay(delay time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.delay = delay
}

// Crash closes the DB the way a crash of the process leaves it: the
// submissions still queued (not yet taken by the committer) are dropped,
// never committed, and fail with ErrClosed; a group already committing
// completes (as the kernel would finish a write already issued). No
// checkpoint is made: what was logged since the last one is in the log
// only, and the next Open replays it. It is for tests that crash a node;
// after it, Close returns at once.
func (d *DB) Crash() error {
	if d.crashed.CompareAndSwap(false, true) {
		close(d.crashNow)
	}
	d.mu.Lock()
	dropped := d.queue
	d.queue = nil
	d.closing = true
	d.mu.Unlock()
	for _, p := range dropped {
		p.finish(ErrClosed)
	}
	return d.Close()
}

// PowerLoss is Crash as a power loss during a group commit leaves the
// disk: the submissions not yet committed (they fail with ErrClosed, as in
// Crash) were being written as one group when the power went, and of that
// write only the later part landed: the group's header and its first
// record are zeros, its other records intact with valid checksums, and
// nothing is synced. It returns how many submissions that torn group
// held (0: none were pending, and nothing was written). Tests only; Open
// must find the torn group and discard it whole.
//
// The power goes when a submission is pending: PowerLoss waits up to 200
// ms for one (so that the fault tears a group whenever the node writes at
// all), then cuts.
func (d *DB) PowerLoss() (torn int, err error) {
	for deadline := time.Now().Add(200 * time.Millisecond); ; time.Sleep(time.Millisecond) {
		d.mu.Lock()
		if len(d.queue) > 0 || d.closing || time.Now().After(deadline) {
			break
		}
		d.mu.Unlock()
	}
	if !d.closing {
		d.torn = d.queue
		d.queue = nil
		torn = len(d.torn)
	}
	d.mu.Unlock()
	for _, p := range d.torn {
		p.finish(ErrClosed)
	}
	return torn, d.Crash()
}

// Close commits what was submitted, stops the committer, checkpoints
// everything logged into the bbolt file (and removes the log files), closes
// the files and releases the directory. It is idempotent (later calls return the first
// call's result); submissions after it fail with ErrClosed.
func (d *DB) Close() error {
	d.closeOnce.Do(func() {
		d.mu.Lock()
		d.closing = true
		d.cond.Signal()
		d.mu.Unlock()
		<-d.stopped
		d.dropPrepared()
		close(d.ckQuit)
		<-d.ckDone
		d.ckMu.Lock()
		err, covered := d.ckErr, d.ckIdx == d.nextIdx-1
		d.ckMu.Unlock()
		if werr := d.wal.f.Close(); err == nil {
			err = werr
		}
		if err == nil && covered && d.failed == nil && !d.crashed.Load() {
			// Everything logged is in the bbolt file: the older log files
			// are not needed. The newest stays (empty, or holding records
			// the checkpoint covers): the next Open finds in it where the
			// log went on, so a checkpoint that went back (bbolt uses the
			// older meta page when the newer one is damaged) is replayed
			// from it, or found as a gap, never taken as it is.
			if files, lerr := listWAL(d.dir); lerr != nil {
				err = lerr
			} else if len(files) > 1 {
				err = removeWAL(d.dir, files[:len(files)-1], d.noSync, d.trace)
			}
		}
		if berr := guard(d.path, d.bolt.Close); err == nil {
			err = berr
		}
		if lerr := d.lock.Close(); err == nil {
			err = lerr
		}
		if err != nil {
			d.closeErr = fmt.Errorf("durable: closing %s: %w", d.path, err)
		}
		d.log.Info("durable: closed", "file", d.path, "submissions", d.submissions.Load(), "commits", d.commits.Load(), "checkpoints", d.checkpoints.Load(), "crashed", d.crashed.Load())
	})
	return d.closeErr
}

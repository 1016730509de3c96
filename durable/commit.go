package durable

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/kvstore/kvstore/store"
)

// Tuning of the log and the checkpoints (variables so that tests can
// shrink them).
var (
	// walRotateBytes: the committer starts a new log file once the
	// current one holds this much.
	walRotateBytes int64 = 4 << 20
	// checkpointInterval: a checkpoint runs this long after the first
	// record it does not yet cover was logged...
	checkpointInterval = 100 * time.Millisecond
	// checkpointBytes: ...or at once when this much awaits it.
	checkpointBytes = 1 << 20
	// maxUncheckpointed: the committer waits (before it takes its next
	// group) while more than this awaits a checkpoint, bounding memory.
	maxUncheckpointed = 16 << 20
	// checkpointChunk bounds the records applied in one bbolt
	// transaction: bbolt splits its nodes only at commit, so a huge
	// transaction makes them huge (and deleting from their front, as
	// request eviction does, quadratic).
	checkpointChunk = 1 << 20
)

// run is the committer: it takes every queued submission, writes them to
// the log with one write and one fdatasync, and signals them; submissions
// that arrive meanwhile form the next group. The groups go on to the
// checkpointer, which applies them to the bbolt file later.
func (d *DB) run() {
	defer close(d.stopped)
	for {
		d.mu.Lock()
		for len(d.queue) == 0 && !d.closing {
			d.cond.Wait()
		}
		if delay := d.delay; delay > 0 && !d.closing {
			// A slow disk (Options.CommitDelay, tests only); a crash does
			// not wait for it.
			d.mu.Unlock()
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-d.crashNow:
			}
			t.Stop()
			d.mu.Lock()
		}
		batch, torn := d.queue, d.torn
		d.queue = d.spare[:0]
		d.mu.Unlock()
		if len(batch) == 0 {
			if len(torn) > 0 && d.failed == nil {
				d.writeTorn(torn)
			}
			return
		}
		err := d.failed
		if err != nil {
			err = fmt.Errorf("durable: not committed because an earlier group failed: %w", err)
		} else if err = d.logGroup(batch); err != nil {
			err = fmt.Errorf("durable: commit of %d submissions to the log in %s failed: %w", len(batch), d.dir, err)
			d.fail(err)
		} else {
			d.commits.Add(1)
		}
		for i, p := range batch {
			p.finish(err)
			batch[i] = nil
		}
		d.spare = batch[:0]
		if err == nil {
			d.throttle()
		}
	}
}

// fail makes err sticky: every later group and submission fails with it.
func (d *DB) fail(err error) {
	if d.failed == nil {
		d.failed = err
	}
	d.log.Error("durable: commit failed; refusing every later submission", "err", err)
	d.mu.Lock()
	if d.refuse == nil {
		d.refuse = err
	}
	d.mu.Unlock()
}

// logGroup writes batch to the log: one write, one fdatasync.
func (d *DB) logGroup(batch []*Pending) error {
	d.ckMu.Lock()
	ckErr := d.ckErr
	d.ckMu.Unlock()
	if ckErr != nil {
		return fmt.Errorf("an earlier checkpoint failed: %w", ckErr)
	}
	if d.testHookCommit != nil {
		if err := d.testHookCommit(); err != nil {
			return err
		}
	}
	first := d.nextIdx
	if d.wal.size >= walRotateBytes {
		if err := d.rotate(first); err != nil {
			return err
		}
	}
	buf, recs, n := d.encodeGroup(d.buf, first, batch)
	d.nextIdx += n
	if err := d.wal.write(buf); err != nil {
		return err
	}
	if !d.noSync {
		start := time.Now()
		if err := d.wal.sync(); err != nil {
			return err
		}
		if d.observe != nil {
			d.observe(time.Since(start))
		}
	}
	g := ckGroup{first: first, last: d.nextIdx - 1, size: len(buf) - recs}
	if !slices.ContainsFunc(batch, func(p *Pending) bool { return p.kind == kindRestore }) {
		// One record a submission (no Restore): the checkpointer applies
		// the submissions themselves, which are what the records encode,
		// and the buffer is the committer's again.
		g.subs = make([]sub, len(batch))
		for i, p := range batch {
			g.subs[i] = p.sub
		}
		if cap(buf) <= maxKeptBuf {
			d.buf = buf[:0]
		}
	} else {
		// A Restore's records are chunked by size: the checkpointer
		// decodes them from the bytes, which are its own from now on.
		g.buf = buf[recs:]
		d.buf = nil
	}
	d.handOff(g)
	return nil
}

// maxKeptBuf is the largest group buffer the committer keeps for the next
// group.
const maxKeptBuf = 1 << 20

// writeTorn writes batch as a group torn by a power loss (PowerLoss): its
// header and first record zeroed (only its header if it holds one record,
// so that a whole record follows the damage), not synced.
func (d *DB) writeTorn(batch []*Pending) {
	b, recs, _ := d.encodeGroup(nil, d.nextIdx, batch)
	if len(batch) > 1 || recs == 0 {
		_, n, _ := nextRecord(b[recs:])
		recs += n
	}
	clear(b[:recs])
	if err := d.wal.write(b); err != nil {
		d.log.Warn("durable: writing a torn group", "err", err)
	}
}

// encodeGroup appends to b[:0] the group of batch's submissions, the first
// record with index first, sealed for the current log file; its records
// start at recs, and there are n of them (a Restore is several).
func (d *DB) encodeGroup(b []byte, first uint64, batch []*Pending) (_ []byte, recs int, n uint64) {
	if !writeBareRecords {
		recs = groupHeaderLen
	}
	b = append(b[:0], make([]byte, recs)...)
	for _, p := range batch {
		var k uint64
		b, k = appendSub(b, first+n, &p.sub)
		n += k
	}
	if !writeBareRecords {
		sealGroup(b, d.wal.salt)
	}
	return b, recs, n
}

// writeBareRecords makes the committer write the older format, bare
// records with no file header and no groups: set by the test that shows
// the crash-state enumeration catches what groups fix.
var writeBareRecords = false

// rotate starts a new log file whose first record has index first: the
// one prepareNext prepared (waiting for it if it is not ready yet), and
// prepares the one after it.
func (d *DB) rotate(first uint64) error {
	p := <-d.prep
	d.preparing = false
	if p.err != nil {
		// Prepared long ago, perhaps while the disk was full: try once
		// more before the group (and every later one) fails.
		d.log.Warn("durable: preparing the next log file failed; retrying", "err", p.err)
		if p.l, p.err = prepareWAL(d.dir, d.prealloc, d.noSync, d.trace); p.err != nil {
			return p.err
		}
	}
	if err := installWAL(p.l, d.dir, first, d.noSync); err != nil {
		p.l.f.Close()
		return err
	}
	old := d.wal
	d.wal = p.l
	if err := old.f.Close(); err != nil {
		d.log.Warn("durable: closing a log file", "file", old.name, "err", err)
	}
	d.prepareNext()
	return nil
}

// prepared is the outcome of prepareNext.
type prepared struct {
	l   *logFile
	err error
}

// prepareNext prepares the next log file (prepareWAL) in the background,
// so that a rotation does not wait for its zeros to be written. Called by
// Open, then by the committer.
func (d *DB) prepareNext() {
	d.preparing = true
	go func() {
		if h := testHookPrepare; h != nil {
			if err := h(); err != nil {
				d.prep <- prepared{nil, err}
				return
			}
		}
		l, err := prepareWAL(d.dir, d.prealloc, d.noSync, d.trace)
		d.prep <- prepared{l, err}
	}()
}

// testHookPrepare, if set (tests only), runs before each background
// preparation of the next log file; an error fails that preparation.
var testHookPrepare func() error

// dropPrepared closes the prepared next log file once the committer has
// stopped, and removes it unless the DB crashed (a crash leaves it; Open
// removes it).
func (d *DB) dropPrepared() {
	if !d.preparing {
		return
	}
	d.preparing = false
	p := <-d.prep
	if p.err != nil {
		return
	}
	p.l.f.Close()
	if !d.crashed.Load() {
		_ = os.Remove(filepath.Join(d.dir, p.l.name))
	}
}

// ckGroup is a logged group awaiting its checkpoint: its submissions, one
// record each from index first on, or (a group with a Restore, which is
// several records) its records as written.
type ckGroup struct {
	subs        []sub
	buf         []byte
	first, last uint64 // indexes of its first and last records
	size        int    // bytes of its records
}

// handOff queues a logged group for the checkpointer.
func (d *DB) handOff(g ckGroup) {
	d.ckMu.Lock()
	wasEmpty := len(d.ckq) == 0
	d.ckq = append(d.ckq, g)
	d.ckBytes += g.size
	d.ckLast = g.last
	urgent := d.ckBytes >= checkpointBytes
	d.ckMu.Unlock()
	if wasEmpty {
		signal(d.ckKick)
	}
	if urgent {
		signal(d.ckUrgent)
	}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// throttle waits while too much awaits a checkpoint.
func (d *DB) throttle() {
	d.ckMu.Lock()
	defer d.ckMu.Unlock()
	for d.ckBytes > maxUncheckpointed && d.ckErr == nil {
		signal(d.ckUrgent)
		d.ckCond.Wait()
	}
}

// checkpointer applies logged groups to the bbolt file, checkpointInterval
// after the first group it does not cover (at once when checkpointBytes
// await it), then deletes the log files the checkpoint covers. At Close it
// checkpoints everything; after a Crash it stops without a checkpoint.
func (d *DB) checkpointer() {
	defer close(d.ckDone)
	// A fault on the mapping (the file truncated under us) panics instead
	// of killing the process; checkpoint recovers it.
	debug.SetPanicOnFault(true)
	for {
		select {
		case <-d.ckKick:
		case <-d.ckQuit:
			d.finalCheckpoint()
			return
		}
		t := time.NewTimer(checkpointInterval)
		select {
		case <-t.C:
		case <-d.ckUrgent:
		case <-d.ckQuit:
			t.Stop()
			d.finalCheckpoint()
			return
		}
		t.Stop()
		d.checkpointQueued()
	}
}

func (d *DB) finalCheckpoint() {
	if !d.crashed.Load() {
		d.checkpointQueued()
	}
}

// maxKeptRecs is the most records the checkpointer keeps room for between
// checkpoints.
const maxKeptRecs = 1 << 14

// checkpointQueued checkpoints every queued group.
func (d *DB) checkpointQueued() {
	d.ckMu.Lock()
	q, failed := d.ckq, d.ckErr
	d.ckq = nil
	d.ckMu.Unlock()
	if len(q) == 0 || failed != nil {
		return
	}
	recs := d.recs[:0]
	var err error
	size, chunk := 0, 0
	for _, g := range q {
		size += g.size
		if g.subs != nil {
			for i := range g.subs {
				recs = append(recs, logged{idx: g.first + uint64(i), sub: g.subs[i]})
			}
			if chunk += g.size; err == nil && chunk >= checkpointChunk {
				err = d.checkpoint(recs)
				clear(recs)
				recs, chunk = recs[:0], 0
			}
			continue
		}
		for off := 0; off < len(g.buf) && err == nil; {
			p, n, ok := nextRecord(g.buf[off:])
			if !ok {
				err = errors.New("a record in memory fails its checksum")
				break
			}
			var r logged
			r.idx, r.sub, err = decodeRecord(p)
			recs = append(recs, r)
			off += n
			if chunk += n; err == nil && chunk >= checkpointChunk {
				err = d.checkpoint(recs)
				clear(recs)
				recs, chunk = recs[:0], 0
			}
		}
	}
	if err == nil {
		err = d.checkpoint(recs)
	}
	// Keep the slice for the next checkpoint (unless a large one grew it),
	// not what it held.
	clear(recs)
	if d.recs = recs[:0]; cap(recs) > maxKeptRecs {
		d.recs = nil
	}
	last := q[len(q)-1].last
	d.ckMu.Lock()
	d.ckBytes -= size
	if err != nil {
		err = fmt.Errorf("durable: checkpoint of the log up to index %d into %s failed: %w", last, d.path, err)
		d.ckErr = err
	} else {
		d.ckIdx = last
	}
	d.ckCond.Broadcast()
	d.ckMu.Unlock()
	if err != nil {
		d.log.Error("durable: checkpoint failed; refusing every later submission", "err", err)
		d.mu.Lock()
		if d.refuse == nil {
			d.refuse = err
		}
		d.mu.Unlock()
		return
	}
	d.checkpoints.Add(1)
	d.removeCovered(last)
}

// removeCovered deletes the log files whose every record has an index of at
// most last (never the newest file, which the committer may be writing).
func (d *DB) removeCovered(last uint64) {
	files, err := listWAL(d.dir)
	var old []walFile
	for i := 0; i+1 < len(files); i++ {
		if files[i+1].first <= last+1 {
			old = append(old, files[i])
		}
	}
	if err == nil {
		err = removeWAL(d.dir, old, d.noSync, d.trace)
	}
	if err != nil {
		d.log.Warn("durable: removing checkpointed log files", "dir", d.dir, "err", err)
	}
}

// checkpoint applies recs (consecutive, following the last checkpointed
// index) in one bbolt transaction that also records the last one's index.
func (d *DB) checkpoint(recs []logged) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = contentError{fmt.Errorf("bbolt panicked: %v", r)}
		}
	}()
	if len(recs) == 0 {
		return nil
	}
	cs := d.cs
	d.arena.reset()
	err = d.bolt.Update(func(tx *bolt.Tx) error {
		var g group
		if err := g.init(tx, &cs, &d.arena, d.maxReqs); err != nil {
			return contentError{err}
		}
		for i := range recs {
			r := &recs[i]
			if r.idx != cs.logged+1 {
				return contentError{fmt.Errorf("log record %d does not follow the checkpoint at %d", r.idx, cs.logged)}
			}
			if err := g.apply(&r.sub); err != nil {
				return contentError{fmt.Errorf("log record %d: %w", r.idx, err)}
			}
			cs.logged = r.idx
		}
		g.loggedDirty = true
		if err := g.finish(); err != nil {
			return contentError{err}
		}
		if testHookCheckpointCommit != nil {
			return testHookCheckpointCommit()
		}
		return nil
	})
	if err == nil {
		d.cs = cs
	}
	return err
}

// contentError is a checkpoint's failure that comes from what it reads
// (records that do not follow or apply, a missing bucket, bbolt
// panicking on the file), not from writing it (bbolt's commit: a full
// disk, an I/O error). Open's replay reports the first as corruption and the
// second as it is: a node must not set aside a directory it merely could
// not write.
type contentError struct{ err error }

func (e contentError) Error() string { return e.err.Error() }
func (e contentError) Unwrap() error { return e.err }

// testHookCheckpointCommit, if set (tests only), is the error of a
// checkpoint's commit, as bbolt's would be if the disk refused it.
var testHookCheckpointCommit func() error

// group applies submissions inside one transaction.
type group struct {
	tx                *bolt.Tx
	items, meta, reqs *bolt.Bucket
	cs                *committed
	a                 *arena
	maxReqs           int
	appliedDirty      bool
	epochDirty        bool
	digestDirty       bool
	formatDirty       bool
	loggedDirty       bool
	unreconciledDirty bool
	leadershipDirty   bool
	incarnationDirty  bool
}

func (g *group) init(tx *bolt.Tx, cs *committed, a *arena, maxReqs int) error {
	*g = group{tx: tx, cs: cs, a: a, maxReqs: maxReqs,
		items: tx.Bucket(bucketItems), meta: tx.Bucket(bucketMeta), reqs: tx.Bucket(bucketRequests)}
	if g.items == nil || g.meta == nil || g.reqs == nil {
		return errors.New("a bucket is missing")
	}
	return nil
}

func (g *group) apply(p *sub) error {
	switch p.kind {
	case kindAppend:
		for _, e := range p.entries {
			if e.Version.Seq != g.cs.applied.Seq+1 {
				return fmt.Errorf("entry %s does not follow %s", e.Version, g.cs.applied)
			}
			switch e.Op {
			case store.OpSet:
				g.stage(e.Key, store.Item{Value: e.Value, Version: e.Version})
			case store.OpDelete:
				g.stage(e.Key, store.Item{Deleted: true, Version: e.Version})
			}
			if e.ReqID != "" {
				if err := g.addRequest(store.Request{ID: e.ReqID, Version: e.Version}); err != nil {
					return fmt.Errorf("entry %s: %w", e.Version, err)
				}
			}
			g.cs.applied = e.Version
			g.appliedDirty = true
		}
	case kindRestore:
		g.reconciled()
		return g.restore(p.snap)
	case kindRestoreBegin:
		g.reconciled()
		return g.restoreBegin(p.snap)
	case kindRestoreItems:
		if err := g.flush(); err != nil {
			return err
		}
		return g.restoreItems(p.snap)
	case kindReconciled:
		g.reconciled()
	case kindIncarnation:
		if p.inc != g.cs.incarnation {
			g.cs.incarnation = p.inc
			g.incarnationDirty = true
		}
	case kindPromise, kindPromiseLeadership:
		switch {
		case p.epoch > g.cs.epoch:
			g.cs.epoch, g.cs.leader, g.cs.nonce = p.epoch, p.leader, p.nonce
			g.epochDirty, g.leadershipDirty = true, true
		case p.epoch == g.cs.epoch && g.cs.nonce == 0 && p.nonce != 0:
			g.cs.leader, g.cs.nonce = p.leader, p.nonce
			g.leadershipDirty = true
		}
	}
	return nil
}

// reconciled clears the unreconciled mark.
func (g *group) reconciled() {
	if g.cs.unreconciled {
		g.cs.unreconciled = false
		g.unreconciledDirty = true
	}
}

// stage records that key's item is it as of the end of the transaction:
// a key written many times in one checkpoint (a hot key) is put once, by
// flush, instead of once for each write.
func (g *group) stage(key string, it store.Item) {
	if g.a.staged == nil {
		g.a.staged = make(map[string]store.Item)
	}
	g.a.staged[key] = it
}

// flush puts the staged items, in key order (sequential inserts), and
// empties the stage.
func (g *group) flush() error {
	if len(g.a.staged) == 0 {
		return nil
	}
	keys := g.a.keys[:0]
	for k := range g.a.staged {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if err := g.putItem(k, g.a.staged[k]); err != nil {
			return fmt.Errorf("key %q: %w", k, err)
		}
	}
	g.a.keys = keys
	g.a.unstage()
	return nil
}

func (g *group) putItem(key string, it store.Item) error {
	k := g.a.bytes(key)
	if old := g.items.Get(k); old != nil {
		g.cs.dg.Items--
		g.cs.dg.ItemSum -= uint64(storedCRC(old))
	}
	start := g.a.begin()
	g.a.buf = appendItem(g.a.buf, it)
	rec := g.a.end(start)
	crc := seal(bucketItems, k, rec)
	if err := g.items.Put(k, rec); err != nil {
		return err
	}
	g.cs.dg.Items++
	g.cs.dg.ItemSum += uint64(crc)
	g.digestDirty = true
	return nil
}

func (g *group) addRequest(r store.Request) error {
	start := len(g.a.buf)
	g.a.buf = binary.BigEndian.AppendUint64(g.a.buf, g.cs.nextReq)
	k := g.a.end(start)
	start = g.a.begin()
	g.a.buf = appendRequest(g.a.buf, r)
	rec := g.a.end(start)
	crc := seal(bucketRequests, k, rec)
	if err := g.reqs.Put(k, rec); err != nil {
		return err
	}
	g.cs.nextReq++
	g.cs.dg.Reqs++
	g.cs.dg.ReqSum += uint64(crc)
	g.digestDirty = true
	return nil
}

func (g *group) restore(snap store.Snapshot) error {
	if err := g.restoreBegin(store.Snapshot{Applied: snap.Applied, Requests: snap.Requests}); err != nil {
		return err
	}
	return g.restoreItems(snap)
}

// restoreBegin starts a restore: no items, snap's request ids and
// position.
func (g *group) restoreBegin(snap store.Snapshot) error {
	g.a.unstage() // items the restore replaces
	for _, name := range [][]byte{bucketItems, bucketRequests} {
		if err := g.tx.DeleteBucket(name); err != nil {
			return err
		}
		if _, err := g.tx.CreateBucket(name); err != nil {
			return err
		}
	}
	g.items, g.reqs = g.tx.Bucket(bucketItems), g.tx.Bucket(bucketRequests)
	g.cs.dg = digest{}
	g.cs.nextReq = 1
	g.digestDirty = true
	reqs := snap.Requests
	if len(reqs) > g.maxReqs {
		reqs = reqs[len(reqs)-g.maxReqs:]
	}
	for _, r := range reqs {
		if err := g.addRequest(r); err != nil {
			return fmt.Errorf("restore of request %q: %w", r.ID, err)
		}
	}
	g.cs.applied = snap.Applied
	g.appliedDirty = true
	return nil
}

// restoreItems adds snap's items to a restore under way.
func (g *group) restoreItems(snap store.Snapshot) error {
	for _, k := range slices.Sorted(maps.Keys(snap.Items)) { // sorted: sequential inserts
		if err := g.putItem(k, snap.Items[k]); err != nil {
			return fmt.Errorf("restore of key %q: %w", k, err)
		}
	}
	return nil
}

// evictSlack is how far past MaxRequests the requests bucket may grow
// before the oldest are deleted, as a fraction of MaxRequests: each
// checkpoint then deletes about as many as it added. (Letting it grow to
// twice the bound and deleting half at once made one checkpoint in a while
// so long that the log writer stalled behind it, for 300 ms and more.)
const evictSlack = 64

// finish puts the staged items, evicts old requests and writes the meta
// records that changed.
func (g *group) finish() error {
	if err := g.flush(); err != nil {
		return err
	}
	if g.maxReqs > 0 && g.cs.dg.Reqs > uint64(g.maxReqs+g.maxReqs/evictSlack) {
		c := g.reqs.Cursor()
		for g.cs.dg.Reqs > uint64(g.maxReqs) {
			k, v := c.First()
			if k == nil {
				return fmt.Errorf("bucket %q is empty but %d requests are counted", bucketRequests, g.cs.dg.Reqs)
			}
			g.cs.dg.ReqSum -= uint64(storedCRC(v))
			if err := c.Delete(); err != nil {
				return err
			}
			g.cs.dg.Reqs--
		}
	}
	put := func(key []byte, fill func([]byte) []byte) error {
		start := g.a.begin()
		g.a.buf = fill(g.a.buf)
		rec := g.a.end(start)
		seal(bucketMeta, key, rec)
		return g.meta.Put(key, rec)
	}
	var errs []error
	if g.appliedDirty {
		errs = append(errs, put(keyApplied, func(b []byte) []byte { return appendVersion(b, g.cs.applied) }))
	}
	if g.epochDirty {
		errs = append(errs, put(keyEpoch, func(b []byte) []byte { return binary.BigEndian.AppendUint64(b, uint64(g.cs.epoch)) }))
	}
	if g.leadershipDirty {
		errs = append(errs, put(keyLeadership, func(b []byte) []byte { return appendLeadership(b, g.cs.leader, g.cs.nonce) }))
	}
	if g.incarnationDirty {
		errs = append(errs, put(keyIncarnation, func(b []byte) []byte { return append(b, g.cs.incarnation...) }))
	}
	if g.digestDirty {
		errs = append(errs, put(keyDigest, g.cs.dg.append))
	}
	if g.loggedDirty {
		errs = append(errs, put(keyLogged, func(b []byte) []byte { return binary.BigEndian.AppendUint64(b, g.cs.logged) }))
	}
	if g.unreconciledDirty {
		errs = append(errs, put(keyUnreconciled, func(b []byte) []byte {
			if g.cs.unreconciled {
				return append(b, 1)
			}
			return append(b, 0)
		}))
	}
	if g.formatDirty {
		errs = append(errs, put(keyFormat, func(b []byte) []byte { return binary.BigEndian.AppendUint32(b, formatVersion) }))
	}
	return errors.Join(errs...)
}

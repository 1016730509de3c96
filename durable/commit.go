package durable

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"runtime/debug"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/kvstore/kvstore/store"
)

// run is the committer: it takes every queued submission, commits them in
// one transaction (one fsync) and signals them; submissions that arrive
// meanwhile form the next group.
func (d *DB) run() {
	defer close(d.stopped)
	// A fault on the mapping (the file truncated under us) panics instead
	// of killing the process; commit recovers it.
	debug.SetPanicOnFault(true)
	for {
		d.mu.Lock()
		for len(d.queue) == 0 && !d.closing {
			d.cond.Wait()
		}
		if d.delay > 0 && !d.closing {
			d.mu.Unlock()
			time.Sleep(d.delay) // a slow disk (Options.CommitDelay, tests only)
			d.mu.Lock()
		}
		batch := d.queue
		d.queue = d.spare[:0]
		d.mu.Unlock()
		if len(batch) == 0 {
			return
		}
		err := d.failed
		if err != nil {
			err = fmt.Errorf("durable: not committed because an earlier group failed: %w", err)
		} else if err = d.commit(batch); err != nil {
			err = fmt.Errorf("durable: commit of %d submissions to %s failed: %w", len(batch), d.path, err)
			d.failed = err
			d.log.Error("durable: commit failed; refusing every later submission", "err", err)
			d.mu.Lock()
			if d.refuse == nil {
				d.refuse = err
			}
			d.mu.Unlock()
		} else {
			d.commits.Add(1)
		}
		for i, p := range batch {
			p.finish(err)
			batch[i] = nil
		}
		d.spare = batch[:0]
	}
}

// commit applies batch in one bbolt transaction.
func (d *DB) commit(batch []*Pending) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("bbolt panicked: %v", r)
		}
	}()
	cs := d.cs
	d.arena.reset()
	err = d.bolt.Update(func(tx *bolt.Tx) error {
		if d.testHookCommit != nil {
			if err := d.testHookCommit(); err != nil {
				return err
			}
		}
		var g group
		if err := g.init(tx, &cs, &d.arena, d.maxReqs); err != nil {
			return err
		}
		for _, p := range batch {
			if err := g.apply(p); err != nil {
				return err
			}
		}
		return g.finish()
	})
	if err == nil {
		d.cs = cs
	}
	return err
}

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
}

func (g *group) init(tx *bolt.Tx, cs *committed, a *arena, maxReqs int) error {
	*g = group{tx: tx, cs: cs, a: a, maxReqs: maxReqs,
		items: tx.Bucket(bucketItems), meta: tx.Bucket(bucketMeta), reqs: tx.Bucket(bucketRequests)}
	if g.items == nil || g.meta == nil || g.reqs == nil {
		return errors.New("a bucket is missing")
	}
	return nil
}

func (g *group) apply(p *Pending) error {
	switch p.kind {
	case kindAppend:
		for _, e := range p.entries {
			if e.Version.Seq != g.cs.applied.Seq+1 {
				return fmt.Errorf("entry %s does not follow %s", e.Version, g.cs.applied)
			}
			var err error
			switch e.Op {
			case store.OpSet:
				err = g.putItem(e.Key, store.Item{Value: e.Value, Version: e.Version})
			case store.OpDelete:
				err = g.putItem(e.Key, store.Item{Deleted: true, Version: e.Version})
			}
			if err == nil && e.ReqID != "" {
				err = g.addRequest(store.Request{ID: e.ReqID, Version: e.Version})
			}
			if err != nil {
				return fmt.Errorf("entry %s: %w", e.Version, err)
			}
			g.cs.applied = e.Version
			g.appliedDirty = true
		}
	case kindRestore:
		return g.restore(p.snap)
	case kindPromise:
		if p.epoch > g.cs.epoch {
			g.cs.epoch = p.epoch
			g.epochDirty = true
		}
	}
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
	for _, k := range slices.Sorted(maps.Keys(snap.Items)) { // sorted: sequential inserts
		if err := g.putItem(k, snap.Items[k]); err != nil {
			return fmt.Errorf("restore of key %q: %w", k, err)
		}
	}
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

// finish evicts old requests and writes the meta records that changed.
func (g *group) finish() error {
	if g.maxReqs > 0 && g.cs.dg.Reqs > 2*uint64(g.maxReqs) {
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
	if g.digestDirty {
		errs = append(errs, put(keyDigest, g.cs.dg.append))
	}
	if g.formatDirty {
		errs = append(errs, put(keyFormat, func(b []byte) []byte { return binary.BigEndian.AppendUint32(b, formatVersion) }))
	}
	return errors.Join(errs...)
}

package node

// The replicated state (docs/design.md, State per node and Durability):
// what a node has applied, what it has promised, whether it must be
// reconciled, and the durable copy of all of it.

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/durable"
	"github.com/kvstore/kvstore/store"
)

// replica owns a node's replicated state: the store (every entry the node
// applied), the promise (the epoch it accepted, and the leadership it
// accepted it from), whether it is recovering, and, with a data directory,
// the durable copy of all of it with its unreconciled mark.
//
// Every change goes through its methods, which apply it to the store and
// submit it to the durable copy under one lock, in the same order, and
// return the submission to wait for before anyone is told of the result (a
// follower's answer, the leader's count of its own entry). Submissions
// commit in order, so once the one returned is durable, so is everything
// the state held when the method returned. Without a data directory every
// submission is nil and waiting is free.
//
// Each change is reported to events under the lock, in order: the read
// cache drops what a change makes stale there, and a bounded history of
// changes (revisions, watches) would be fed the same way. The store is
// reached only here, so an ordered store can replace it behind the same
// methods.
type replica struct {
	events stateEvents

	// disk is the durable copy (nil without Config.DataDir); restored
	// reports that the store was loaded from it and a leader had
	// reconciled it. Both are set by open, before the node runs.
	disk     *durable.DB
	restored bool

	// mu guards everything below. Lock order: leader.mu, then mu, then a
	// cache shard's lock.
	mu    sync.Mutex
	store *store.Store
	// promised is the highest epoch promised, to the leadership ld (zero:
	// none known): a second leadership of the same epoch is refused.
	promised int64
	ld       leadership
	// recovering: a voter that lost its store waits for a leader to
	// reconcile it (a snapshot, or its own takeover).
	recovering bool
	// ignoredMark: the durable unreconciled mark was set when the
	// directory was opened, and Faults.ForgetUnreconciled made the node
	// ignore it; it stays on disk until a restore clears it (tests only).
	ignoredMark bool
	// unreconciled is the durable mark as submitted: no leader reconciled
	// the data directory since it was created.
	unreconciled bool
	last         *durable.Pending // the latest submission, nil if none
	// promise is the latest submission of a promise (nil if none): a
	// follower answers early only once it is durable.
	promise *durable.Pending
	// flushing are the entries a follower applied, as submissions not yet
	// known durable, oldest first, each with the store's position once
	// they were applied; onDisk is the position of the latest one found
	// durable (zero: none since the store was last replaced). An early
	// answer reports onDisk (durableLocked).
	flushing []flushMark
	onDisk   store.Version
	// moved is closed, and replaced, whenever the store's position or
	// the promise changes: a pipelined Append that arrived before its
	// predecessor waits on it (appendEntries), if this process took an
	// Append of its leadership already (took).
	moved   chan struct{}
	took    leadership
	waiting int // Appends waiting on moved

	// promisedA mirrors promised for lock-free reads (the read path).
	promisedA atomic.Int64
}

// stateEvents is told of each change of a replica's state, under its lock
// and in order. Implementations must not call back into the replica.
type stateEvents interface {
	// promised: a later epoch was promised; what older leaders granted
	// is void.
	promised(epoch int64)
	// applied: entry e changed the store (a no-op changes only the
	// position).
	applied(e store.Entry)
	// restored: the store was replaced by a snapshot.
	restored()
}

func newReplica(maxRequests int, events stateEvents) *replica {
	return &replica{events: events, store: store.New(maxRequests), moved: make(chan struct{})}
}

// movedLocked wakes the Appends waiting for the position or the promise
// to change. Callers hold r.mu.
func (r *replica) movedLocked() {
	close(r.moved)
	r.moved = make(chan struct{})
}

// open adopts db, the durable copy, and st, the state it held (with the
// unreconciled mark as the node decided to read it).
func (r *replica) open(db *durable.DB, st durable.State) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.disk = db
	r.unreconciled = st.Unreconciled
	if st.Fresh {
		return
	}
	r.store.Restore(st.Snapshot)
	r.promised = st.AcceptedEpoch
	r.promisedA.Store(st.AcceptedEpoch)
	r.ld = leadership{id: st.AcceptedLeader, nonce: st.AcceptedLeadership}
	// Files no leader reconciled since they were created (a lost or
	// set-aside directory, restarted again; a crash right after creating
	// them) are not restored data, whatever they hold.
	r.restored = !st.Unreconciled
}

// persistent reports whether the state has a durable copy.
func (r *replica) persistent() bool { return r.disk != nil }

// epoch is the highest epoch promised, without the lock.
func (r *replica) epoch() int64 { return r.promisedA.Load() }

// applied is the store's position: the last entry applied.
func (r *replica) applied() store.Version {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.store.Applied()
}

// get returns key's item (tombstones included).
func (r *replica) get(key string) (store.Item, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.store.Get(key)
}

// keys lists the live keys, sorted.
func (r *replica) keys() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.store.Keys()
}

// view freezes the whole state, for a follower that needs it: constant
// time (store.View), readable while the store goes on changing.
func (r *replica) view() *store.View {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.store.View()
}

// isRecovering reports whether the replica waits to be reconciled.
func (r *replica) isRecovering() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.recovering
}

// isUnreconciled reports whether the durable unreconciled mark is set as
// far as the replica has submitted (a submitted clear may not be on disk
// yet), whether the node heeds it or not.
func (r *replica) isUnreconciled() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.unreconciled || r.ignoredMark
}

// hasData reports whether the replica restored data that counts: a
// position or a promise. A node with none may bootstrap a new cluster.
func (r *replica) hasData() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.restored && (r.store.Applied() != store.Version{} || r.promised > 0)
}

// whenCurrent runs f, under the lock, if epoch is still the epoch promised
// and the store holds no later version of key than v: no change of the
// state comes between the check and f, which is given what the store
// holds of key. The read cache installs a copy this way, so that no
// invalidation can overtake it.
func (r *replica) whenCurrent(epoch int64, key string, v store.Version, f func(held store.Item, ok bool)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if epoch != r.promised {
		return
	}
	it, ok := r.store.Get(key)
	if ok && v.Less(it.Version) {
		return
	}
	f(it, ok)
}

// exclusive runs f, under the lock, between two changes of the state: the
// read cache drops its copies this way when the node stops serving, so
// that no install in flight (whenCurrent) passes the drop.
func (r *replica) exclusive(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f()
}

// standing is a replica's answer to a leader's message.
type standing struct {
	// refused: the message is stale (an epoch below the promise) or of
	// another leadership of the promised epoch (other); it changed nothing.
	refused, other bool
	// ok: the message was taken (for an Append: its entries follow the
	// position, or its snapshot was restored or is a late copy).
	ok bool
	// promised and to: the promise after the message.
	promised int64
	to       leadership
	// applied is the position after the message; reconcile reports that
	// the replica needs a leader's snapshot before it counts (it is
	// recovering, or its data directory still carries the mark).
	applied   store.Version
	reconcile bool
	// early: the answer may go before the message's entries are on disk
	// (appendEntries with early); onDisk is then the position known to be
	// on disk.
	early  bool
	onDisk store.Version
}

// flushMark is a submission of entries and the store's position once they
// were applied: when it is durable, so is the state at pos.
type flushMark struct {
	p   *durable.Pending
	pos store.Version
}

// maxFlushMarks bounds flushing (a disk that stalls while entries keep
// coming): the oldest mark goes, which only delays what onDisk learns,
// since submissions become durable in order.
const maxFlushMarks = 64

// durableLocked is the latest position of the store known to be on disk:
// onDisk, moved on past every mark found durable. Callers hold r.mu.
func (r *replica) durableLocked() store.Version {
	i := 0
	for ; i < len(r.flushing) && r.flushing[i].p.Durable(); i++ {
		r.onDisk = r.flushing[i].pos
	}
	if i > 0 {
		n := copy(r.flushing, r.flushing[i:])
		clear(r.flushing[n:])
		r.flushing = r.flushing[:n]
	}
	return r.onDisk
}

// standingLocked is the answer with the replica's current state.
func (r *replica) standingLocked(ok bool) standing {
	return standing{ok: ok, promised: r.promised, to: r.ld, applied: r.store.Applied(), reconcile: r.recovering || r.unreconciled}
}

// refusesLocked reports whether a message of the leadership ld of epoch
// is refused as stale: the epoch is below the promise, or is the promised
// epoch but promised to another leadership (a coordinator that handed the
// same epoch out twice).
func (r *replica) refusesLocked(epoch int64, ld leadership) (refuse, other bool) {
	if epoch < r.promised {
		return true, false
	}
	other = epoch == r.promised && ld.nonce != 0 && r.ld.nonce != 0 && ld != r.ld
	return other, other
}

// admitLocked checks a leader's message of epoch from ld: refused, it
// returns the answer to send; otherwise it promises epoch to ld (raising
// the promise, or recording ld for a promise that named none).
func (r *replica) admitLocked(epoch int64, ld leadership) (standing, bool) {
	if refuse, other := r.refusesLocked(epoch, ld); refuse {
		st := r.standingLocked(false)
		st.refused, st.other = true, other
		return st, false
	}
	switch {
	case epoch > r.promised:
		r.promised, r.ld = epoch, ld
		r.promisedA.Store(epoch)
		r.events.promised(epoch)
		r.movedLocked()
	case epoch == r.promised && r.ld.nonce == 0 && ld.nonce != 0:
		r.ld = ld
	default:
		return standing{}, true
	}
	if r.disk != nil {
		r.promise = r.submittedLocked(r.disk.PromiseLeadership(epoch, ld.id, ld.nonce))
	}
	return standing{}, true
}

// prepare promises epoch to ld (a takeover's first step) and answers with
// the replica's position.
func (r *replica) prepare(epoch int64, ld leadership) (standing, *durable.Pending) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if st, ok := r.admitLocked(epoch, ld); !ok {
		return st, nil
	}
	return r.standingLocked(true), r.last
}

// viewFor promises epoch to ld and returns the whole state, frozen: the
// leader adopts it as committed history.
func (r *replica) viewFor(epoch int64, ld leadership) (standing, *store.View, *durable.Pending) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if st, ok := r.admitLocked(epoch, ld); !ok {
		return st, nil, nil
	}
	return r.standingLocked(true), r.store.View(), r.last
}

// admit promises epoch to ld, for a message that changes nothing else (a
// snapshot chunk being staged): refused, it returns the answer to send
// and ok false.
func (r *replica) admit(epoch int64, ld leadership) (st standing, p *durable.Pending, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if st, ok := r.admitLocked(epoch, ld); !ok {
		return st, nil, false
	}
	return r.standingLocked(true), r.last, true
}

// appendEntries applies entries from the leader of epoch (ld) that follow
// prev, if prev is the store's position (ok false otherwise: the leader
// backfills). The entries were validated (validateAppend); an entry the
// store refuses anyway is an error, and the entries before it stay
// applied.
//
// Entries do not reconcile a recovering replica: a prefix of the leader's
// history may stop short of entries it acknowledged before it lost its
// store and the leader already counted as committed (with base 0 the
// prefix starts from an empty store). Reconcile asks for the snapshot,
// which holds them.
//
// With early (the leader takes an early answer), a replica with a data
// directory whose promise is on disk and that needs no reconciling answers
// early (standing.early, with the position known on disk): entries at
// once, their cached copies dropped by then (events.applied), and entries
// that do not follow its position (ok false) at once too; no entries (the
// leader waits for the disk) once the oldest entries not known on disk
// are, the submission returned, after which onDiskNow is the position to
// report. Otherwise the answer waits for the submission returned.
//
// With pipelined (the leader sent earlier Appends that may still be in
// flight), entries whose prev is past the position wait, until ctx ends,
// for the position to move, and are looked at again: the server runs
// calls concurrently, so an Append may overtake its predecessor.
func (r *replica) appendEntries(ctx context.Context, epoch int64, ld leadership, prev store.Version, entries []store.Entry, early, pipelined bool) (standing, *durable.Pending, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		if st, ok := r.admitLocked(epoch, ld); !ok {
			return st, nil, nil
		}
		if !pipelined || prev.Seq <= r.store.Applied().Seq || r.took != ld || r.recovering || r.unreconciled {
			// Not behind an Append in flight: a process that took none of
			// this leadership (it restarted, say) or must be reconciled
			// answers at once.
			break
		}
		moved := r.moved
		r.waiting++
		r.mu.Unlock()
		select {
		case <-moved:
			r.mu.Lock()
			r.waiting--
		case <-ctx.Done():
			r.mu.Lock()
			r.waiting--
			return standing{}, nil, fmt.Errorf("waiting for the Appends before %s (at %s): %w", prev, r.store.Applied(), ctx.Err())
		}
	}
	if prev != r.store.Applied() {
		st := r.standingLocked(false)
		if r.answersEarlyLocked(early, st) {
			// Its position, at once: a leader whose Append to it timed
			// out on its disk resends from the last position it heard of,
			// which this replica applied past.
			st.early, st.onDisk = true, r.durableLocked()
			return st, nil, nil
		}
		return st, r.last, nil
	}
	dups := make([]bool, 0, len(entries))
	for i, e := range entries {
		dup, err := r.store.Apply(e)
		if err != nil {
			r.markLocked(r.persistEntriesLocked(entries[:i], dups))
			if i > 0 {
				r.movedLocked()
			}
			return r.standingLocked(false), r.last, fmt.Errorf("%w: %w", kvstore.ErrBadRequest, err)
		}
		dups = append(dups, dup)
		r.events.applied(e)
	}
	r.markLocked(r.persistEntriesLocked(entries, dups))
	r.took = ld
	if len(entries) > 0 {
		r.movedLocked()
	}
	st := r.standingLocked(true)
	if r.answersEarlyLocked(early, st) {
		st.onDisk = r.durableLocked()
		if len(entries) > 0 {
			st.early = true
			return st, nil, nil
		}
		if len(r.flushing) > 0 {
			st.early = true
			return st, r.flushing[0].p, nil
		}
	}
	return st, r.last, nil
}

// answersEarlyLocked reports whether an Append the leader asked an early
// answer of (early) may have one: the replica has a data directory, its
// promise is on disk and it needs no reconciling. Callers hold r.mu.
func (r *replica) answersEarlyLocked(early bool, st standing) bool {
	return early && r.disk != nil && !st.reconcile && (r.promise == nil || r.promise.Durable())
}

// onDiskNow is durableLocked, taking the lock.
func (r *replica) onDiskNow() store.Version {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.durableLocked()
}

// markLocked records p, the submission of entries just applied, with the
// store's position (nil p: nothing was submitted).
func (r *replica) markLocked(p *durable.Pending) {
	if p == nil {
		return
	}
	if len(r.flushing) == maxFlushMarks {
		r.flushing = append(r.flushing[:0], r.flushing[1:]...)
	}
	r.flushing = append(r.flushing, flushMark{p: p, pos: r.store.Applied()})
}

// installSnapshot restores the state of the leader of epoch (ld) at its
// last entry: it holds everything committed, and everything this replica
// acknowledged before it lost its store, so it reconciles the replica.
//
// Within one leader's epoch history is linear: a snapshot behind the
// position is a late copy, and changes nothing. A later leader's state is
// never behind a position of an earlier epoch (its snapshot is at least at
// its own no-op): such a snapshot is refused with ErrBadRequest.
func (r *replica) installSnapshot(epoch int64, ld leadership, snap store.Snapshot) (standing, *durable.Pending, error) {
	return r.installView(epoch, ld, snap.View())
}

// installView is installSnapshot of a frozen state (a snapshot received
// in chunks and staged): the store is replaced at once, under the lock,
// so no one sees a state part old and part new.
func (r *replica) installView(epoch int64, ld leadership, v *store.View) (standing, *durable.Pending, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if st, ok := r.admitLocked(epoch, ld); !ok {
		return st, nil, nil
	}
	if applied := r.store.Applied(); v.Applied().Less(applied) {
		if applied.Epoch == epoch {
			return r.standingLocked(true), r.last, nil
		}
		return r.standingLocked(false), r.last, badRequest("snapshot at %s (epoch %d) is behind this node's position %s of an earlier epoch", v.Applied(), epoch, applied)
	}
	r.restoreLocked(v)
	r.recovering = false
	// The leadership's Appends follow the snapshot, several in flight:
	// one that overtakes its predecessor waits for it, as after an Append
	// this process took (else each would be refused, and the leader, after
	// a few such refusals, would send one Append at a time for the rest
	// of its leadership).
	r.took = ld
	return r.standingLocked(true), r.last, nil
}

// restore replaces the state with v, the most up-to-date state of a
// majority that a new leader (epoch, ld) adopts, if the replica still
// promises that leadership (ownedLocked).
func (r *replica) restore(epoch int64, ld leadership, v *store.View) (*durable.Pending, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.ownedLocked(epoch, ld); err != nil {
		return nil, err
	}
	r.restoreLocked(v)
	return r.last, nil
}

// ownedLocked fails with ErrNotLeader unless the replica promises epoch to
// ld: what a taking-over leader checks, under the lock, before it changes
// the store as its own (restore, adopted, openEpoch). A takeover runs for
// a while (it may pull a whole state), and meanwhile this node may
// promise a later leader and take, and acknowledge, its entries; the
// takeover must then change nothing, or it would replace entries a
// majority counted on. (The leader's context ends with such a promise,
// but a step already past its last look at the context would go on.)
// Today no later leader reaches a node while its takeover runs: a leader
// reaches members only, and the node opens no new session until its
// leadership ended (session.go, serve). The fence does not rest on that.
func (r *replica) ownedLocked(epoch int64, ld leadership) error {
	if r.promised != epoch || r.ld != ld {
		return fmt.Errorf("%w (taking over epoch %d as %s: promised epoch %d to %s)", kvstore.ErrNotLeader, epoch, ld.id, r.promised, r.ld.id)
	}
	return nil
}

// restoreLocked replaces the store with v; its durable record also
// clears the unreconciled mark.
func (r *replica) restoreLocked(v *store.View) {
	r.store.RestoreView(v)
	r.movedLocked()
	clear(r.flushing)
	r.flushing, r.onDisk = r.flushing[:0], store.Version{}
	if r.disk != nil {
		r.unreconciled, r.ignoredMark = false, false
		r.submittedLocked(r.disk.Restore(v.Snapshot()))
	}
	r.events.restored()
}

// reconciled records that a leader reconciled the replica (its state holds
// everything committed): it is no longer recovering, and the durable mark
// is cleared if it is set.
func (r *replica) reconciled() *durable.Pending {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reconciledLocked()
}

// adopted is reconciled for a taking-over leader (epoch, ld), whose
// adopted state holds everything committed, if the replica still
// promises that leadership (ownedLocked).
func (r *replica) adopted(epoch int64, ld leadership) (*durable.Pending, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.ownedLocked(epoch, ld); err != nil {
		return nil, err
	}
	return r.reconciledLocked(), nil
}

// reconciledLocked is reconciled with the lock held.
func (r *replica) reconciledLocked() *durable.Pending {
	r.recovering = false
	if r.disk == nil || !r.unreconciled {
		return nil
	}
	r.unreconciled = false
	return r.submittedLocked(r.disk.Reconciled())
}

// setRecovering marks a voter that came back without reconciled data:
// it counts toward no majority until a leader reconciles it.
func (r *replica) setRecovering() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recovering = true
}

// setIncarnation durably records the cluster incarnation the data
// directory belongs to (nil without one).
func (r *replica) setIncarnation(inc string) *durable.Pending {
	if r.disk == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.submittedLocked(r.disk.SetIncarnation(inc))
}

// tenure is what a leader expects of the replica it leads from: the epoch
// promised to it, and once it started (applied its no-op) its leadership
// and its last entry as the store's position.
type tenure struct {
	epoch   int64
	ld      leadership
	started bool
	last    store.Version
}

// heldLocked fails with ErrNotLeader unless the replica is still the
// leader's own (tenure t): a node that took a later leader's Append (or
// Prepare) ends the leadership (stateEvents.promised), but a write or read
// already past its checks must not use a store another epoch may have
// replaced.
func (r *replica) heldLocked(t tenure) error {
	at := r.store.Applied()
	if r.promised != t.epoch || (t.started && (at != t.last || r.ld != t.ld)) {
		return fmt.Errorf("%w (epoch %d: promised epoch %d, store at %s)", kvstore.ErrNotLeader, t.epoch, r.promised, at)
	}
	return nil
}

// current returns key's item if the replica is still the leader's (t).
func (r *replica) current(key string, t tenure) (store.Item, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.heldLocked(t); err != nil {
		return store.Item{}, err
	}
	it, _ := r.store.Get(key)
	return it, nil
}

// openEpoch applies the no-op that opens the leader's epoch (ld's) after
// the adopted state (base, the store's position), if the replica still
// promises that leadership (ownedLocked).
func (r *replica) openEpoch(epoch int64, ld leadership) (base store.Version, noop store.Entry, p *durable.Pending, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.ownedLocked(epoch, ld); err != nil {
		return base, noop, nil, err
	}
	base = r.store.Applied()
	noop = store.Entry{Version: store.Version{Epoch: epoch, Seq: base.Seq + 1}, Op: store.OpNoop}
	if _, err := r.store.Apply(noop); err != nil {
		// The promise holds, so no later leader changed the store.
		return base, noop, nil, fmt.Errorf("the no-op of epoch %d after %s: %w", epoch, base, err)
	}
	r.events.applied(noop)
	return base, noop, r.persistEntriesLocked([]store.Entry{noop}, nil), nil
}

// lead applies the leader's write e (t: the leader's tenure, e at the
// position after t.last), unless the replica is no longer the leader's
// own, or e's request id was applied already (dup, at ver): then nothing
// changes. p is e's submission; prev (had: there was one) is the key's
// item that e replaced.
func (r *replica) lead(t tenure, e store.Entry) (res leadResult, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.heldLocked(t); err != nil {
		return leadResult{}, err
	}
	if ver, dup := r.store.Request(e.ReqID); dup && e.ReqID != "" {
		return leadResult{ver: ver, dup: true}, nil
	}
	prev, had, _, err := r.store.ApplyReplacing(e)
	if err != nil {
		panic(err) // cannot happen: the leader's store is at t.last
	}
	p := r.persistEntriesLocked([]store.Entry{e}, nil)
	// The leader's own cached copy goes first, as on a follower that
	// applies the entry: the new value is readable only once visible.
	r.events.applied(e)
	return leadResult{ver: e.Version, prev: prev, had: had, p: p}, nil
}

// leadResult is what lead did.
type leadResult struct {
	ver  store.Version
	dup  bool       // e's request id was applied already, at ver
	prev store.Item // the key's item before e (had: the store held one)
	had  bool
	p    *durable.Pending
}

// submittedLocked records p as the latest submission and returns it.
func (r *replica) submittedLocked(p *durable.Pending) *durable.Pending {
	if p != nil {
		r.last = p
	}
	return p
}

// persistEntriesLocked mirrors entries just applied to the store; dup[i]
// reports that entries[i] repeated a request id and changed nothing but the
// position.
func (r *replica) persistEntriesLocked(entries []store.Entry, dup []bool) *durable.Pending {
	if r.disk == nil || len(entries) == 0 {
		return nil
	}
	out := entries
	for i, d := range dup {
		if d {
			if &out[0] == &entries[0] {
				out = append([]store.Entry(nil), entries...)
			}
			out[i] = store.Entry{Version: entries[i].Version, Op: store.OpNoop}
		}
	}
	return r.submittedLocked(r.disk.Append(out))
}

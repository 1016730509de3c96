// Package durable keeps a node's replicated state on disk so that a cluster
// survives the loss of every node's memory (issue 7, --data-dir). The file is
// a bbolt database that IS the state machine's state: nothing is replayed at
// start, so no snapshots are needed to bound recovery time. Writes go through
// group commit: one committer goroutine applies every submission queued
// since its previous transaction in one bbolt read-write transaction, hence
// one fsync for all of them.
//
// # Lifecycle
//
//	db, st, err := durable.Open(dir, durable.Options{})  // verify and load
//	s.Restore(st.Snapshot)                                // node's store.Store
//	// under the node's lock, in the order the node applies them:
//	p := db.Append(entries)  // or db.Restore(snap), db.Promise(epoch)
//	// after releasing the lock:
//	err = p.Wait(ctx)        // durable now: acknowledge to the leader
//	db.Close()               // commits what was submitted
//
// Submissions are applied in the order the calls returned, so callers submit
// under their own lock and wait outside it; Wait returns once the group
// holding the submission is committed and fsynced. If a group's transaction
// fails, every submission in it and every later one fails (the error is
// sticky): no caller may believe an entry durable when an earlier one is not.
// An Append that does not follow the position of the submissions before it
// is a bug in the caller; it fails, and so does everything after it.
//
// # On-disk layout
//
// dir/LOCK is flocked while a DB has dir open (a second Open fails with
// ErrLocked after about a second). dir/state.db is a bbolt file (format
// version 2, FreelistType map, NoFreelistSync) with three buckets; every
// value starts with the big-endian CRC-32C of bucket name, key and the rest
// of the value (the payload); integers are big-endian:
//
//	items     key            -> crc | flags (1: tombstone) | epoch (8) | seq (8) | value
//	requests  counter (8)    -> crc | epoch (8) | seq (8) | request id
//	meta      "format"         -> crc | 1 (4 bytes)
//	          "applied"        -> crc | epoch (8) | seq (8)
//	          "accepted_epoch" -> crc | epoch (8)
//	          "digest"         -> crc | items (8) | sum of item crcs (8) | requests (8) | sum of request crcs (8)
//
// The requests bucket is keyed by an insertion counter, so a cursor finds the
// oldest; once it holds more than 2*MaxRequests ids the oldest are evicted
// down to MaxRequests in the same transaction, and Open returns the newest
// MaxRequests. The digest, updated in every transaction, lets Open notice a
// record that is missing, duplicated or stale even though each record's own
// checksum is valid. A new state.db is built under state.db.tmp, synced and
// renamed, so an existing state.db always holds a complete state.
//
// # Crash and corruption guarantees
//
// A group is durable when its Pendings are done: bbolt writes the group's
// pages, fsyncs, then writes and fsyncs the meta page that makes them
// current (unless Options.NoSync). A crash during a commit leaves a torn or
// stale meta page whose checksum fails or whose txid is older: Open uses the
// other meta page, so the torn last group is discarded and every older group
// is intact. Nothing Wait reported durable is lost, given a disk that honours
// fsync.
//
// Open verifies the whole file before returning any state, in this order:
// the page structure with plain reads (meta pages, every page within the
// file and the high water mark, referenced once, of the right type, with its
// elements inside it and its keys ordered), so that bbolt never maps a
// truncated or mangled file (bbolt would fault or panic in a goroutine no
// recover reaches); then every record's checksum and encoding, the digest,
// and bbolt's own consistency check (tx.Check). Any failure is ErrCorrupt
// wrapped with the file and the bad bucket and key or page; a panic or
// memory fault inside bbolt during Open is also turned into ErrCorrupt. Open
// never returns a partial or silently emptied state: a missing state.db means
// a fresh directory, any other unreadable file is an error. Corruption that
// happens while the DB is open is found at the next Open. The checks read the
// whole file a few times, so Open takes time in proportion to its size.
//
// The byte order of bbolt's own headers is the machine's (as bbolt writes
// them): a file moves only between machines of the same endianness.
package durable

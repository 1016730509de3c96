// Package durable keeps a node's replicated state on disk so that a cluster
// survives the loss of every node's memory (issue 7, --data-dir). Writes go
// through group commit to a sequential write-ahead log: one committer
// goroutine writes every submission queued since its previous group to the
// log with one write and one fdatasync, then releases their waiters. A bbolt
// database is the checkpoint: a checkpointer goroutine applies the logged
// groups to it later, off the acknowledgement path, and deletes the log files
// it covers. At start only the log written since the last checkpoint is
// replayed, so recovery time stays bounded without snapshots.
//
// # Lifecycle
//
//	db, st, err := durable.Open(dir, durable.Options{})  // verify and load
//	s.Restore(st.Snapshot)                                // node's store.Store
//	// under the node's lock, in the order the node applies them:
//	p := db.Append(entries)  // or db.Restore(snap), db.PromiseLeadership(epoch, id, n), db.Reconciled()
//	// after releasing the lock:
//	err = p.Wait(ctx)        // durable now: acknowledge to the leader
//	db.Close()               // commits what was submitted
//
// Submissions are applied in the order the calls returned, so callers submit
// under their own lock and wait outside it; Wait returns once the group
// holding the submission is written to the log and fdatasynced. If a
// group's log write or sync fails, or a checkpoint fails, every submission in
// it and every later one fails (the error is sticky): no caller may believe an entry durable when an earlier one is not.
// An Append that does not follow the position of the submissions before it
// is a bug in the caller; it fails, and so does everything after it.
//
// # On-disk layout
//
// dir/LOCK is flocked while a DB has dir open (a second Open fails with
// ErrLocked after about a second).
//
// dir/wal-<i>.log are the log files, <i> (16 hex digits) the index of the
// file's first record; their records' indexes run on from file to file
// without a gap. A file starts with a header; then come groups, one per
// write of the committer (each followed by one fdatasync), then zeros to
// the end of the file. A file is prepared before it is needed, in the
// background, as dir/wal-next.tmp: its header, zeros up to 5 MiB (a
// quarter more than the rotation size), synced; the rotation renames it
// and syncs the directory. Groups overwrite the zeros, so their
// fdatasync flushes data only, never the file's size or block map (half
// the time of appending on ext4); a group that passes the zeros extends
// the file. Open removes a wal-next.tmp left by a crash.
//
//	file header: "kvstore-wal" 0 (12) | salt (8, random per file) |
//	             CRC-32C of the 20 bytes before (4)
//	group:       "KVG1" (4) | length of its records (4) | CRC-32C of its
//	             records (4) | CRC-32C of the file's salt and the 12 bytes
//	             before (4) | its records
//
// (integers little-endian). Where a group would start, zeros to the end of
// the file end the file's groups. Each record is one submission, but a Restore,
// which is a unit of several records in one group (restore begin, then
// restore items of about 1 MiB each; older builds wrote one restore
// record, which Open still reads):
//
//	length (4, little-endian) | CRC-32C of length and payload (4) | payload
//	payload: index (uvarint) | kind (1: 0 append, 1 restore, 2 promise,
//	         3 reconciled, 4 promise with leadership, 5 incarnation,
//	         6 restore begin, 7 restore items) | body
//	append:  count, then per entry epoch | seq | op | key | value | request id
//	restore: applied epoch | seq | count, then per item key | flags | epoch |
//	         seq | value (not for a tombstone) | count, then per request
//	         id | epoch | seq
//	restore begin: applied epoch | seq | count, then per request id |
//	         epoch | seq (empties the items; clears the unreconciled mark)
//	restore items: count, then per item as in restore
//	promise: epoch
//	reconciled: nothing (clears the unreconciled mark; a restore clears it too)
//	promise with leadership: epoch | leader id | leadership number
//	incarnation: cluster incarnation id (the directory's fence; older
//	         builds cannot replay a log holding one)
//
// Files written by builds before groups hold bare records with no header;
// Open still reads them (a damaged record of the newest file with no whole
// record after it is torn there, as those builds wrote one record at a
// time to it).
//
// Epochs are varints, other integers uvarints, strings a uvarint length and
// the bytes. The committer starts a new file once the current one holds
// 4 MiB (renaming the prepared file and fsyncing the directory before
// writing to it). The
// checkpointer runs 100 ms after the first group it does not cover was
// logged, or at once when 1 MiB awaits it (the committer stops taking groups
// while 16 MiB await it), and applies the groups in bbolt transactions of at
// most about 1 MiB of records (a group's submissions as the committer logged
// them; a group holding a Restore decoded again from its records, which
// are chunked), each fsynced and recording the index of the
// last record applied; then it deletes every log file whose records that
// index covers (never the newest). Open replays the log, checkpoints it,
// deletes the old files and starts a new one; Close checkpoints everything
// and deletes the log files but the newest, which tells the next Open where
// the log went on.
//
// dir/state.db is a bbolt file (bbolt's data format
// version 2, FreelistType map, NoFreelistSync) with three buckets; every
// value starts with the big-endian CRC-32C of bucket name, key and the rest
// of the value (the payload); integers are big-endian:
//
//	items     key            -> crc | flags (1: tombstone) | epoch (8) | seq (8) | value
//	requests  counter (8)    -> crc | epoch (8) | seq (8) | request id
//	meta      "format"         -> crc | 2 (4 bytes)
//	          "unreconciled"   -> crc | 1 or 0 (1 byte)
//	          "applied"        -> crc | epoch (8) | seq (8)
//	          "accepted_epoch" -> crc | epoch (8)
//	          "digest"         -> crc | items (8) | sum of item crcs (8) | requests (8) | sum of request crcs (8)
//	          "logged"         -> crc | index of the last log record applied (8; absent: 0)
//	          "accepted_leadership" -> crc | leadership number (8) | leader id
//	                              (the leadership accepted_epoch was promised to;
//	                              absent in older files: none)
//	          "incarnation"    -> crc | cluster incarnation id (the cluster
//	                              record's, coord.Coordinator.ClaimCluster;
//	                              absent: none recorded)
//
// The unreconciled mark (State.Unreconciled) is 1 in a file just created
// and becomes 0 with the first Restore or Reconciled submission; nothing
// sets it again. Format 1 files (before the mark) have no "unreconciled"
// key: Open takes one at position zero as unreconciled, then rewrites it as
// format 2 (format record and mark) in one transaction, after which builds
// that read only format 1 refuse it (unsupported format version) rather
// than lose the mark.
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
// A group is durable when its Pendings are done: it is written to the log
// and fdatasynced (unless Options.NoSync), and nothing after it is written
// before that. A power loss during the write of the final group can keep
// any part of it: a later page and not an earlier one (ext4's rewritten
// tail page of the old end of the file, reordered pages, a page torn at a
// sector), the file's new size with zeros where data did not land (or
// the preallocated zeros still there). So
// damage anywhere from the start of the newest file's final group to its
// end is a torn write: a group whose header is intact but whose records
// fail its checksum, with nothing but zeros after its end; or a group
// header that is damaged, with no valid group header after it (one group
// has one header, and the salt keeps a client's value from passing for
// one). Open discards that group whole (truncating the file where it
// starts, and logging it): none of it was acknowledged. Damage anywhere
// before the final group, in any file but the newest, or an index gap
// (within a file, between files, or between the checkpoint and the log) is
// ErrCorrupt naming the file and offset: it is not what a crash leaves. A
// final group that was acknowledged and damaged later by the medium cannot
// be told from a torn one: it is discarded too, which loses acknowledged
// records on this node (as any loss of synced data does; the cluster
// assumes a disk keeps what it synced). TestCrashStates enumerates the
// states a power loss can leave during a real workload and opens each.
//
// Log files that a checkpoint covers are deleted and the directory synced;
// a file a crash brings back all the same (its deletion not yet durable)
// is covered by the checkpoint, and Open skips it unread.
//
// A checkpoint is a bbolt transaction: bbolt writes its pages, fsyncs, then
// writes and fsyncs the meta page that makes them current. A crash during it
// leaves a torn or stale meta page whose checksum fails or whose txid is
// older: Open uses the other meta page, the older checkpoint, and replays
// the log from there, since log files are deleted only once a checkpoint
// covering them is synced. A newer meta page damaged later (after Close,
// say) is taken the same way: Open then replays the log from the older
// checkpoint, or finds that the log starts after it (ErrCorrupt, a gap);
// Close keeps the newest log file for that. Nothing Wait reported durable
// is lost, given a disk that honours fsync. Crash stops the checkpointer without a
// checkpoint: what it leaves is in the log only, as after a real crash.
//
// Open verifies the whole bbolt file before it replays the log, in this
// order:
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
// whole file a few times (once more after a replay), so Open takes time in
// proportion to its size. A log record is checked by its CRC and its
// encoding; what the log holds is checked against the bbolt file only by its
// indexes.
//
// The byte order of bbolt's own headers is the machine's (as bbolt writes
// them): a file moves only between machines of the same endianness.
package durable

package durable

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/kvstore/kvstore/store"
)

// The write-ahead log: a sequence of files dir/wal-<first index, 16 hex
// digits>.log, each a sequence of records
//
//	length (4, little-endian) | crc (4) | payload (length bytes)
//
// where crc is the CRC-32C of the length bytes and the payload, and the
// payload is
//
//	index (uvarint) | kind (1) | body
//
// with the body of a submission kind:
//
//	append:  count | count × (epoch | seq | op | key | value | request id)
//	restore: epoch | seq | items | items × (key | flags | epoch | seq | value)
//	         | requests | requests × (id | epoch | seq)   (older builds)
//	restore begin: epoch | seq | requests | requests × (id | epoch | seq)
//	restore items: items | items × (key | flags | epoch | seq | value)
//
// A Restore is written as a restore begin and restore items records of
// about restoreChunkBytes each (appendSub), consecutive in one group.
//	promise: epoch
//	reconciled: (no body)
//	promise with leadership: epoch | leader id | leadership number
//	incarnation: cluster incarnation id
//
// Epochs are varints, every other integer a uvarint, strings a uvarint
// length then the bytes.

const (
	walPrefix    = "wal-"
	walSuffix    = ".log"
	recHeaderLen = 8
	// maxRecordLen bounds a record's length field, so that a mangled
	// length is not taken for a record running past a huge file.
	maxRecordLen = 1 << 31
)

func walName(first uint64) string { return fmt.Sprintf("%s%016x%s", walPrefix, first, walSuffix) }

// parseWALName returns the first index a log file's name gives.
func parseWALName(name string) (uint64, bool) {
	if !strings.HasPrefix(name, walPrefix) || !strings.HasSuffix(name, walSuffix) {
		return 0, false
	}
	hex := name[len(walPrefix) : len(name)-len(walSuffix)]
	if len(hex) != 16 {
		return 0, false
	}
	n, err := strconv.ParseUint(hex, 16, 64)
	return n, err == nil
}

type walFile struct {
	name  string
	first uint64
}

// listWAL returns dir's log files in index order.
func listWAL(dir string) ([]walFile, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var fs []walFile
	for _, e := range ents {
		if first, ok := parseWALName(e.Name()); ok && e.Type().IsRegular() {
			fs = append(fs, walFile{name: e.Name(), first: first})
		}
	}
	slices.SortFunc(fs, func(a, b walFile) int {
		switch {
		case a.first < b.first:
			return -1
		case a.first > b.first:
			return 1
		}
		return 0
	})
	return fs, nil
}

// appendSub appends the records of submission s to b, the first with
// index idx, and returns how many: one, or for a Restore a begin record
// and records of about restoreChunkBytes of items each, in key order.
func appendSub(b []byte, idx uint64, s *sub) ([]byte, uint64) {
	if s.kind != kindRestore {
		return appendRecord(b, idx, s), 1
	}
	begin := sub{kind: kindRestoreBegin, snap: store.Snapshot{Applied: s.snap.Applied, Requests: s.snap.Requests}}
	b = appendRecord(b, idx, &begin)
	n := uint64(1)
	items := sub{kind: kindRestoreItems, snap: store.Snapshot{Items: map[string]store.Item{}}}
	size := 0
	flush := func() {
		b = appendRecord(b, idx+n, &items)
		n++
		clear(items.snap.Items)
		size = 0
	}
	for _, k := range slices.Sorted(maps.Keys(s.snap.Items)) {
		it := s.snap.Items[k]
		if size > 0 && size+len(k)+len(it.Value) > restoreChunkBytes {
			flush()
		}
		items.snap.Items[k] = it
		size += len(k) + len(it.Value) + 1
	}
	if size > 0 {
		flush()
	}
	return b, n
}

// appendRecord appends the record of submission s with index idx to b.
func appendRecord(b []byte, idx uint64, s *sub) []byte {
	start := len(b)
	b = append(b, 0, 0, 0, 0, 0, 0, 0, 0)
	b = binary.AppendUvarint(b, idx)
	b = append(b, byte(s.kind))
	switch s.kind {
	case kindAppend:
		b = binary.AppendUvarint(b, uint64(len(s.entries)))
		for _, e := range s.entries {
			b = binary.AppendVarint(b, e.Version.Epoch)
			b = binary.AppendUvarint(b, e.Version.Seq)
			b = binary.AppendUvarint(b, uint64(e.Op))
			b = appendString(b, e.Key)
			b = appendString(b, e.Value)
			b = appendString(b, e.ReqID)
		}
	case kindRestore:
		b = binary.AppendVarint(b, s.snap.Applied.Epoch)
		b = binary.AppendUvarint(b, s.snap.Applied.Seq)
		b = appendItems(b, s.snap.Items)
		b = appendRequests(b, s.snap.Requests)
	case kindRestoreBegin:
		b = binary.AppendVarint(b, s.snap.Applied.Epoch)
		b = binary.AppendUvarint(b, s.snap.Applied.Seq)
		b = appendRequests(b, s.snap.Requests)
	case kindRestoreItems:
		b = appendItems(b, s.snap.Items)
	case kindPromise:
		b = binary.AppendVarint(b, s.epoch)
	case kindPromiseLeadership:
		b = binary.AppendVarint(b, s.epoch)
		b = appendString(b, s.leader)
		b = binary.AppendUvarint(b, s.nonce)
	case kindIncarnation:
		b = appendString(b, s.inc)
	}
	n := len(b) - start - recHeaderLen
	binary.LittleEndian.PutUint32(b[start:], uint32(n))
	c := crc32.Update(0, castagnoli, b[start:start+4])
	c = crc32.Update(c, castagnoli, b[start+recHeaderLen:])
	binary.LittleEndian.PutUint32(b[start+4:], c)
	return b
}

// appendItems appends a count, then each item: key | flags | epoch | seq |
// value (not for a tombstone).
func appendItems(b []byte, items map[string]store.Item) []byte {
	b = binary.AppendUvarint(b, uint64(len(items)))
	for k, it := range items {
		b = appendString(b, k)
		var flags byte
		if it.Deleted {
			flags = itemDeleted
		}
		b = append(b, flags)
		b = binary.AppendVarint(b, it.Version.Epoch)
		b = binary.AppendUvarint(b, it.Version.Seq)
		if !it.Deleted {
			b = appendString(b, it.Value)
		}
	}
	return b
}

// appendRequests appends a count, then each request: id | epoch | seq.
func appendRequests(b []byte, reqs []store.Request) []byte {
	b = binary.AppendUvarint(b, uint64(len(reqs)))
	for _, r := range reqs {
		b = appendString(b, r.ID)
		b = binary.AppendVarint(b, r.Version.Epoch)
		b = binary.AppendUvarint(b, r.Version.Seq)
	}
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// nextRecord checks the record at the start of b: it returns its payload and
// total length, or ok false if b does not start with a whole record whose
// checksum matches.
func nextRecord(b []byte) (payload []byte, n int, ok bool) {
	if len(b) < recHeaderLen {
		return nil, 0, false
	}
	l := binary.LittleEndian.Uint32(b)
	if l == 0 || uint64(l) > maxRecordLen || uint64(l) > uint64(len(b)-recHeaderLen) {
		return nil, 0, false
	}
	c := crc32.Update(0, castagnoli, b[:4])
	c = crc32.Update(c, castagnoli, b[recHeaderLen:recHeaderLen+int(l)])
	if c != binary.LittleEndian.Uint32(b[4:]) {
		return nil, 0, false
	}
	return b[recHeaderLen : recHeaderLen+int(l)], recHeaderLen + int(l), true
}

// decoder reads a record's payload.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("bad %s", what)
	}
}

func (d *decoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint(what string) int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte(what string) byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.fail(what)
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) string(what string) string {
	n := d.uvarint(what)
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.b)) {
		d.fail(what)
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

// count reads a number of elements, each at least min bytes long.
func (d *decoder) count(what string, min int) int {
	n := d.uvarint(what)
	if d.err == nil && n > uint64(len(d.b)/min) {
		d.fail(what)
		return 0
	}
	return int(n)
}

// decodeRecord decodes a record's payload.
func decodeRecord(p []byte) (uint64, sub, error) {
	d := &decoder{b: p}
	idx := d.uvarint("index")
	var s sub
	s.kind = kind(d.byte("kind"))
	switch s.kind {
	case kindAppend:
		n := d.count("entry count", 6)
		s.entries = make([]store.Entry, 0, n)
		for range n {
			var e store.Entry
			e.Version.Epoch = d.varint("entry epoch")
			e.Version.Seq = d.uvarint("entry seq")
			e.Op = store.Op(d.uvarint("entry op"))
			e.Key = d.string("entry key")
			e.Value = d.string("entry value")
			e.ReqID = d.string("entry request id")
			s.entries = append(s.entries, e)
		}
	case kindRestore:
		s.snap.Applied.Epoch = d.varint("applied epoch")
		s.snap.Applied.Seq = d.uvarint("applied seq")
		s.snap.Items = d.items()
		s.snap.Requests = d.requests()
	case kindRestoreBegin:
		s.snap.Applied.Epoch = d.varint("applied epoch")
		s.snap.Applied.Seq = d.uvarint("applied seq")
		s.snap.Requests = d.requests()
	case kindRestoreItems:
		s.snap.Items = d.items()
	case kindPromise:
		s.epoch = d.varint("epoch")
	case kindReconciled:
	case kindPromiseLeadership:
		s.epoch = d.varint("epoch")
		s.leader = d.string("leader id")
		s.nonce = d.uvarint("leadership")
	case kindIncarnation:
		s.inc = d.string("incarnation")
	default:
		d.fail(fmt.Sprintf("kind %d", s.kind))
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%d bytes after the submission", len(d.b))
	}
	return idx, s, d.err
}

// items decodes appendItems's encoding.
func (d *decoder) items() map[string]store.Item {
	n := d.count("item count", 4)
	items := make(map[string]store.Item, n)
	for range n {
		k := d.string("item key")
		var it store.Item
		switch d.byte("item flags") {
		case 0:
		case itemDeleted:
			it.Deleted = true
		default:
			d.fail("item flags")
		}
		it.Version.Epoch = d.varint("item epoch")
		it.Version.Seq = d.uvarint("item seq")
		if !it.Deleted {
			it.Value = d.string("item value")
		}
		items[k] = it
	}
	return items
}

// requests decodes appendRequests's encoding.
func (d *decoder) requests() []store.Request {
	n := d.count("request count", 3)
	reqs := make([]store.Request, 0, n)
	for range n {
		var r store.Request
		r.ID = d.string("request id")
		r.Version.Epoch = d.varint("request epoch")
		r.Version.Seq = d.uvarint("request seq")
		reqs = append(reqs, r)
	}
	return reqs
}

// logged is one record read back from the log.
type logged struct {
	idx uint64
	sub
}

// readWAL reads dir's log files and returns the records with an index above
// after, in order. A file whose successor starts at or before after+1 holds
// nothing the checkpoint lacks: it is skipped unread (an old file that a
// crash brought back after its deletion is such a file). Damage from the
// start of the newest file's final group to its end is a torn write
// (scanLog): it is discarded and the file truncated there (tornAt reports
// where, "" if nothing was torn). Any other damage, an index that does not
// follow the one before it, a first record after `after` that is not
// after+1, or a first file that starts after after+1, is ErrCorrupt naming
// the file and offset. files returns the files found.
func readWAL(dir string, after uint64, noSync bool) (recs []logged, last uint64, files []walFile, tornAt string, err error) {
	files, err = listWAL(dir)
	if err != nil {
		return nil, 0, nil, "", fmt.Errorf("durable: %w", err)
	}
	if len(files) > 0 && files[0].first > after+1 {
		// Files are deleted only once a checkpoint covers them, and Close
		// keeps the newest: the checkpoint went back (or records are
		// missing).
		return nil, 0, nil, "", corrupt(filepath.Join(dir, files[0].name), "the log starts at index %d but the checkpoint holds only up to %d: a gap", files[0].first, after)
	}
	var prev uint64 // index of the previous record, 0 before the first
	for fi, f := range files {
		path := filepath.Join(dir, f.name)
		newest := fi == len(files)-1
		if !newest && files[fi+1].first <= after+1 {
			prev = files[fi+1].first - 1
			continue
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, 0, nil, "", fmt.Errorf("durable: %w", err)
		}
		raw, torn, err := scanLog(data, newest)
		if err != nil {
			return nil, 0, nil, "", corrupt(path, "%v", err)
		}
		for i, r := range raw {
			idx, s, err := decodeRecord(r.payload)
			if err != nil {
				return nil, 0, nil, "", corrupt(path, "log record at offset %d: %v", r.off, err)
			}
			switch {
			case i == 0 && idx != f.first:
				return nil, 0, nil, "", corrupt(path, "log record at offset %d, the file's first, has index %d, the file's name says %d", r.off, idx, f.first)
			case prev != 0 && idx != prev+1:
				return nil, 0, nil, "", corrupt(path, "log record at offset %d has index %d after %d: a gap", r.off, idx, prev)
			case prev == 0 && idx > after+1:
				return nil, 0, nil, "", corrupt(path, "log record at offset %d has index %d but the checkpoint holds only up to %d: a gap", r.off, idx, after)
			}
			prev = idx
			if idx > after {
				recs = append(recs, logged{idx: idx, sub: s})
			}
		}
		if torn >= 0 {
			if err := truncate(path, int64(torn), noSync); err != nil {
				return nil, 0, nil, "", fmt.Errorf("durable: truncating the torn end of %s: %w", path, err)
			}
			tornAt = fmt.Sprintf("%s at offset %d (%d bytes discarded)", path, torn, len(data)-torn)
		}
	}
	return recs, prev, files, tornAt, nil
}

// truncate cuts the file at path to size and syncs it.
func truncate(path string, size int64, noSync bool) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	err = f.Truncate(size)
	if err == nil && !noSync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// rawRecord is a record found in a log file: its offset and payload.
type rawRecord struct {
	off     int
	payload []byte
}

// scanLog finds the records of one log file's data. newest says whether it
// is the newest file, the only one a crash can leave torn. torn is the
// offset of the torn end to discard, -1 if there is none.
//
// A file written by this version starts with a file header and holds
// groups (scanGroups); a file without the header is of the older format, a
// bare sequence of records (scanRecords).
func scanLog(data []byte, newest bool) (recs []rawRecord, torn int, err error) {
	switch {
	case len(data) == 0:
		return nil, -1, nil
	}
	if salt, ok := fileHeader(data); ok {
		return scanGroups(data, salt, newest)
	}
	if _, _, ok := nextRecord(data); ok {
		return scanRecords(data, newest)
	}
	if !newest {
		return nil, -1, fmt.Errorf("the file header at offset 0 is damaged (in a file that is not the newest)")
	}
	// Neither a header nor a record at the start of the newest file. The
	// header is synced before any group is written after it, so a file
	// whose header a crash damaged holds nothing else; the older format
	// torn at its first record holds nothing either. Anything valid after
	// it says the damage is not a crash's (no salt is known here: a
	// group header is recognised by its magic alone).
	if bytes.Contains(data[1:], groupMagicBytes) || validAfter(data[1:]) {
		return nil, -1, fmt.Errorf("offset 0 holds neither a file header nor a whole record, and %d bytes follow it", len(data))
	}
	return nil, 0, nil
}

// scanGroups reads a file of groups after its header. A group that is
// whole and matches its checksum gives its records. Nothing but zeros
// where a group would start is the end of the file's groups (the rest of
// a preallocated file, prepareWAL), in any file: zeros lost from an older
// file are a gap between its last index and the next file's first, which
// readWAL reports. The first group that is neither must be the final
// write, torn by a crash before its fdatasync:
// in the newest file, with an intact group header, nothing but zeros after
// the group's end (a file system may extend a file before its data lands);
// with a damaged group header, no valid group header after it (one group
// is one write, so its later pages, which may have landed, hold records
// but never a group header). Anything else is corruption: nothing after a
// synced group is written before it is synced.
func scanGroups(data []byte, salt uint64, newest bool) (recs []rawRecord, torn int, err error) {
	off := fileHeaderLen
	for off < len(data) {
		n, sum, ok := groupHeader(data[off:], salt)
		if !ok {
			if allZero(data[off:]) {
				return recs, -1, nil
			}
			if !newest {
				return nil, -1, fmt.Errorf("the group header at offset %d is damaged (%d bytes follow it, in a file that is not the newest)", off, len(data)-off)
			}
			if groupAfter(data[off+1:], salt) {
				return nil, -1, fmt.Errorf("the group header at offset %d is damaged and a whole group follows it", off)
			}
			return recs, off, nil
		}
		body := data[off+groupHeaderLen:]
		if uint64(len(body)) < uint64(n) || crc32.Checksum(body[:n], castagnoli) != sum {
			end := off + groupHeaderLen + int(min(uint64(n), uint64(len(body))))
			switch {
			case !newest:
				return nil, -1, fmt.Errorf("the group at offset %d is damaged (in a file that is not the newest)", off)
			case !allZero(data[end:]):
				return nil, -1, fmt.Errorf("the group at offset %d is damaged and %d bytes follow its end", off, len(data)-end)
			}
			return recs, off, nil
		}
		for roff := 0; roff < int(n); {
			p, rn, ok := nextRecord(body[roff:n])
			if !ok {
				return nil, -1, fmt.Errorf("log record at offset %d is damaged inside a group whose checksum matches", off+groupHeaderLen+roff)
			}
			recs = append(recs, rawRecord{off: off + groupHeaderLen + roff, payload: p})
			roff += rn
		}
		off += groupHeaderLen + int(n)
	}
	return recs, -1, nil
}

// scanRecords reads a file of the older format, bare records: a damaged
// record of the newest file with no whole record after it is torn; any
// other is corruption.
func scanRecords(data []byte, newest bool) (recs []rawRecord, torn int, err error) {
	for off := 0; off < len(data); {
		p, n, ok := nextRecord(data[off:])
		if !ok {
			if !newest || validAfter(data[off+1:]) {
				return nil, -1, fmt.Errorf("log record at offset %d is damaged (%d bytes follow it)", off, len(data)-off)
			}
			return recs, off, nil
		}
		recs = append(recs, rawRecord{off: off, payload: p})
		off += n
	}
	return recs, -1, nil
}

// validAfter reports whether a whole record with a matching checksum starts
// anywhere in b.
func validAfter(b []byte) bool {
	for i := 0; i+recHeaderLen <= len(b); i++ {
		if _, _, ok := nextRecord(b[i:]); ok {
			return true
		}
	}
	return false
}

// groupAfter reports whether a valid group header starts anywhere in b.
func groupAfter(b []byte, salt uint64) bool {
	for i := 0; ; i++ {
		j := bytes.Index(b[i:], groupMagicBytes)
		if j < 0 {
			return false
		}
		i += j
		if _, _, ok := groupHeader(b[i:], salt); ok {
			return true
		}
	}
}

var groupMagicBytes = binary.LittleEndian.AppendUint32(nil, groupMagic)

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// The framing of this version's log files: a file header, then groups.
//
//	file header:  "kvstore-wal" 0 (12) | salt (8) | CRC-32C of the 20 bytes before (4)
//	group:        magic "KVG1" (4, little-endian 0x3147564b) | length (4) |
//	              CRC-32C of the records (4) | CRC-32C of the file's salt and
//	              the first 12 bytes of this header (4) | records (length bytes)
//
// One group is one write of the committer followed by one fdatasync; a file
// header is written and synced when the file is created, before any group.
// The salt is random per file and never leaves it, so a value a client
// wrote cannot pass for a group header (scanGroups relies on finding none
// after a torn one).
const (
	fileHeaderLen  = 24
	groupHeaderLen = 16
	fileMagic      = "kvstore-wal\x00"
	groupMagic     = 0x3147564b
)

// appendFileHeader appends a log file's header with salt to b.
func appendFileHeader(b []byte, salt uint64) []byte {
	start := len(b)
	b = append(b, fileMagic...)
	b = binary.LittleEndian.AppendUint64(b, salt)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b[start:], castagnoli))
}

// fileHeader checks the file header at the start of b and returns its
// salt, ok false if b does not start with a valid one.
func fileHeader(b []byte) (salt uint64, ok bool) {
	if len(b) < fileHeaderLen || string(b[:len(fileMagic)]) != fileMagic ||
		binary.LittleEndian.Uint32(b[20:]) != crc32.Checksum(b[:20], castagnoli) {
		return 0, false
	}
	return binary.LittleEndian.Uint64(b[12:]), true
}

// sealGroup fills in the header of the group in b: groupHeaderLen bytes
// reserved at its start, then its records.
func sealGroup(b []byte, salt uint64) {
	binary.LittleEndian.PutUint32(b[0:], groupMagic)
	binary.LittleEndian.PutUint32(b[4:], uint32(len(b)-groupHeaderLen))
	binary.LittleEndian.PutUint32(b[8:], crc32.Checksum(b[groupHeaderLen:], castagnoli))
	binary.LittleEndian.PutUint32(b[12:], headerSum(b, salt))
}

func headerSum(b []byte, salt uint64) uint32 {
	var s [8]byte
	binary.LittleEndian.PutUint64(s[:], salt)
	return crc32.Update(crc32.Checksum(s[:], castagnoli), castagnoli, b[:12])
}

// groupHeader checks the group header at the start of b: its length and
// the checksum of its records, ok false if b does not start with a valid
// one.
func groupHeader(b []byte, salt uint64) (n, sum uint32, ok bool) {
	if len(b) < groupHeaderLen || binary.LittleEndian.Uint32(b) != groupMagic ||
		binary.LittleEndian.Uint32(b[12:]) != headerSum(b, salt) {
		return 0, 0, false
	}
	n = binary.LittleEndian.Uint32(b[4:])
	if n == 0 || uint64(n) > maxRecordLen {
		return 0, 0, false
	}
	return n, binary.LittleEndian.Uint32(b[8:]), true
}

package durable

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
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
//	         | requests | requests × (id | epoch | seq)
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
		b = binary.AppendUvarint(b, uint64(len(s.snap.Items)))
		for k, it := range s.snap.Items {
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
		b = binary.AppendUvarint(b, uint64(len(s.snap.Requests)))
		for _, r := range s.snap.Requests {
			b = appendString(b, r.ID)
			b = binary.AppendVarint(b, r.Version.Epoch)
			b = binary.AppendUvarint(b, r.Version.Seq)
		}
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
		n := d.count("item count", 4)
		s.snap.Items = make(map[string]store.Item, n)
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
			s.snap.Items[k] = it
		}
		n = d.count("request count", 3)
		s.snap.Requests = make([]store.Request, 0, n)
		for range n {
			var r store.Request
			r.ID = d.string("request id")
			r.Version.Epoch = d.varint("request epoch")
			r.Version.Seq = d.uvarint("request seq")
			s.snap.Requests = append(s.snap.Requests, r)
		}
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

// logged is one record read back from the log.
type logged struct {
	idx uint64
	sub
}

// readWAL reads dir's log files and returns the records with an index above
// after, in order. A torn final record (a record of the last file that is
// short or fails its checksum, with no whole record after it) is discarded
// and the file truncated there (tornAt reports where, "" if nothing was
// torn). Any other bad record, an index that does not follow the one before
// it, a first record after `after` that is not after+1, or a first file that
// starts after after+1, is ErrCorrupt naming the file and offset. files returns the files read.
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
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, 0, nil, "", fmt.Errorf("durable: %w", err)
		}
		off := 0
		for off < len(data) {
			p, n, ok := nextRecord(data[off:])
			if !ok {
				if fi != len(files)-1 || validAfter(data[off+1:]) {
					return nil, 0, nil, "", corrupt(path, "log record at offset %d is damaged (%d bytes follow it)", off, len(data)-off)
				}
				// A torn final record: discard it.
				tf, err := os.OpenFile(path, os.O_WRONLY, 0)
				if err == nil {
					err = tf.Truncate(int64(off))
					if err == nil && !noSync {
						err = tf.Sync()
					}
					if cerr := tf.Close(); err == nil {
						err = cerr
					}
				}
				if err != nil {
					return nil, 0, nil, "", fmt.Errorf("durable: truncating the torn end of %s: %w", path, err)
				}
				tornAt = fmt.Sprintf("%s at offset %d (%d bytes discarded)", path, off, len(data)-off)
				break
			}
			idx, s, err := decodeRecord(p)
			if err != nil {
				return nil, 0, nil, "", corrupt(path, "log record at offset %d: %v", off, err)
			}
			switch {
			case off == 0 && idx != f.first:
				return nil, 0, nil, "", corrupt(path, "log record at offset 0 has index %d, the file's name says %d", idx, f.first)
			case prev != 0 && idx != prev+1:
				return nil, 0, nil, "", corrupt(path, "log record at offset %d has index %d after %d: a gap", off, idx, prev)
			case prev == 0 && idx > after+1:
				return nil, 0, nil, "", corrupt(path, "log record at offset %d has index %d but the checkpoint holds only up to %d: a gap", off, idx, after)
			}
			prev = idx
			if idx > after {
				recs = append(recs, logged{idx: idx, sub: s})
			}
			off += n
		}
	}
	return recs, prev, files, tornAt, nil
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

// syncDir fsyncs directory dir.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// removeWAL removes the given log files (a file already gone is fine).
func removeWAL(dir string, files []walFile) error {
	var errs []error
	for _, f := range files {
		if err := os.Remove(filepath.Join(dir, f.name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

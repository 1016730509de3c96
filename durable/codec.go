package durable

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"

	"github.com/kvstore/kvstore/store"
)

// formatVersion is the version of the record layout described in doc.go.
// Version 2 added the meta key "unreconciled"; Open reads version 1 files
// (taking one at position 0 as unreconciled) and rewrites their format
// record as 2, after which older builds refuse the file.
const formatVersion uint32 = 2

// formatV1 is the layout before the unreconciled mark.
const formatV1 uint32 = 1

// Bucket names and the keys of the meta bucket.
var (
	bucketItems    = []byte("items")
	bucketMeta     = []byte("meta")
	bucketRequests = []byte("requests")

	keyFormat  = []byte("format")
	keyApplied = []byte("applied")
	keyEpoch   = []byte("accepted_epoch")
	keyDigest  = []byte("digest")
	keyLogged  = []byte("logged")

	keyUnreconciled = []byte("unreconciled")
	// keyLeadership: the leadership accepted_epoch was promised to, absent
	// from files older than leadership promises.
	keyLeadership = []byte("accepted_leadership")
	// keyIncarnation: the cluster incarnation the directory belongs to,
	// absent if none was recorded.
	keyIncarnation = []byte("incarnation")
)

// appendLeadership encodes a promised leadership: nonce (8) | leader id.
func appendLeadership(b []byte, leader string, nonce uint64) []byte {
	b = binary.BigEndian.AppendUint64(b, nonce)
	return append(b, leader...)
}

func decodeLeadership(p []byte) (leader string, nonce uint64, err error) {
	if len(p) < 8 {
		return "", 0, fmt.Errorf("payload of %d bytes, want at least 8", len(p))
	}
	return string(p[8:]), binary.BigEndian.Uint64(p), nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// crcLen is the size of the checksum that starts every stored value.
const crcLen = 4

// itemDeleted is the flag byte of a tombstone.
const itemDeleted = 1

// recordCRC is the CRC-32C of a record: bucket name, key, then payload.
func recordCRC(bucket, key, payload []byte) uint32 {
	c := crc32.Update(0, castagnoli, bucket)
	c = crc32.Update(c, castagnoli, key)
	return crc32.Update(c, castagnoli, payload)
}

// seal fills in the checksum of the record rec = crc || payload that was
// reserved in place and returns the checksum.
func seal(bucket, key, rec []byte) uint32 {
	c := recordCRC(bucket, key, rec[crcLen:])
	binary.BigEndian.PutUint32(rec, c)
	return c
}

// storedCRC is the checksum a stored record claims (0 if it is too short to
// have one; Open reports such a record as corrupt).
func storedCRC(rec []byte) uint32 {
	if len(rec) < crcLen {
		return 0
	}
	return binary.BigEndian.Uint32(rec)
}

// open checks a stored record's checksum and returns its payload.
func open(bucket, key, rec []byte) ([]byte, error) {
	if len(rec) < crcLen {
		return nil, fmt.Errorf("record of %d bytes is shorter than its checksum", len(rec))
	}
	if want, got := binary.BigEndian.Uint32(rec), recordCRC(bucket, key, rec[crcLen:]); want != got {
		return nil, fmt.Errorf("checksum mismatch (stored %08x, computed %08x)", want, got)
	}
	return rec[crcLen:], nil
}

// arena hands out byte slices for one transaction: bbolt keeps the slices
// given to Put until the transaction ends, so they must not be reused. A
// slice handed out stays valid when the arena grows (the old backing array
// is kept alive by the slice). It also holds the transaction's staged
// items (group.stage), reused from one transaction to the next.
type arena struct {
	buf    []byte
	staged map[string]store.Item
	keys   []string
}

func (a *arena) reset() {
	if cap(a.buf) > 8<<20 {
		a.buf = nil // do not keep a huge buffer after a Restore
	}
	a.buf = a.buf[:0]
	a.unstage() // left by a transaction that failed
}

// maxStaged is the most staged keys whose map (and key slice) the arena
// keeps for the next transaction: a cleared map keeps its size, and
// clearing it costs that size each time.
const maxStaged = 1 << 16

// unstage empties the stage, dropping a map that grew huge (a replay of a
// long log after a crash).
func (a *arena) unstage() {
	if len(a.staged) > maxStaged {
		a.staged, a.keys = nil, nil
		return
	}
	clear(a.staged)
	clear(a.keys) // do not keep the strings alive
	a.keys = a.keys[:0]
}

// bytes copies s into the arena.
func (a *arena) bytes(s string) []byte {
	start := len(a.buf)
	a.buf = append(a.buf, s...)
	return a.buf[start:len(a.buf):len(a.buf)]
}

// begin reserves a record's checksum at the end of the arena; the caller
// appends the payload to a.buf and calls end with the returned start.
func (a *arena) begin() int {
	start := len(a.buf)
	a.buf = append(a.buf, 0, 0, 0, 0)
	return start
}

// end returns what was appended since start.
func (a *arena) end(start int) []byte { return a.buf[start:len(a.buf):len(a.buf)] }

func appendVersion(b []byte, v store.Version) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(v.Epoch))
	return binary.BigEndian.AppendUint64(b, v.Seq)
}

func readVersion(b []byte) store.Version {
	return store.Version{Epoch: int64(binary.BigEndian.Uint64(b)), Seq: binary.BigEndian.Uint64(b[8:])}
}

// Items: flags (1 byte, itemDeleted) | epoch (8) | seq (8) | value.
func appendItem(b []byte, it store.Item) []byte {
	var flags byte
	if it.Deleted {
		flags = itemDeleted
	}
	b = append(b, flags)
	b = appendVersion(b, it.Version)
	if it.Deleted {
		return b // a tombstone keeps no value
	}
	return append(b, it.Value...)
}

func decodeItem(p []byte) (store.Item, error) {
	if len(p) < 17 {
		return store.Item{}, fmt.Errorf("item payload of %d bytes, want at least 17", len(p))
	}
	switch p[0] {
	case 0:
		return store.Item{Value: string(p[17:]), Version: readVersion(p[1:])}, nil
	case itemDeleted:
		if len(p) != 17 {
			return store.Item{}, fmt.Errorf("tombstone with a %d-byte value", len(p)-17)
		}
		return store.Item{Deleted: true, Version: readVersion(p[1:])}, nil
	}
	return store.Item{}, fmt.Errorf("unknown item flags %#x", p[0])
}

// Requests: key = 8-byte big-endian insertion counter; payload = epoch (8) |
// seq (8) | request id.
func appendRequest(b []byte, r store.Request) []byte {
	b = appendVersion(b, r.Version)
	return append(b, r.ID...)
}

func decodeRequest(p []byte) (store.Request, error) {
	if len(p) < 16 {
		return store.Request{}, fmt.Errorf("request payload of %d bytes, want at least 16", len(p))
	}
	if len(p) == 16 {
		return store.Request{}, fmt.Errorf("empty request id")
	}
	return store.Request{ID: string(p[16:]), Version: readVersion(p)}, nil
}

// digest summarizes the items and requests buckets so that Open detects a
// record that is missing, duplicated or stale (an old copy of a page whose
// records all carry valid checksums): per bucket the number of records and
// the sum of their checksums, kept up to date in every transaction.
type digest struct {
	Items, ItemSum uint64
	Reqs, ReqSum   uint64
}

func (g digest) append(b []byte) []byte {
	for _, x := range [...]uint64{g.Items, g.ItemSum, g.Reqs, g.ReqSum} {
		b = binary.BigEndian.AppendUint64(b, x)
	}
	return b
}

func decodeDigest(p []byte) (digest, error) {
	if len(p) != 32 {
		return digest{}, fmt.Errorf("digest payload of %d bytes, want 32", len(p))
	}
	u := func(i int) uint64 { return binary.BigEndian.Uint64(p[8*i:]) }
	return digest{Items: u(0), ItemSum: u(1), Reqs: u(2), ReqSum: u(3)}, nil
}

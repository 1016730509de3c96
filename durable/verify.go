package durable

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"io"
	"os"
)

// This file checks the structure of a bbolt file with plain reads, before
// bbolt maps it. bbolt trusts its file: a page id beyond the end of a
// truncated file faults on the mapping, and when the freelist is not synced
// (NoFreelistSync, which Open uses) bbolt.Open walks every page and panics in
// a goroutine of its own on any inconsistency, which no recover can catch.
// checkFile rejects every file that walk would choke on, so bbolt only ever
// sees a structurally sound file. It mirrors the invariants of bbolt's
// tx.Check for data format version 2: valid meta page, pages within the high
// water mark and the file, each page referenced once, page headers that name
// their own id and a branch or leaf type, elements within their page, keys
// strictly ordered within each page and within the range their parent gives.

// Constants of the bbolt file format (go.etcd.io/bbolt/internal/common).
const (
	boltMagic          = 0xED0CDAED
	boltVersion        = 2
	pageHeaderSize     = 16
	elementSize        = 16 // branch and leaf elements alike
	bucketHeaderSize   = 16 // root pgid, sequence
	branchPageFlag     = 0x01
	leafPageFlag       = 0x02
	freelistPageFlag   = 0x10
	bucketLeafFlag     = 0x01
	noFreelist         = ^uint64(0)
	metaOffset         = pageHeaderSize
	metaChecksumOffset = metaOffset + 56
	minPageSize        = 1024
	maxPageSize        = 1 << 24
)

// bboltOrder is the byte order of bbolt's headers: bbolt writes its structs
// as they are in memory.
var bboltOrder = binary.NativeEndian

type boltMeta struct {
	pageSize uint32
	root     uint64
	freelist uint64
	hwm      uint64 // pgid: the high water mark
	txid     uint64
}

// parseMeta reads the meta page at the start of b and reports whether it is
// valid (magic, version and checksum, as bbolt's Meta.Validate).
func parseMeta(b []byte) (boltMeta, bool) {
	if len(b) < metaChecksumOffset+8 {
		return boltMeta{}, false
	}
	m := b[metaOffset:]
	u32 := func(o int) uint32 { return bboltOrder.Uint32(m[o:]) }
	u64 := func(o int) uint64 { return bboltOrder.Uint64(m[o:]) }
	h := fnv.New64a()
	h.Write(m[:56])
	if u32(0) != boltMagic || u32(4) != boltVersion || u64(56) != h.Sum64() {
		return boltMeta{}, false
	}
	return boltMeta{pageSize: u32(8), root: u64(16), freelist: u64(32), hwm: u64(40), txid: u64(48)}, true
}

type fileChecker struct {
	f        *os.File
	size     int64
	pageSize uint64
	hwm      uint64
	seen     []uint64 // bitset of referenced pages
}

// checkFile verifies the structure of the bbolt file f of size bytes. It
// returns an error that describes the first problem found (without the
// ErrCorrupt wrapping or the path: the caller adds them).
func checkFile(f *os.File, size int64) error {
	c := &fileChecker{f: f, size: size}
	m, err := c.meta()
	if err != nil {
		return err
	}
	c.pageSize = uint64(m.pageSize)
	c.hwm = m.hwm
	if m.hwm < 2 || m.hwm > uint64(c.size)/c.pageSize {
		return fmt.Errorf("file has %d bytes but its meta page (txid %d) needs %d pages of %d bytes: truncated", c.size, m.txid, m.hwm, c.pageSize)
	}
	c.seen = make([]uint64, (m.hwm+63)/64)
	c.mark(0)
	c.mark(1)
	if m.freelist != noFreelist {
		if err := c.freelist(m.freelist); err != nil {
			return err
		}
	}
	if err := c.bucket(m.root, nil, "root"); err != nil {
		return err
	}
	return nil
}

// meta returns the meta page bbolt would use: the valid one with the higher
// txid, found with bbolt's own search for the page size.
func (c *fileChecker) meta() (boltMeta, error) {
	var buf [0x1000]byte
	read := func(off int64) ([]byte, bool) {
		n, err := c.f.ReadAt(buf[:], off)
		if err != nil && err != io.EOF {
			return nil, false
		}
		return buf[:n], true
	}
	var pageSize uint32
	if b, ok := read(0); ok {
		if m, ok := parseMeta(b); ok {
			pageSize = m.pageSize
		}
	}
	for i := 0; pageSize == 0 && i <= 14; i++ {
		pos := int64(1024) << i
		if pos >= c.size-1024 {
			break
		}
		if b, ok := read(pos); ok {
			if m, ok := parseMeta(b); ok {
				pageSize = m.pageSize
			}
		}
	}
	if pageSize == 0 {
		return boltMeta{}, fmt.Errorf("no valid bbolt meta page (file of %d bytes)", c.size)
	}
	if pageSize < minPageSize || pageSize > maxPageSize || pageSize&(pageSize-1) != 0 {
		return boltMeta{}, fmt.Errorf("meta page gives an impossible page size %d", pageSize)
	}
	var metas []boltMeta
	for id := range int64(2) {
		if b, ok := read(id * int64(pageSize)); ok {
			if m, ok := parseMeta(b); ok {
				metas = append(metas, m)
			}
		}
	}
	if len(metas) == 0 {
		return boltMeta{}, fmt.Errorf("both bbolt meta pages are invalid")
	}
	m := metas[0]
	if len(metas) == 2 && metas[1].txid > m.txid {
		m = metas[1]
	}
	if m.pageSize != pageSize {
		return boltMeta{}, fmt.Errorf("meta page (txid %d) gives page size %d, the file's first meta page %d", m.txid, m.pageSize, pageSize)
	}
	return m, nil
}

// mark records a reference to page id and reports whether it was new.
func (c *fileChecker) mark(id uint64) bool {
	w, bit := id/64, uint64(1)<<(id%64)
	if c.seen[w]&bit != 0 {
		return false
	}
	c.seen[w] |= bit
	return true
}

// page reads page id and its overflow pages, checking its header and that
// nothing else references it.
func (c *fileChecker) page(id uint64, where string) ([]byte, error) {
	if id < 2 || id >= c.hwm {
		return nil, fmt.Errorf("%s: page %d is outside the file's pages [2, %d)", where, id, c.hwm)
	}
	var hdr [pageHeaderSize]byte
	if _, err := c.f.ReadAt(hdr[:], int64(id*c.pageSize)); err != nil {
		return nil, fmt.Errorf("%s: page %d: %w", where, id, err)
	}
	if got := bboltOrder.Uint64(hdr[:]); got != id {
		return nil, fmt.Errorf("%s: page %d identifies itself as page %d", where, id, got)
	}
	overflow := uint64(bboltOrder.Uint32(hdr[12:]))
	if overflow >= c.hwm-id {
		return nil, fmt.Errorf("%s: page %d with %d overflow pages runs past the file's %d pages", where, id, overflow, c.hwm)
	}
	for i := range overflow + 1 {
		if !c.mark(id + i) {
			return nil, fmt.Errorf("%s: page %d is referenced twice", where, id+i)
		}
	}
	b := make([]byte, (overflow+1)*c.pageSize)
	if _, err := c.f.ReadAt(b, int64(id*c.pageSize)); err != nil {
		return nil, fmt.Errorf("%s: page %d: %w", where, id, err)
	}
	return b, nil
}

func (c *fileChecker) freelist(id uint64) error {
	b, err := c.page(id, "freelist")
	if err != nil {
		return err
	}
	if flags := bboltOrder.Uint16(b[8:]); flags != freelistPageFlag {
		return fmt.Errorf("freelist: page %d has type %#x, not freelist", id, flags)
	}
	idx, count := uint64(0), uint64(bboltOrder.Uint16(b[10:]))
	if count == 0xFFFF {
		if len(b) < pageHeaderSize+8 {
			return fmt.Errorf("freelist: page %d too short", id)
		}
		idx, count = 1, bboltOrder.Uint64(b[pageHeaderSize:])
	}
	if count > (uint64(len(b))-pageHeaderSize)/8-idx {
		return fmt.Errorf("freelist: page %d claims %d ids, more than it holds", id, count)
	}
	return nil
}

// bucket checks a bucket whose root page is root, or whose page is inline
// (root 0: the page follows the bucket header in the bucket's value).
func (c *fileChecker) bucket(root uint64, inline []byte, where string) error {
	if root != 0 {
		return c.tree(root, nil, nil, where)
	}
	if len(inline) < pageHeaderSize {
		return fmt.Errorf("%s: inline bucket of %d bytes has no page header", where, len(inline))
	}
	if flags := bboltOrder.Uint16(inline[8:]); flags != leafPageFlag {
		return fmt.Errorf("%s: inline bucket page has type %#x, not leaf", where, flags)
	}
	return c.leaf(inline, nil, nil, where+" (inline)")
}

// tree checks the subtree rooted at page id, whose keys must lie in
// [lo, hi) (nil: unbounded).
func (c *fileChecker) tree(id uint64, lo, hi []byte, where string) error {
	b, err := c.page(id, where)
	if err != nil {
		return err
	}
	where = fmt.Sprintf("%s: page %d", where, id)
	switch flags := bboltOrder.Uint16(b[8:]); flags {
	case leafPageFlag:
		return c.leaf(b, lo, hi, where)
	case branchPageFlag:
	default:
		return fmt.Errorf("%s: type %#x where a branch or leaf page belongs", where, flags)
	}
	count := int(bboltOrder.Uint16(b[10:]))
	if pageHeaderSize+count*elementSize > len(b) {
		return fmt.Errorf("%s: %d elements do not fit the page", where, count)
	}
	keys := make([][]byte, count)
	children := make([]uint64, count)
	for i := range count {
		e := pageHeaderSize + i*elementSize
		pos, ksize := uint64(bboltOrder.Uint32(b[e:])), uint64(bboltOrder.Uint32(b[e+4:]))
		start := uint64(e) + pos
		if start+ksize > uint64(len(b)) || ksize == 0 {
			return fmt.Errorf("%s: element %d: key of %d bytes at %d lies outside the page", where, i, ksize, start)
		}
		keys[i] = b[start : start+ksize]
		children[i] = bboltOrder.Uint64(b[e+8:])
		if err := checkOrder(keys, i, lo, hi); err != nil {
			return fmt.Errorf("%s: branch element %d: %v", where, i, err)
		}
	}
	for i, child := range children {
		next := hi
		if i+1 < count {
			next = keys[i+1]
		}
		if err := c.tree(child, keys[i], next, where); err != nil {
			return err
		}
	}
	return nil
}

// leaf checks the elements of leaf page b and the buckets nested in it.
func (c *fileChecker) leaf(b, lo, hi []byte, where string) error {
	count := int(bboltOrder.Uint16(b[10:]))
	if pageHeaderSize+count*elementSize > len(b) {
		return fmt.Errorf("%s: %d elements do not fit the page", where, count)
	}
	keys := make([][]byte, count)
	for i := range count {
		e := pageHeaderSize + i*elementSize
		flags := bboltOrder.Uint32(b[e:])
		pos := uint64(bboltOrder.Uint32(b[e+4:]))
		ksize := uint64(bboltOrder.Uint32(b[e+8:]))
		vsize := uint64(bboltOrder.Uint32(b[e+12:]))
		start := uint64(e) + pos
		if start+ksize+vsize > uint64(len(b)) || ksize == 0 {
			return fmt.Errorf("%s: element %d: key of %d and value of %d bytes at %d lie outside the page", where, i, ksize, vsize, start)
		}
		keys[i] = b[start : start+ksize]
		if err := checkOrder(keys, i, lo, hi); err != nil {
			return fmt.Errorf("%s: leaf element %d: %v", where, i, err)
		}
		switch flags {
		case 0:
		case bucketLeafFlag:
			v := b[start+ksize : start+ksize+vsize]
			if len(v) < bucketHeaderSize {
				return fmt.Errorf("%s: bucket %q: header of %d bytes", where, keys[i], len(v))
			}
			if err := c.bucket(bboltOrder.Uint64(v), v[bucketHeaderSize:], fmt.Sprintf("%s: bucket %q", where, keys[i])); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: element %d has unknown flags %#x", where, i, flags)
		}
	}
	return nil
}

// checkOrder checks keys[i] against its predecessor and the range [lo, hi).
func checkOrder(keys [][]byte, i int, lo, hi []byte) error {
	k := keys[i]
	if i > 0 && bytes.Compare(keys[i-1], k) >= 0 {
		return fmt.Errorf("key %q does not sort after the previous key %q", k, keys[i-1])
	}
	if i == 0 && lo != nil && bytes.Compare(k, lo) < 0 {
		return fmt.Errorf("key %q sorts before its parent's key %q", k, lo)
	}
	if hi != nil && bytes.Compare(k, hi) >= 0 {
		return fmt.Errorf("key %q does not sort before the next parent key %q", k, hi)
	}
	return nil
}

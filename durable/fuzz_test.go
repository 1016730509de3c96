package durable

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sync"
	"testing"

	"github.com/kvstore/kvstore/internal/fuzzcorpus"
	"github.com/kvstore/kvstore/store"
)

// Fuzzing of what the durable package reads back (docs/testing.md, Fuzzing).
// Decoding arbitrary bytes never panics; what decodes encodes back to the
// same bytes (item, request, digest) or to a record that decodes the same
// (log records: varints have more than one encoding); damage to a log
// gives ErrCorrupt or a torn tail, never other records; damage to a
// checkpoint file gives ErrCorrupt or exactly the state written.

// Seed values, shared by the fuzz targets and the corpus generator.
var (
	seedItems = []store.Item{
		{Value: "v", Version: store.Version{Epoch: 3, Seq: 7}},
		{Value: "", Version: store.Version{Epoch: 1, Seq: 1}},
		{Deleted: true, Version: store.Version{Epoch: 9, Seq: 1 << 40}},
		{Value: "ünïcode\x00bytes", Version: store.Version{Epoch: 1 << 62, Seq: 1<<64 - 1}},
	}
	seedRequests = []store.Request{
		{ID: "n1.x.1", Version: store.Version{Epoch: 3, Seq: 7}},
		{ID: "c.client-request", Version: store.Version{Epoch: 5, Seq: 9}},
	}
	seedDigests = []digest{{}, {Items: 3, ItemSum: 0xdeadbeef, Reqs: 1, ReqSum: 42}}
)

// seedSubs are submissions as a node makes them.
func seedSubs() []sub {
	v := func(e int64, s uint64) store.Version { return store.Version{Epoch: e, Seq: s} }
	return []sub{
		{kind: kindPromise, epoch: 3},
		{kind: kindAppend, entries: []store.Entry{
			{Version: v(3, 1), Op: store.OpNoop},
			{Version: v(3, 2), Op: store.OpSet, Key: "a", Value: "1", ReqID: "n1.x.1"},
			{Version: v(3, 3), Op: store.OpDelete, Key: "b", ReqID: "c.r"},
		}},
		// One item per restore: a record encodes the items in map order,
		// and the corpus files must not change from run to run.
		{kind: kindRestore, snap: store.Snapshot{
			Applied:  v(5, 9),
			Items:    map[string]store.Item{"a": {Value: "2", Version: v(5, 8)}},
			Requests: []store.Request{{ID: "n1.x.1", Version: v(3, 2)}, {ID: "c.s", Version: v(5, 8)}},
		}},
		{kind: kindAppend, entries: []store.Entry{{Version: v(5, 10), Op: store.OpSet, Key: "k", Value: "after the restore"}}},
		{kind: kindRestore, snap: store.Snapshot{Applied: v(6, 12), Items: map[string]store.Item{"b": {Deleted: true, Version: v(6, 11)}}}},
		{kind: kindPromise, epoch: 6},
	}
}

// seedWAL is a log file holding seedSubs with indexes from 1.
func seedWAL() []byte {
	var b []byte
	for i, s := range seedSubs() {
		b = appendRecord(b, uint64(i+1), &s)
	}
	return b
}

// seedGroupSalt is the salt of seedGroupedWAL's file header.
const seedGroupSalt = 0x5eed5a17

// seedGroupedWAL is a log file of this version holding seedSubs in groups
// of 1, 2, 3... submissions, and the offset at which each group starts.
func seedGroupedWAL() (data []byte, groups []int, counts []int) {
	data = appendFileHeader(nil, seedGroupSalt)
	subs := seedSubs()
	for i, size := 0, 1; i < len(subs); size++ {
		n := min(size, len(subs)-i)
		g := make([]byte, groupHeaderLen)
		for j := range n {
			g = appendRecord(g, uint64(i+j+1), &subs[i+j])
		}
		sealGroup(g, seedGroupSalt)
		groups, counts = append(groups, len(data)), append(counts, n)
		data = append(data, g...)
		i += n
	}
	return data, groups, counts
}

// The seeds of the fuzz targets are in testdata/fuzz/<FuzzName>/
// (TestFuzzCorpus makes them from fuzzSeeds).

func FuzzDecodeItem(f *testing.F) {
	f.Fuzz(func(t *testing.T, p []byte) {
		it, err := decodeItem(p)
		if err != nil {
			return
		}
		if it.Deleted && it.Value != "" {
			t.Fatalf("%x: a tombstone with value %q", p, it.Value)
		}
		if got := appendItem(nil, it); !bytes.Equal(got, p) {
			t.Fatalf("%x decodes as %+v, which encodes as %x", p, it, got)
		}
	})
}

func FuzzDecodeRequest(f *testing.F) {
	f.Fuzz(func(t *testing.T, p []byte) {
		r, err := decodeRequest(p)
		if err != nil {
			return
		}
		if r.ID == "" {
			t.Fatalf("%x: a request with an empty id", p)
		}
		if got := appendRequest(nil, r); !bytes.Equal(got, p) {
			t.Fatalf("%x decodes as %+v, which encodes as %x", p, r, got)
		}
	})
}

func FuzzDecodeDigest(f *testing.F) {
	f.Fuzz(func(t *testing.T, p []byte) {
		g, err := decodeDigest(p)
		if (err == nil) != (len(p) == 32) {
			t.Fatalf("%d bytes: %v", len(p), err)
		}
		if err == nil && !bytes.Equal(g.append(nil), p) {
			t.Fatalf("%x decodes as %+v, which encodes as %x", p, g, g.append(nil))
		}
	})
}

// FuzzDecodeRecord decodes a log record's payload.
func FuzzDecodeRecord(f *testing.F) {
	f.Fuzz(func(t *testing.T, p []byte) {
		idx, s, err := decodeRecord(p)
		if err != nil {
			return
		}
		rec := appendRecord(nil, idx, &s)
		q, n, ok := nextRecord(rec)
		if !ok || n != len(rec) {
			t.Fatalf("%x: the record re-encoded does not check: %x", p, rec)
		}
		idx2, s2, err := decodeRecord(q)
		if err != nil || idx2 != idx || !sameSub(s, s2) {
			t.Fatalf("%x decodes as %d %+v, its encoding %x as %d %+v (%v)", p, idx, s, q, idx2, s2, err)
		}
	})
}

func sameSub(a, b sub) bool {
	return a.kind == b.kind && a.epoch == b.epoch && slices.Equal(a.entries, b.entries) &&
		a.snap.Applied == b.snap.Applied && reflect.DeepEqual(a.snap.Items, b.snap.Items) && slices.Equal(a.snap.Requests, b.snap.Requests)
}

// readOnlyLog writes data as the only log file of a new directory and
// reads it.
func readOnlyLog(t *testing.T, data []byte) (dir string, recs []logged, err error) {
	dir = t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, walName(1)), data, 0o600); err != nil {
		t.Fatal(err)
	}
	recs, _, _, _, err = readWAL(dir, 0, true)
	return dir, recs, err
}

// FuzzReadWAL reads arbitrary bytes as the only log file: ErrCorrupt, or
// records with consecutive indexes from the file's first; reading again
// (after the torn tail was cut off) gives the same records and no tail.
func FuzzReadWAL(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		dir, recs, err := readOnlyLog(t, data)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("%v, want ErrCorrupt", err)
			}
			return
		}
		for i, r := range recs {
			if r.idx != uint64(i+1) {
				t.Fatalf("record %d has index %d", i, r.idx)
			}
		}
		again, _, _, torn, err := readWAL(dir, 0, true)
		if err != nil || torn != "" || len(again) != len(recs) {
			t.Fatalf("second read: %d records (first %d), torn %q, %v", len(again), len(recs), torn, err)
		}
		for i := range recs {
			if again[i].idx != recs[i].idx || !sameSub(again[i].sub, recs[i].sub) {
				t.Fatalf("record %d read as %+v, then %+v", i, recs[i], again[i])
			}
		}
	})
}

// FuzzDamagedWAL damages a real log: up to two bursts of at most 32 bits
// (off, xor: four bytes XORed at off; a CRC-32 detects every such burst in
// a record) and a cut at cut (0: none). Reading it must give ErrCorrupt or
// a prefix of the records written, exactly: never a record that differs.
func FuzzDamagedWAL(f *testing.F) {
	want := seedSubs()
	f.Fuzz(func(t *testing.T, off1, xor1, off2, xor2, cut uint32) {
		data := seedWAL()
		for _, d := range [][2]uint32{{off1, xor1}, {off2, xor2}} {
			off := int(d[0]) % len(data)
			var x [4]byte
			binary.BigEndian.PutUint32(x[:], d[1])
			for i := 0; i < 4 && off+i < len(data); i++ {
				data[off+i] ^= x[i]
			}
		}
		if cut > 0 {
			data = data[:int(cut)%len(data)]
		}
		_, recs, err := readOnlyLog(t, data)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("%v, want ErrCorrupt", err)
			}
			return
		}
		if len(recs) > len(want) {
			t.Fatalf("%d records read, %d written", len(recs), len(want))
		}
		for i, r := range recs {
			if r.idx != uint64(i+1) || !sameSub(r.sub, want[i]) {
				t.Fatalf("record %d read as %d %+v, written as %d %+v", i, r.idx, r.sub, i+1, want[i])
			}
		}
	})
}

// FuzzDamagedGroupedWAL damages a log of this version (groups) as
// FuzzDamagedWAL does. Reading it must give ErrCorrupt or a prefix of the
// records written, exactly, ending at a group's end. And damage only from
// the start of the final group on (a cut anywhere leaves such a file: the
// group it cuts is the final one) is a torn write, never ErrCorrupt: every
// group that ends before the first damaged byte is read.
func FuzzDamagedGroupedWAL(f *testing.F) {
	want := seedSubs()
	f.Fuzz(func(t *testing.T, off1, xor1, off2, xor2, cut uint32) {
		data, groups, counts := seedGroupedWAL()
		total := len(data)
		firstDamage := len(data)
		for _, d := range [][2]uint32{{off1, xor1}, {off2, xor2}} {
			off := int(d[0]) % len(data)
			var x [4]byte
			binary.BigEndian.PutUint32(x[:], d[1])
			for i := 0; i < 4 && off+i < len(data); i++ {
				if x[i] != 0 {
					data[off+i] ^= x[i]
					firstDamage = min(firstDamage, off+i)
				}
			}
		}
		if cut > 0 {
			data = data[:int(cut)%len(data)]
			firstDamage = min(firstDamage, len(data))
		}
		// The records of the groups that end before the first damage, and
		// whether the damage is confined to the final group present.
		intact, ends, final := 0, []int{0}, 0
		for i, start := range groups {
			if start < len(data) {
				final = start
			}
			end := total
			if i+1 < len(groups) {
				end = groups[i+1]
			}
			if end <= firstDamage {
				intact += counts[i]
			}
			ends = append(ends, ends[len(ends)-1]+counts[i])
		}
		tornOnly := firstDamage >= final && firstDamage >= fileHeaderLen
		_, recs, err := readOnlyLog(t, data)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("%v, want ErrCorrupt", err)
			}
			if tornOnly {
				t.Fatalf("damage from offset %d, in the final group (at %d): %v, want a torn write", firstDamage, final, err)
			}
			return
		}
		if len(recs) > len(want) || !slices.Contains(ends, len(recs)) {
			t.Fatalf("%d records read, %d written, groups end after %v", len(recs), len(want), ends)
		}
		if len(recs) < intact {
			t.Fatalf("%d records read, but the groups before the damage at %d hold %d", len(recs), firstDamage, intact)
		}
		for i, r := range recs {
			if r.idx != uint64(i+1) || !sameSub(r.sub, want[i]) {
				t.Fatalf("record %d read as %d %+v, written as %d %+v", i, r.idx, r.sub, i+1, want[i])
			}
		}
	})
}

// checkpointSeed is a checkpoint file (state.db, written and closed, so
// that the log is empty) and the state it holds, made once per process.
var checkpointSeed = sync.OnceValues(func() ([]byte, store.Snapshot) {
	dir, err := os.MkdirTemp("", "kvstore-fuzz-checkpoint-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	db, _, err := Open(dir, Options{NoSync: true, MaxRequests: 16})
	if err != nil {
		panic(err)
	}
	ref := store.New(16)
	var es []store.Entry
	for i := range 40 {
		e := store.Entry{Version: store.Version{Epoch: 2, Seq: uint64(i + 1)}, Op: store.OpSet, Key: fmt.Sprintf("key-%02d", i%25), Value: fmt.Sprintf("value-%d", i), ReqID: fmt.Sprintf("req-%d", i)}
		if i%7 == 3 {
			e.Op, e.Value = store.OpDelete, ""
		}
		if _, err := ref.Apply(e); err != nil {
			panic(err)
		}
		es = append(es, e)
	}
	if err := db.Append(es).Wait(context.Background()); err != nil {
		panic(err)
	}
	if err := db.Close(); err != nil {
		panic(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, fileName))
	if err != nil {
		panic(err)
	}
	return data, ref.Snapshot()
})

// FuzzCheckpointFile damages a checkpoint file past its meta pages (as
// TestRandomFlips, with the flips chosen by the fuzzer): two bytes XORed at
// off1 and off2. Open must fail with ErrCorrupt or give exactly the state
// written, and never panic (bbolt panics on some damage in a goroutine of
// its own, which would end the process: the structure check must refuse
// such files first).
func FuzzCheckpointFile(f *testing.F) {
	f.Fuzz(func(t *testing.T, off1 uint32, x1 byte, off2 uint32, x2 byte) {
		orig, want := checkpointSeed()
		data := slices.Clone(orig)
		pageSize := int(binary.NativeEndian.Uint32(data[metaOffset+8:]))
		for _, d := range []struct {
			off uint32
			x   byte
		}{{off1, x1}, {off2, x2}} {
			data[2*pageSize+int(d.off)%(len(data)-2*pageSize)] ^= d.x
		}
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, fileName), data, 0o600); err != nil {
			t.Fatal(err)
		}
		db, st, err := Open(dir, Options{NoSync: true, MaxRequests: 16})
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("%v, want ErrCorrupt", err)
			}
			return
		}
		defer db.Close()
		sameSnapshot(t, "an undetected change", st.Snapshot, want)
	})
}

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the fuzz seed corpora in testdata/fuzz/")

// fuzzSeeds are the seed inputs of each fuzz target, made from real
// records.
func fuzzSeeds() map[string][]fuzzcorpus.Seed {
	out := map[string][]fuzzcorpus.Seed{}
	add := func(target string, values ...any) {
		out[target] = append(out[target], fuzzcorpus.Seed{Name: fmt.Sprint(len(out[target]) + 1), Values: values})
	}
	for _, it := range seedItems {
		add("FuzzDecodeItem", appendItem(nil, it))
	}
	for _, r := range seedRequests {
		add("FuzzDecodeRequest", appendRequest(nil, r))
	}
	for _, g := range seedDigests {
		add("FuzzDecodeDigest", g.append(nil))
	}
	for i, s := range seedSubs() {
		add("FuzzDecodeRecord", appendRecord(nil, uint64(i+1), &s)[recHeaderLen:])
	}
	w := seedWAL()
	add("FuzzReadWAL", w)
	add("FuzzReadWAL", w[:len(w)-3])
	add("FuzzDamagedWAL", uint32(0), uint32(0), uint32(0), uint32(0), uint32(0))
	add("FuzzDamagedWAL", uint32(20), uint32(0x01000000), uint32(0), uint32(0), uint32(0))
	add("FuzzDamagedWAL", uint32(0), uint32(0), uint32(0), uint32(0), uint32(len(w)-5))
	add("FuzzDamagedWAL", uint32(1), uint32(0x40), uint32(len(w)-10), uint32(0xff), uint32(0))
	g, groups, _ := seedGroupedWAL()
	add("FuzzDamagedGroupedWAL", uint32(0), uint32(0), uint32(0), uint32(0), uint32(0))
	add("FuzzDamagedGroupedWAL", uint32(groups[len(groups)-1]), uint32(0xffffffff), uint32(0), uint32(0), uint32(0))
	add("FuzzDamagedGroupedWAL", uint32(groups[1]+3), uint32(0x01), uint32(0), uint32(0), uint32(0))
	add("FuzzDamagedGroupedWAL", uint32(0), uint32(0), uint32(0), uint32(0), uint32(len(g)-5))
	add("FuzzDamagedGroupedWAL", uint32(groups[len(groups)-1]+20), uint32(0x10000000), uint32(len(g)-1), uint32(0xff), uint32(0))
	add("FuzzCheckpointFile", uint32(0), byte(0), uint32(0), byte(0))
	add("FuzzCheckpointFile", uint32(100), byte(0x01), uint32(0), byte(0))
	add("FuzzCheckpointFile", uint32(4096+16), byte(0x80), uint32(12), byte(0x02))
	return out
}

// TestFuzzCorpus keeps testdata/fuzz/ in step with fuzzSeeds
// (-update-corpus rewrites it).
func TestFuzzCorpus(t *testing.T) {
	for target, seeds := range fuzzSeeds() {
		fuzzcorpus.Sync(t, target, *updateCorpus, seeds)
	}
}

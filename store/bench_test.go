package store

import (
	"fmt"
	"testing"
)

// benchStore is a store of n keys of 100-byte values.
func benchStore(b *testing.B, n int) (*Store, []string) {
	b.Helper()
	s := New(0)
	keys := make([]string, n)
	val := string(make([]byte, 100))
	for i := range keys {
		keys[i] = fmt.Sprintf("key-%08d", i*7919%n)
		if _, err := s.Apply(Entry{Version: Version{Epoch: 1, Seq: uint64(i + 1)}, Op: OpSet, Key: keys[i], Value: val}); err != nil {
			b.Fatal(err)
		}
	}
	return s, keys
}

// BenchmarkGet reads keys of a store of 100,000.
func BenchmarkGet(b *testing.B) {
	s, keys := benchStore(b, 100000)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, ok := s.Get(keys[i%len(keys)]); !ok {
			b.Fatal("missing")
		}
		i++
	}
}

// BenchmarkApply overwrites keys of a store of 100,000, with request ids.
func BenchmarkApply(b *testing.B) {
	s, keys := benchStore(b, 100000)
	val := string(make([]byte, 100))
	ids := make([]string, 1024)
	for i := range ids {
		ids[i] = fmt.Sprintf("req-%d", i)
	}
	b.ReportAllocs()
	seq := s.Applied().Seq
	i := 0
	for b.Loop() {
		seq++
		id := fmt.Sprint(seq)
		if _, err := s.Apply(Entry{Version: Version{Epoch: 1, Seq: seq}, Op: OpSet, Key: keys[i%len(keys)], Value: val, ReqID: id}); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

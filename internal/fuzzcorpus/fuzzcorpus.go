// Package fuzzcorpus keeps the seed corpora of the fuzz targets in
// testdata/fuzz/<FuzzName>/, in the file format of go test -fuzz ("go test
// fuzz v1"), so that plain go test runs every seed. Each package builds its
// seeds from real messages in a test that calls Sync: with update set it
// writes them, otherwise it fails if a file is missing or differs, so the
// files follow the code that makes them.
//
//	go test ./node -run TestFuzzCorpus -update-corpus
//
// Files named seed-* are Sync's; any other file in the directory (a crasher
// go test -fuzz found, committed after its fix) is left alone.
package fuzzcorpus

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Encode returns a corpus file holding one input: values of the fuzz
// function's parameters, in order ([]byte, string, bool, byte, int, int64,
// uint32 or uint64).
func Encode(values ...any) []byte {
	var b bytes.Buffer
	b.WriteString("go test fuzz v1\n")
	for _, v := range values {
		switch v := v.(type) {
		case []byte:
			fmt.Fprintf(&b, "[]byte(%q)\n", v)
		case string:
			fmt.Fprintf(&b, "string(%q)\n", v)
		case bool:
			fmt.Fprintf(&b, "bool(%v)\n", v)
		case byte:
			fmt.Fprintf(&b, "byte(%q)\n", v)
		case int:
			fmt.Fprintf(&b, "int(%d)\n", v)
		case int64:
			fmt.Fprintf(&b, "int64(%d)\n", v)
		case uint32:
			fmt.Fprintf(&b, "uint32(%d)\n", v)
		case uint64:
			fmt.Fprintf(&b, "uint64(%d)\n", v)
		default:
			panic(fmt.Sprintf("fuzzcorpus: no corpus encoding for %T", v))
		}
	}
	return b.Bytes()
}

// Seed is one named input of a fuzz target.
type Seed struct {
	Name   string // the file is seed-<Name>
	Values []any  // as Encode takes them
}

// Sync makes testdata/fuzz/<target>/ hold one file per seed (see the
// package comment). Seed files no longer made are removed with update and
// reported without.
func Sync(t *testing.T, target string, update bool, seeds []Seed) {
	t.Helper()
	dir := filepath.Join("testdata", "fuzz", target)
	if update {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]bool{}
	for _, s := range seeds {
		name := "seed-" + s.Name
		want[name] = true
		path := filepath.Join(dir, name)
		data := Encode(s.Values...)
		got, err := os.ReadFile(path)
		switch {
		case err == nil && bytes.Equal(got, data):
		case update:
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
		default:
			t.Errorf("%s is missing or out of date (go test -run TestFuzzCorpus -update-corpus rewrites it)", path)
		}
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "seed-") && !want[e.Name()] {
			path := filepath.Join(dir, e.Name())
			if update {
				if err := os.Remove(path); err != nil {
					t.Fatal(err)
				}
			} else {
				t.Errorf("%s is no longer made (go test -run TestFuzzCorpus -update-corpus removes it)", path)
			}
		}
	}
}

package node

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestMoveAsideSyncsEveryStep: setting a corrupt data directory aside
// syncs the directory once the aside directory exists in it, and both
// directories after every rename, before the next one, so a crash keeps
// a prefix of the moves. Each sync is checked against what the
// directories hold when it is made.
func TestMoveAsideSyncsEveryStep(t *testing.T) {
	dir := t.TempDir()
	files := []string{"lock", "state.db", "wal-0000000000000001.log", "wal-0000000000000100.log"}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(f), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	aside := filepath.Join(dir, "corrupt-1")
	var got []string
	real := syncDir
	syncDir = func(d string) error {
		moved, _ := os.ReadDir(aside)
		got = append(got, fmt.Sprintf("%s:%d", filepath.Base(d), len(moved)))
		return real(d)
	}
	defer func() { syncDir = real }()
	if err := moveAside(dir, aside); err != nil {
		t.Fatal(err)
	}
	want := []string{filepath.Base(dir) + ":0"}
	for i := range files {
		want = append(want, fmt.Sprintf("corrupt-1:%d", i+1), fmt.Sprintf("%s:%d", filepath.Base(dir), i+1))
	}
	if !slices.Equal(got, want) {
		t.Fatalf("directory syncs (directory:files moved so far) = %v, want %v", got, want)
	}
	for _, f := range files {
		if b, err := os.ReadFile(filepath.Join(aside, f)); err != nil || string(b) != f {
			t.Errorf("%s set aside: %q, %v", f, b, err)
		}
		if _, err := os.Stat(filepath.Join(dir, f)); !os.IsNotExist(err) {
			t.Errorf("%s still in the data directory (%v)", f, err)
		}
	}
}

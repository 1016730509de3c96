package buildinfo

import (
	"runtime"
	"strings"
	"testing"
)

func TestGet(t *testing.T) {
	old, oldCommit := Version, Commit
	t.Cleanup(func() { Version, Commit = old, oldCommit })
	Version, Commit = "v9.8.7", ""
	i := Get()
	if i.Version != "v9.8.7" || i.Commit == "" || i.GoVersion != runtime.Version() {
		t.Fatalf("Get() = %+v, want version v9.8.7, a commit and %s", i, runtime.Version())
	}
	if s := i.String(); !strings.HasPrefix(s, "kvstore v9.8.7 (commit ") || !strings.Contains(s, runtime.Version()) {
		t.Fatalf("String() = %q", s)
	}
}

// TestCommitFallback: a build without VCS stamping (test binaries have
// none) reports the Commit set at link time, else "unknown".
func TestCommitFallback(t *testing.T) {
	old := Commit
	t.Cleanup(func() { Commit = old })
	Commit = ""
	if c := Get().Commit; c != "unknown" {
		t.Skipf("this binary carries VCS stamping (commit %s): nothing to fall back from", c)
	}
	Commit = "0123abc"
	if c := Get().Commit; c != "0123abc" {
		t.Fatalf("Commit = %q, want the link-time 0123abc", c)
	}
}

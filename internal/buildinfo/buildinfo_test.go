package buildinfo

import (
	"runtime"
	"strings"
	"testing"
)

func TestGet(t *testing.T) {
	old := Version
	t.Cleanup(func() { Version = old })
	Version = "v9.8.7"
	i := Get()
	if i.Version != "v9.8.7" || i.Commit == "" || i.GoVersion != runtime.Version() {
		t.Fatalf("Get() = %+v, want version v9.8.7, a commit and %s", i, runtime.Version())
	}
	if s := i.String(); !strings.HasPrefix(s, "kvstore v9.8.7 (commit ") || !strings.Contains(s, runtime.Version()) {
		t.Fatalf("String() = %q", s)
	}
}

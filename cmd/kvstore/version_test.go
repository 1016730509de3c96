package main

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/kvstore/kvstore/internal/buildinfo"
)

// TestVersion checks that `kvstore version` and `kvstore --version` print
// the build: version, commit and Go version.
func TestVersion(t *testing.T) {
	want := buildinfo.Get().String() + "\n"
	for _, args := range [][]string{{"version"}, {"--version"}} {
		out, code := runKVStore(t, args...)
		if code != 0 || out != want {
			t.Errorf("kvstore %v: exit %d, output %q; want exit 0, %q", args, code, out, want)
		}
	}
	if !strings.HasPrefix(want, "kvstore devel (commit ") || !strings.Contains(want, runtime.Version()) {
		t.Errorf("version line %q: want devel, a commit and %s", want, runtime.Version())
	}
	if out, code := runKVStore(t, "version", "extra"); code != exitUsage {
		t.Errorf("kvstore version extra: exit %d (%q), want usage error %d", code, out, exitUsage)
	}
}

// TestVersionLdflags builds the binary with the version set at link time,
// as a release does, and checks both spellings print it.
func TestVersionLdflags(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "kvstore")
	ld := "-X github.com/kvstore/kvstore/internal/buildinfo.Version=v9.8.7-test"
	if out, err := exec.Command("go", "build", "-ldflags", ld, "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, arg := range []string{"version", "--version"} {
		out, err := exec.Command(bin, arg).CombinedOutput()
		if err != nil || !strings.HasPrefix(string(out), "kvstore v9.8.7-test (commit ") || !strings.Contains(string(out), runtime.Version()) {
			t.Errorf("kvstore %s: %v, output %q; want kvstore v9.8.7-test (commit ..., %s)", arg, err, out, runtime.Version())
		}
	}
}

package main

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/kvstore/kvstore/bench"
	"github.com/kvstore/kvstore/internal/buildinfo"
	"github.com/kvstore/kvstore/internal/soon"
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
// as a release does, and checks that both spellings print it, that a node
// of that build logs it at start and that kvstore members shows it; the
// node keeps a data directory with fsync, which kvstore bench --endpoints
// must report instead of "memory" (FINDINGS).
func TestVersionLdflags(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs a node")
	}
	const version = "v9.8.7-test"
	bin := filepath.Join(t.TempDir(), "kvstore")
	ld := "-X github.com/kvstore/kvstore/internal/buildinfo.Version=" + version
	if out, err := exec.Command("go", "build", "-ldflags", ld, "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, arg := range []string{"version", "--version"} {
		out, err := exec.Command(bin, arg).CombinedOutput()
		if err != nil || !strings.HasPrefix(string(out), "kvstore "+version+" (commit ") || !strings.Contains(string(out), runtime.Version()) {
			t.Errorf("kvstore %s: %v, output %q; want kvstore %s (commit ..., %s)", arg, err, out, version, runtime.Version())
		}
	}

	etcd := startEtcd(t)
	env := []string{"KVSTORE_ETCD=" + etcd.Endpoint(), "KVSTORE_CLUSTER=ver"}
	nd := startNodeArgs(t, bin, "v0", []string{"--data-dir", t.TempDir()}, env...)
	soon.Succeeds(t, 30*time.Second, func() error {
		out, code := ctl(t, bin, "members", "--endpoints", nd.addr, "--timeout", "5s")
		if want := "v0 " + nd.addr + " leader voter " + version + "\n"; code != 0 || !strings.Contains(out, want) {
			return fmt.Errorf("members (exit %d): %q, want a line %q", code, out, want)
		}
		return nil
	})
	if log := nd.log.String(); !regexp.MustCompile(`msg="node started" .*version=` + version + ` commit=\S+ go_version=` + runtime.Version()).MatchString(log) {
		t.Errorf("the node's start line does not name its build:\n%s", log)
	}

	out, code := ctl(t, bin, "bench", "--endpoints", nd.addr, "--workload", "C", "--keys", "10", "--clients", "2",
		"--duration", "200ms", "--warmup", "50ms", "--json")
	var res []bench.Result
	if err := json.Unmarshal([]byte(out), &res); code != 0 || err != nil || len(res) != 1 {
		t.Fatalf("bench --endpoints: exit %d, %v: %q", code, err, out)
	}
	if want := "fsync, 1 replicas (majority acknowledged)"; res[0].Durability != want {
		t.Errorf("bench --endpoints of a node with a data directory: durability %q, want %q", res[0].Durability, want)
	}
}

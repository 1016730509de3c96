package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvstore/kvstore/zkserver"
)

// built is the kvstore binary the package's tests run, built once by the
// first test that needs it and removed by TestMain. Building it in every
// test cost a link of the whole binary each time: minutes of the package's
// time on a busy machine, and the cause of its hitting go test's timeout.
var built struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

// TestMain removes the binary the tests built.
func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		_ = os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// buildBinary returns the kvstore binary, building it on first use.
func buildBinary(t *testing.T) string {
	t.Helper()
	built.once.Do(func() {
		if built.dir, built.err = os.MkdirTemp("", "kvstore-bin-"); built.err != nil {
			return
		}
		bin := filepath.Join(built.dir, "kvstore")
		if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
			built.err = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
		built.bin = bin
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.bin
}

// runScript pipes script into the binary, as `printf ... | kvstore` does.
func runScript(t *testing.T, bin, script string, args ...string) (stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Stdin = strings.NewReader(script)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("kvstore exited with %v\nstdout:\n%s\nstderr:\n%s", err, out.String(), errOut.String())
		}
	case <-time.After(120 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("kvstore did not exit\nstdout:\n%s\nstderr:\n%s", out.String(), errOut.String())
	}
	return out.String(), errOut.String()
}

func TestReadmePipeline(t *testing.T) {
	bin := buildBinary(t)
	out, errOut := runScript(t, bin, "put 0 a 1\nget 0 a\n")
	if out != "OK\n1\n" || errOut != "" {
		t.Fatalf("stdout %q stderr %q, want exactly \"OK\\n1\\n\" and nothing", out, errOut)
	}
}

// TestShellDataDir: with --data-dir the nodes keep their data across
// restart and across shells (the embedded coordinator keeps the voter
// record there too).
func TestShellDataDir(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	out, errOut := runScript(t, bin, "put 0 a 1\nput 1 b two words\nkill 0\nrestart 0\nget 0 a\n", "--data-dir", dir, "--nodes", "2")
	if out != "OK\nOK\nOK\nOK\n1\n" || errOut != "" {
		t.Fatalf("first shell: stdout %q stderr %q", out, errOut)
	}
	out, errOut = runScript(t, bin, "get 0 a\nget 1 b\n", "--data-dir", dir, "--nodes", "2")
	if out != "1\ntwo words\n" || errOut != "" {
		t.Fatalf("second shell on the same data: stdout %q stderr %q, want the values written by the first", out, errOut)
	}
}

// TestShellSurvivesFaults runs the same script on every coordinator: the
// embedded etcd, an external ZooKeeper server named by --zookeeper (with a
// chroot), and a ZooKeeper server the shell starts itself.
func TestShellSurvivesFaults(t *testing.T) {
	bin := buildBinary(t)
	for _, tc := range []struct {
		name string
		args func(t *testing.T) []string
	}{
		{"etcd", func(*testing.T) []string { return nil }},
		{"zookeeper-external", func(t *testing.T) []string {
			return []string{"--zookeeper", strings.Join(startZooKeeper(t), ",") + "/shelltest"}
		}},
		{"zookeeper-local", func(t *testing.T) []string {
			zkserver.SkipIfUnavailable(t)
			return []string{"--backend", "zookeeper"}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) { shellSurvivesFaults(t, bin, tc.args(t)) })
	}
}

// startZooKeeper starts a standalone ZooKeeper server for one test.
func startZooKeeper(t *testing.T) []string {
	t.Helper()
	zkserver.SkipIfUnavailable(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv, err := zkserver.StartEnsemble(ctx, zkserver.DefaultConfig(), 1)
	if err != nil {
		t.Fatalf("start ZooKeeper: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("close ZooKeeper: %v", err)
		}
	})
	return srv.Servers()
}

func shellSurvivesFaults(t *testing.T, bin string, args []string) {
	// Three nodes; cut the leader (node 0) from the coordinator; the others
	// elect a new leader and keep the data. (Rejoining after zk-up is checked
	// with a deadline in package cluster.)
	script := strings.Join([]string{
		"new-client", "new-client",
		"put 1 k before",
		"get 2 k",
		"zk-down 0",
		"put 2 k after",
		"get 1 k",
		"zk-up 0",
		"kill 1",
		"get 2 k",
		"restart 1",
		"get 1 k",
		"bogus",
	}, "\n") + "\n"
	out, errOut := runScript(t, bin, script, args...)
	want := "1\n2\nOK\nbefore\nOK\nOK\nafter\nOK\nOK\nafter\nOK\nafter\n"
	if out != want {
		t.Fatalf("stdout:\n%s\nwant:\n%s\nstderr:\n%s", out, want, errOut)
	}
	if errOut != "error: unknown command \"bogus\" (try help)\n" {
		t.Fatalf("stderr %q", errOut)
	}
}

// TestCoordinatorFlagErrors checks that contradictory or malformed
// coordinator flags fail at once with a message naming the flag.
func TestCoordinatorFlagErrors(t *testing.T) {
	bin := buildBinary(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--etcd", "127.0.0.1:1", "--zookeeper", "127.0.0.1:2"}, "choose one coordinator"},
		{[]string{"--zookeeper", "127.0.0.1:2/bad/"}, "--zookeeper"},
		{[]string{"--zookeeper", "/only-chroot"}, "--zookeeper"},
		{[]string{"--backend", "consul"}, "--backend"},
		{[]string{"--backend", "etcd", "--zookeeper", "127.0.0.1:2"}, "--backend etcd"},
	} {
		cmd := exec.Command(bin, tc.args...)
		cmd.Stdin = strings.NewReader("")
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("kvstore %v: %v, output %q; want a failure mentioning %q", tc.args, err, out, tc.want)
		}
	}
}

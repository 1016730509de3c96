package main

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/kvstore/kvstore/bench"
)

// TestBenchCommand runs `kvstore bench` on a short read-only workload
// against its in-process cluster and checks the JSON it prints.
func TestBenchCommand(t *testing.T) {
	bin := buildBinary(t)
	cmd := exec.Command(bin, "bench", "--workload", "C", "--duration", "1s", "--warmup", "200ms", "--clients", "4", "--keys", "100", "--json")
	cmd.Env = coordEnv()
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("kvstore bench: %v\nstdout:\n%s\nstderr:\n%s", err, out.String(), errOut.String())
		}
	case <-time.After(90 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("kvstore bench did not exit\nstdout:\n%s\nstderr:\n%s", out.String(), errOut.String())
	}
	var results []bench.Result
	if err := json.Unmarshal(out.Bytes(), &results); err != nil {
		t.Fatalf("stdout is not a JSON array of results: %v\n%s", err, out.String())
	}
	if len(results) != 1 {
		t.Fatalf("%d results, want 1:\n%s", len(results), out.String())
	}
	r := results[0]
	if r.Ops == 0 || r.Errors != 0 || r.Workload != "C" || r.Clients != 4 || r.Keys != 100 || r.Distribution != "zipfian" || !strings.HasPrefix(r.Target, "kvstore") {
		t.Fatalf("result %+v", r)
	}
	if !strings.Contains(errOut.String(), "loaded 100 keys") {
		t.Errorf("no load progress on stderr:\n%s", errOut.String())
	}
}

// TestBenchFlags checks the command line's validation (exit code 2) and the
// environment binding, without running anything.
func TestBenchFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  []string
		want string
	}{
		{[]string{"--workload", "A,X"}, nil, `--workload "X"`},
		{[]string{"--distribution", "latest"}, nil, "--distribution"},
		{[]string{"--clients", "0"}, nil, "--clients"},
		{[]string{"--compare", "consul"}, nil, "--compare"},
		{nil, []string{"KVSTORE_KEYS=many"}, "KVSTORE_KEYS"},
		{nil, []string{"KVSTORE_WORKLOAD=Q"}, `--workload "Q"`},
	} {
		t.Run(strings.Join(append(tc.args, tc.env...), " "), func(t *testing.T) {
			for _, kv := range tc.env {
				k, v, _ := strings.Cut(kv, "=")
				t.Setenv(k, v)
			}
			cmd := newRootCmd()
			var out, errOut bytes.Buffer
			cmd.SetOut(&out)
			cmd.SetErr(&errOut)
			cmd.SetArgs(append([]string{"bench"}, tc.args...))
			err := cmd.Execute()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one naming %s", err, tc.want)
			}
		})
	}
	if code := exitCode(runBench(t.Context(), benchFlags{workloads: []string{"Z"}}, nil, nil)); code != exitUsage {
		t.Errorf("bad workload: exit code %d, want %d", code, exitUsage)
	}
}

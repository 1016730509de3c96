package main

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/kvstore/kvstore/internal/soon"
)

// TestForceNewClusterAfterCoordinatorLoss: a node with data refuses to
// start on an empty (rebuilt) coordinator and names the recovery command;
// --force-new-cluster=<id> restarts the cluster from its data.
func TestForceNewClusterAfterCoordinatorLoss(t *testing.T) {
	bin := buildBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	old := startEtcd(t)
	dir := t.TempDir()
	env := []string{"KVSTORE_CLUSTER=rec", "KVSTORE_DATA_DIR=" + dir}
	first := startNodes(t, bin, "r", 1, append(env, "KVSTORE_ETCD="+old.Endpoint())...)[0]
	if out, code := ctl(t, bin, "put", "--endpoints", first.addr, "k", "kept"); code != 0 || out != "OK\n" {
		t.Fatalf("put: exit %d, %q", code, out)
	}
	first.stop(t)

	// The coordinator is rebuilt from nothing.
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	rebuilt := startEtcd(t)
	env = append(env, "KVSTORE_ETCD="+rebuilt.Endpoint())

	// An environment variable does not force anything: only the flag does.
	rctx, rcancel := context.WithTimeout(ctx, 20*time.Second)
	defer rcancel()
	cmd := exec.CommandContext(rctx, bin, "node", "--id", "r0", "--listen", freeAddr(t))
	cmd.Env = append(cmd.Environ(), append(env, "KVSTORE_FORCE_NEW_CLUSTER=r0")...)
	out, err := cmd.CombinedOutput()
	code, perr := processExit(err)
	if perr != nil || code != exitFailed || !strings.Contains(string(out), "appears rebuilt") || !strings.Contains(string(out), "--force-new-cluster=") {
		t.Fatalf("node with data on a rebuilt coordinator: exit %d (%v), output:\n%s\nwant exit %d naming the recovery command", code, perr, out, exitFailed)
	}

	p := startNodeArgs(t, bin, "r0", []string{"--force-new-cluster=r0"}, env...)
	soon.Succeeds(t, 30*time.Second, func() error {
		if out, code := ctl(t, bin, "get", "--endpoints", p.addr, "--timeout", "5s", "k"); code != 0 || out != "kept\n" {
			return fmt.Errorf("get after the recovery: exit %d, %q", code, out)
		}
		return nil
	})
	p.stop(t) // the log is complete (and no longer written) once it exited
	if log := p.log.String(); !strings.Contains(log, "FORCE-NEW-CLUSTER") || !strings.Contains(log, "LOST") {
		t.Fatalf("the recovery did not say what may be lost:\n%s", log)
	}
}

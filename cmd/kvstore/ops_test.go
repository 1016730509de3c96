package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/kvstore/kvstore/internal/soon"
)

// httpGet fetches url and returns the status code and body.
func httpGet(url string) (int, string, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	defer c.CloseIdleConnections()
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// TestNodeMetricsListen runs a `kvstore node` process with
// KVSTORE_METRICS_LISTEN (the environment form of --metrics-listen): its ops
// server answers /healthz, /readyz once the node serves, /metrics with the
// node's metrics, and pprof; and it stops with the node.
func TestNodeMetricsListen(t *testing.T) {
	bin := buildBinary(t)
	etcd := startEtcd(t)
	// A port found free may be taken by another process before the node
	// binds it (seen in CI): the node then exits, and the test starts
	// another on new ports, at most three times.
	var p *nodeProc
	var metrics, base string
	for attempt := 1; ; attempt++ {
		metrics = freeAddr(t)
		p = startNode(t, bin, "m0", "KVSTORE_ETCD="+etcd.Endpoint(), "KVSTORE_CLUSTER=opsproc", "KVSTORE_METRICS_LISTEN="+metrics)
		base = "http://" + metrics
		taken := false
		soon.Succeeds(t, 30*time.Second, func() error {
			select {
			case <-p.exited:
				if attempt < 3 && strings.Contains(p.log.String(), "address already in use") {
					taken = true
					return nil
				}
				return fmt.Errorf("node exited:\n%s", p.log.String())
			default:
			}
			code, body, err := httpGet(base + "/readyz")
			if err != nil || code != 200 {
				return fmt.Errorf("/readyz: %d %q %v", code, body, err)
			}
			return nil
		})
		if !taken {
			break
		}
	}
	if code, body, err := httpGet(base + "/healthz"); err != nil || code != 200 {
		t.Errorf("/healthz: %d %q %v", code, body, err)
	}
	if code, body, err := httpGet(base + "/debug/pprof/"); err != nil || code != 200 || !strings.Contains(body, "goroutine") {
		t.Errorf("/debug/pprof/: %d %v", code, err)
	}
	if out, code := ctl(t, bin, "put", "--endpoints", p.addr, "k", "v"); code != 0 {
		t.Fatalf("put: exit %d, %q", code, out)
	}
	code, body, err := httpGet(base + "/metrics")
	if err != nil || code != 200 {
		t.Fatalf("/metrics: %d %v", code, err)
	}
	for _, want := range []string{
		"\nkvstore_is_leader 1\n", "\nkvstore_serving 1\n",
		`kvstore_operations_total{op="put",outcome="ok"} 1`,
		"go_goroutines", "process_resident_memory_bytes",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	p.stop(t)
	if !strings.Contains(p.log.String(), "ops server listening") || !strings.Contains(p.log.String(), metrics) {
		t.Errorf("the log does not name the ops address %s:\n%s", metrics, p.log.String())
	}
	if _, err := net.DialTimeout("tcp", metrics, time.Second); err == nil {
		t.Error("the ops server still accepts connections after the node exited")
	}
}

// TestNodeMetricsListenBusy: an address that cannot be bound fails the
// command, naming the flag.
func TestNodeMetricsListenBusy(t *testing.T) {
	bin := buildBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	etcd := startEtcd(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cmd := exec.CommandContext(ctx, bin, "node", "--id", "b0", "--listen", freeAddr(t), "--etcd", etcd.Endpoint(),
		"--metrics-listen", busy.Addr().String())
	cmd.Env = os.Environ()
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--metrics-listen") {
		t.Errorf("kvstore node with a busy --metrics-listen: %v\n%s", err, out)
	}
}

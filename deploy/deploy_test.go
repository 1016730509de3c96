// Package deploy holds the container image and the compose file of a
// KVStore cluster, and the test that runs that cluster under faults.
package deploy

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvstore/kvstore/client"
	"github.com/kvstore/kvstore/internal/soon"
	"github.com/kvstore/kvstore/robustness/linearizability"
	"github.com/kvstore/kvstore/robustness/workload"
)

const (
	coordinators = 3
	nodes        = 5
	keys         = 4
)

// requireDocker skips the test where no Docker engine answers.
func requireDocker(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"docker", "docker-compose"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found: the container test needs a Docker engine and docker-compose", tool)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		t.Skipf("no Docker engine answers: %v: %s", err, bytes.TrimSpace(out))
	}
}

// run runs a command, failing the test with its output if it fails.
func run(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	out, err := runErr(env, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func runErr(env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// composeCluster is one compose project of the cluster.
type composeCluster struct {
	project, prefix string
	env             []string

	mu  sync.Mutex
	ids map[string]string // service -> container id, as looked up
	net string            // the network's id, once looked up
}

func (c *composeCluster) compose(t *testing.T, args ...string) string {
	t.Helper()
	return run(t, c.env, "docker-compose", append([]string{"-f", "compose.yaml", "-p", c.project}, args...)...)
}

// container is the id of service's container, asked of docker-compose
// (container names differ: docker-compose v1 says <project>_<service>_1,
// compose v2 <project>-<service>-1). The id is looked up on first use,
// while the container runs, and kept: it survives kill, start, pause and
// restart.
func (c *composeCluster) container(t *testing.T, service string) string {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if id, ok := c.ids[service]; ok {
		return id
	}
	ids := strings.Fields(c.compose(t, "ps", "-q", service))
	if len(ids) != 1 {
		t.Fatalf("docker-compose ps -q %s: %q, want one container id", service, ids)
	}
	if c.ids == nil {
		c.ids = map[string]string{}
	}
	c.ids[service] = ids[0]
	return ids[0]
}

// network is the id of the compose file's network kv, found by the labels
// docker-compose (v1 and v2) puts on it.
func (c *composeCluster) network(t *testing.T) string {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.net != "" {
		return c.net
	}
	ids := strings.Fields(run(t, nil, "docker", "network", "ls", "-q",
		"--filter", "label=com.docker.compose.project="+c.project,
		"--filter", "label=com.docker.compose.network=kv"))
	if len(ids) != 1 {
		t.Fatalf("docker network ls for project %s, network kv: %q, want one network id", c.project, ids)
	}
	c.net = ids[0]
	return c.net
}

// recreate kills every container (SIGKILL, as a crashed host), removes
// them and the network, keeping the named volumes, and brings the project
// up again: new containers that must find their data where they left it.
func (c *composeCluster) recreate(t *testing.T) {
	t.Helper()
	c.compose(t, "kill")
	c.compose(t, "down", "-t", "1")
	c.mu.Lock()
	c.ids, c.net = nil, ""
	c.mu.Unlock()
	c.compose(t, "up", "-d")
}

// healthy waits until Docker reports every container healthy: each
// service's healthcheck (kvstore healthcheck, run inside the image) passes.
func healthy(t *testing.T, c *composeCluster, within time.Duration) {
	t.Helper()
	services := []string{"coord0", "coord1", "coord2"}
	for i := 0; i < nodes; i++ {
		services = append(services, fmt.Sprint("node", i))
	}
	soon.Succeeds(t, within, func() error {
		for _, s := range services {
			out, err := runErr(nil, "docker", "inspect", "--format", "{{.State.Health.Status}}", c.container(t, s))
			if err != nil {
				return fmt.Errorf("docker inspect %s: %v: %s", s, err, out)
			}
			if st := strings.TrimSpace(out); st != "healthy" {
				return fmt.Errorf("%s is %s", s, st)
			}
		}
		return nil
	})
}

func (c *composeCluster) nodeIP(i int) string   { return fmt.Sprintf("%s.%d", c.prefix, 20+i) }
func (c *composeCluster) endpoint(i int) string { return c.nodeIP(i) + ":7000" }

// start builds the image and brings the project up on a free /24.
func start(t *testing.T) *composeCluster {
	t.Helper()
	dir := t.TempDir()
	// A static build shares nothing with the race-enabled builds in the
	// cache: on a busy machine it compiles everything, etcd included, and
	// may take longer than runErr's bound for a docker command. It may take
	// what is left of the test's own time.
	ctx, cancel := context.Background(), context.CancelFunc(func() {})
	if d, ok := t.Deadline(); ok {
		ctx, cancel = context.WithDeadline(ctx, d.Add(-30*time.Second))
	}
	defer cancel()
	build := exec.CommandContext(ctx, "go", "build", "-tags", "nofaults", "-trimpath", "-o", filepath.Join(dir, "kvstore"), "../cmd/kvstore")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	df, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), df, 0o644); err != nil {
		t.Fatal(err)
	}
	tag := fmt.Sprintf("kvstore:test-%d", rand.Uint32())
	run(t, nil, "docker", "build", "-q", "-t", tag, dir)
	t.Cleanup(func() { _, _ = runErr(nil, "docker", "rmi", "-f", tag) })

	c := &composeCluster{project: fmt.Sprintf("kvstoretest%d", rand.Uint32()%1_000_000)}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		c.prefix = fmt.Sprintf("172.30.%d", 100+rand.IntN(150))
		c.env = []string{"KVSTORE_IMAGE=" + tag, "KVSTORE_SUBNET_PREFIX=" + c.prefix}
		out, err := runErr(c.env, "docker-compose", "-f", "compose.yaml", "-p", c.project, "up", "-d")
		if err == nil {
			t.Cleanup(func() {
				if t.Failed() {
					logs, _ := runErr(c.env, "docker-compose", "-f", "compose.yaml", "-p", c.project, "logs", "--no-color", "--tail", "60")
					t.Logf("container logs:\n%s", logs)
				}
				if out, err := runErr(c.env, "docker-compose", "-f", "compose.yaml", "-p", c.project, "down", "-v", "--remove-orphans", "-t", "1"); err != nil {
					t.Errorf("compose down: %v\n%s", err, out)
				}
			})
			return c
		}
		lastErr = fmt.Errorf("%v: %s", err, out)
		_, _ = runErr(c.env, "docker-compose", "-f", "compose.yaml", "-p", c.project, "down", "-v", "--remove-orphans", "-t", "1")
		if !strings.Contains(out, "overlap") {
			break
		}
	}
	t.Fatalf("compose up: %v", lastErr)
	return nil
}

// clients is the workload's view of the cluster: one client per node, that
// node's endpoint first and the others after it, so an operation moves to
// another node when its own cannot serve.
type clients struct{ per []*client.Client }

func newClients(t *testing.T, c *composeCluster) *clients {
	t.Helper()
	cs := &clients{}
	for i := 0; i < nodes; i++ {
		var eps []string
		for j := 0; j < nodes; j++ {
			eps = append(eps, c.endpoint((i+j)%nodes))
		}
		cl, err := client.New(client.Config{Endpoints: eps})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		cs.per = append(cs.per, cl)
	}
	return cs
}

func (cs *clients) Size() int { return len(cs.per) }
func (cs *clients) Get(ctx context.Context, n int, key string) (string, bool, error) {
	return cs.per[n].Get(ctx, key)
}
func (cs *clients) Put(ctx context.Context, n int, key, value string) error {
	return cs.per[n].Put(ctx, key, value)
}
func (cs *clients) Delete(ctx context.Context, n int, key string) error {
	return cs.per[n].Delete(ctx, key)
}

var _ workload.Client = (*clients)(nil)

// leader asks the cluster which node leads.
func leader(t *testing.T, cs *clients) string {
	t.Helper()
	var id string
	soon.Succeeds(t, 30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		st, err := cs.per[0].Status(ctx)
		if err != nil {
			return err
		}
		if st.Leader == "" {
			return fmt.Errorf("%s sees no leader", st.ID)
		}
		id = st.Leader
		return nil
	})
	return id
}

// serving waits until every node answers a read itself.
func serving(t *testing.T, c *composeCluster, within time.Duration) {
	t.Helper()
	for i := 0; i < nodes; i++ {
		cl, err := client.New(client.Config{Endpoints: []string{c.endpoint(i)}})
		if err != nil {
			t.Fatal(err)
		}
		soon.Succeeds(t, within, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_, _, err := cl.Get(ctx, "k0")
			return err
		})
		cl.Close()
	}
}

// TestComposeClusterUnderFaults starts the compose file's cluster (3
// coordinators, 5 nodes, each in its own container) and, while clients
// driven through the Go client read, write and delete, kills the leader's
// container, disconnects a node from the network, pauses one, and restarts
// one; each is healed before the next. Then every container is killed and
// recreated from the same volumes. The history must be linearizable and
// every node must end with a state the history explains (no acknowledged
// write lost), and every container must report itself healthy.
func TestComposeClusterUnderFaults(t *testing.T) {
	requireDocker(t)
	c := start(t)
	cs := newClients(t, c)
	serving(t, c, 90*time.Second)
	// Faults start once every node is a voter: with two voters, losing
	// the leader's memory is not a minority failure, and the survivor
	// alone may not take over.
	soon.Succeeds(t, 60*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		st, err := cs.per[0].Status(ctx)
		if err != nil {
			return err
		}
		if len(st.Voters) != nodes {
			return fmt.Errorf("voters %v, want all %d nodes", st.Voters, nodes)
		}
		return nil
	})

	var mu sync.Mutex
	var events []string
	begun := time.Now()
	logf := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		events = append(events, fmt.Sprintf("%8v ", time.Since(begun).Round(time.Millisecond))+fmt.Sprintf(format, args...))
	}
	rec := linearizability.NewRecorder(nil)
	wctx, stopLoad := context.WithCancel(context.Background())
	w := workload.Workload{Clients: 10, Readers: nodes, Keys: keys, OpTimeout: 5 * time.Second,
		ReadTimeout: time.Second, Pause: 20 * time.Millisecond, Seed: rand.Uint64()}
	loadDone := make(chan workload.Stats, 1)
	go func() { loadDone <- w.Run(wctx, cs, rec) }()
	defer stopLoad()

	hold := func() { time.Sleep(3 * time.Second) } // the fault's duration, not an assertion
	nodeIndex := func(id string) int {
		var i int
		if _, err := fmt.Sscanf(id, "node%d", &i); err != nil {
			t.Fatalf("leader id %q: %v", id, err)
		}
		return i
	}

	ld := leader(t, cs)
	logf("kill the leader's container (%s)", ld)
	run(t, nil, "docker", "kill", c.container(t, ld))
	hold()
	run(t, nil, "docker", "start", c.container(t, ld))
	logf("%s restarted", ld)
	serving(t, c, 60*time.Second)

	other := fmt.Sprintf("node%d", (nodeIndex(leader(t, cs))+1)%nodes)
	logf("disconnect %s from the network", other)
	run(t, nil, "docker", "network", "disconnect", c.network(t), c.container(t, other))
	hold()
	run(t, nil, "docker", "network", "connect", "--ip", c.nodeIP(nodeIndex(other)), c.network(t), c.container(t, other))
	logf("%s reconnected", other)
	serving(t, c, 60*time.Second)

	paused := fmt.Sprintf("node%d", (nodeIndex(leader(t, cs))+2)%nodes)
	logf("pause %s", paused)
	run(t, nil, "docker", "pause", c.container(t, paused))
	hold()
	run(t, nil, "docker", "unpause", c.container(t, paused))
	logf("%s unpaused", paused)
	serving(t, c, 60*time.Second)

	ld = leader(t, cs)
	logf("restart the leader's container (%s)", ld)
	run(t, nil, "docker", "restart", "-t", "2", c.container(t, ld))
	serving(t, c, 60*time.Second)
	time.Sleep(2 * time.Second) // a healthy stretch under load
	stopLoad()
	st := <-loadDone
	logf("workload: %d ops, %d failed, %d unknown", st.Ops, st.Failed, st.Unknown)

	// Every container killed and recreated (FINDINGS: without data
	// directories on volumes this lost every node's data at once): the
	// final reads below must still see every acknowledged write.
	logf("kill and recreate every container, volumes kept")
	c.recreate(t)
	serving(t, c, 90*time.Second)
	logf("recreated; every node serving")

	h := rec.History()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res := linearizability.Check(ctx, h, time.Minute, linearizability.VisualizationDir(dir))
	var problems []string
	switch {
	case res.Ok:
	case res.Illegal:
		keep := filepath.Join(os.TempDir(), fmt.Sprintf("kvstore-compose-%d", time.Now().UnixNano()))
		_ = os.CopyFS(keep, os.DirFS(dir))
		_ = linearizability.SaveHistory(filepath.Join(keep, "history.json"), h)
		problems = append(problems, fmt.Sprintf("not linearizable (keys %v); history and visualisation in %s", res.IllegalKeys, keep))
	default:
		problems = append(problems, fmt.Sprintf("check did not finish (not a pass): %v", res))
	}
	for n := 0; n < nodes; n++ {
		cl, err := client.New(client.Config{Endpoints: []string{c.endpoint(n)}})
		if err != nil {
			t.Fatal(err)
		}
		final := map[string]linearizability.FinalValue{}
		for k := 0; k < keys; k++ {
			key := fmt.Sprint("k", k)
			gctx, gcancel := context.WithTimeout(ctx, 10*time.Second)
			v, found, err := cl.Get(gctx, key)
			gcancel()
			if err != nil {
				problems = append(problems, fmt.Sprintf("final read of %s on node%d: %v", key, n, err))
				continue
			}
			final[key] = linearizability.FinalValue{Value: v, Found: found}
		}
		cl.Close()
		if err := linearizability.Durability(h, final); err != nil {
			problems = append(problems, fmt.Sprintf("durability on node%d: %v", n, err))
		}
	}
	t.Logf("%d operations (%d failed, %d unknown) under 4 container faults; events:\n  %s",
		st.Ops, st.Failed, st.Unknown, strings.Join(events, "\n  "))
	if len(problems) > 0 {
		t.Fatalf("%s", strings.Join(problems, "\n"))
	}
	if st.Ops-st.Failed < 500 {
		t.Fatalf("only %d successful operations: too few to prove much", st.Ops-st.Failed)
	}
	healthy(t, c, 60*time.Second)
}

package cluster

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/kvstore/kvstore/internal/soon"
)

func durableCluster(t *testing.T, b Backend, n int) (*Cluster, string) {
	dir := t.TempDir()
	return newCluster(t, b, n, func(o *Options) { o.DataDir = dir }), dir
}

// restartAll starts every killed node at once: none can serve alone (a
// leader needs a majority of voters), so they must come back together.
func restartAll(t *testing.T, c *Cluster) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, c.Size())
	for i := 0; i < c.Size(); i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.Restart(ctxT(t, 60*time.Second), i); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestEveryNodeCrashedAndRestartedWithItsDataLosesNothing(t *testing.T) {
	eachBackend(t, func(t *testing.T, b Backend) {
		c, _ := durableCluster(t, b, 3)
		for i := 0; i < 30; i++ {
			mustPut(t, c, i%3, fmt.Sprint("k", i), fmt.Sprint("v", i))
		}
		if err := c.Delete(ctxT(t, 10*time.Second), 1, "k0"); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 3; i++ {
			if err := c.Kill(i); err != nil {
				t.Fatal(err)
			}
		}
		restartAll(t, c)
		for i := 0; i < 3; i++ {
			nd, _ := c.Node(i)
			if nd.Recovering() {
				t.Fatalf("node %d restarted with its data but is recovering", i)
			}
		}
		for j := 0; j < 3; j++ {
			expectGet(t, c, j, "k0", "")
			for i := 1; i < 30; i++ {
				expectGet(t, c, j, fmt.Sprint("k", i), fmt.Sprint("v", i))
			}
		}
		// And it goes on: a rolling crash, one node at a time.
		for i := 0; i < 3; i++ {
			mustPut(t, c, (i+1)%3, "rolling", fmt.Sprint("r", i))
			if err := c.Kill(i); err != nil {
				t.Fatal(err)
			}
			mustPut(t, c, (i+1)%3, fmt.Sprint("during", i), "x")
			if err := c.Restart(ctxT(t, 60*time.Second), i); err != nil {
				t.Fatal(err)
			}
		}
		for j := 0; j < 3; j++ {
			expectGet(t, c, j, "rolling", "r2")
			for i := 0; i < 3; i++ {
				expectGet(t, c, j, fmt.Sprint("during", i), "x")
			}
		}
	})
}

func TestCorruptDataDirRejoinsAsRecovering(t *testing.T) {
	eachBackend(t, func(t *testing.T, b Backend) {
		c, dir := durableCluster(t, b, 3)
		marker := "marker-value-0123456789abcdef"
		mustPut(t, c, 0, "k", marker)
		ld := leaderOf(t, c)
		f := (ld + 1) % 3
		fnd, _ := c.Node(f)
		soon.Succeeds(t, 10*time.Second, func() error {
			if v, _, _ := fnd.LocalItem("k"); v != marker {
				return fmt.Errorf("node %d holds %q", f, v)
			}
			return nil
		})
		// Stop, not Kill: a graceful stop checkpoints everything into
		// state.db, where a Kill leaves the latest writes in the
		// write-ahead log only (replayed at the next start).
		if err := c.Stop(f); err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(dir, fmt.Sprintf("n%d", f), "state.db")
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		i := bytes.Index(data, []byte(marker))
		if i < 0 {
			t.Fatalf("marker not found in %s", file)
		}
		data[i] ^= 0xff
		if err := os.WriteFile(file, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := c.Restart(ctxT(t, 60*time.Second), f); err != nil {
			t.Fatalf("restart with a corrupt data directory: %v", err)
		}
		aside, _ := filepath.Glob(filepath.Join(dir, fmt.Sprintf("n%d", f), "corrupt-*", "state.db"))
		if len(aside) != 1 {
			t.Fatalf("the corrupt file was not set aside (found %v)", aside)
		}
		// It never serves the damaged value: it is reconciled by the leader.
		expectGet(t, c, f, "k", marker)
		fnd, _ = c.Node(f)
		soon.Succeeds(t, 10*time.Second, func() error {
			if fnd.Recovering() {
				return fmt.Errorf("node %d still recovering", f)
			}
			if v, _, _ := fnd.LocalItem("k"); v != marker {
				return fmt.Errorf("node %d holds %q", f, v)
			}
			return nil
		})
	})
}

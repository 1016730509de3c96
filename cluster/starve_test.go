package cluster

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/kvstore/kvstore/node"
)

// TestReadsOfAContinuouslyWrittenKeyComplete: a key written without pause
// (16 writers keep writes in flight) does not starve its readers: a
// read through the leader or a follower returns a visible value (with no
// lease when a newer write arrived meanwhile) instead of reading again until
// the operation times out.
func TestReadsOfAContinuouslyWrittenKeyComplete(t *testing.T) {
	eachBackend(t, func(t *testing.T, b Backend) {
		// A slow disk makes every commit take a while, during which the
		// writers' next writes are already applied at the leader: a read
		// finds a newer write whenever its visibility wait ends.
		c := newCluster(t, b, 3, func(o *Options) {
			o.DataDir, o.NoFsync = t.TempDir(), true
			o.Node = func(cfg *node.Config) { cfg.Faults.SlowDisk = 100 * time.Millisecond }
		})
		ld := leaderOf(t, c)
		mustPut(t, c, ld, "hot", "0")
		ctx, stop := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for w := 0; w < 16; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ctx.Err() == nil; i++ {
					_ = c.Put(ctx, ld, "hot", fmt.Sprint(w, ".", i))
				}
			}()
		}
		defer func() { stop(); wg.Wait() }()
		for i := 0; i < 10; i++ {
			for n := 0; n < c.Size(); n++ {
				// Generous: a read needs about one commit round trip; the
				// old loop starved until the 15 s operation timeout.
				rctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
				_, found, err := c.Get(rctx, n, "hot")
				cancel()
				if err != nil || !found {
					t.Fatalf("read %d through node %d of a key written continuously: found %v, %v", i, n, found, err)
				}
			}
		}
	})
}

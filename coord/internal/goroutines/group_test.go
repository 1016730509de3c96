package goroutines

import (
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
)

// TestGoCountsAndClosedRefuses: Go counts its goroutine in the Group and
// in the owner, and refuses once the Group is closed; Wait waits for what
// runs.
func TestGoCountsAndClosedRefuses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var g Group
		var owner sync.WaitGroup
		release := make(chan struct{})
		if !g.Go(&owner, func() { <-release }) {
			t.Fatal("Go refused an open Group")
		}
		if g.Closed() {
			t.Fatal("Closed before Close")
		}
		g.Close()
		if !g.Closed() {
			t.Fatal("not Closed after Close")
		}
		if g.Go(nil, func() { t.Error("a goroutine ran after Close") }) {
			t.Fatal("Go ran a goroutine after Close")
		}

		var waited, ownerWaited atomic.Bool
		go func() { g.Wait(); waited.Store(true) }()
		go func() { owner.Wait(); ownerWaited.Store(true) }()
		synctest.Wait()
		if waited.Load() || ownerWaited.Load() {
			t.Fatalf("while the goroutine runs: Group waited %v, owner waited %v", waited.Load(), ownerWaited.Load())
		}
		close(release)
		synctest.Wait()
		if !waited.Load() || !ownerWaited.Load() {
			t.Fatalf("after the goroutine ended: Group waited %v, owner waited %v", waited.Load(), ownerWaited.Load())
		}
	})
}

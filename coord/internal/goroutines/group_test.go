package goroutines

import (
	"sync"
	"testing"
	"testing/synctest"
)

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

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

		waited, ownerWaited := make(chan struct{}), make(chan struct{})
		go func() { g.Wait(); close(waited) }()
		go func() { owner.Wait(); close(ownerWaited) }()
		synctest.Wait()
		if closed(waited) || closed(ownerWaited) {
			t.Fatalf("while the goroutine runs: Group waited %v, owner waited %v", closed(waited), closed(ownerWaited))
		}
		close(release)
		synctest.Wait()
		if !closed(waited) || !closed(ownerWaited) {
			t.Fatalf("after the goroutine ended: Group waited %v, owner waited %v", closed(waited), closed(ownerWaited))
		}
	})
}

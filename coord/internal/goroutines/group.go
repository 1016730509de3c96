package goroutines

import "sync"

// Group counts a Coordinator's goroutines, its own and its sessions'. The
// zero value is ready for use. Go's signature is the spawn function
// sessionstate.State.Init takes.
type Group struct {
	wg sync.WaitGroup

	mu     sync.Mutex // guards closed, and orders wg.Add before wg.Wait
	closed bool
}

// Go runs f in a goroutine counted by g and, if non-nil, by owner. It
// reports false, and runs nothing, once g is closed.
func (g *Group) Go(owner *sync.WaitGroup, f func()) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.wg.Add(1)
	if owner != nil {
		owner.Add(1)
	}
	go func() {
		defer g.wg.Done()
		if owner != nil {
			defer owner.Done()
		}
		f()
	}()
	return true
}

// Close makes every later Go refuse. It does not wait: Wait does.
func (g *Group) Close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
}

// Closed reports whether Close was called.
func (g *Group) Closed() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closed
}

// Wait waits for every goroutine Go started. Call it after Close, so that
// none can start while it waits.
func (g *Group) Wait() { g.wg.Wait() }

package zkserver

import (
	"context"
	"sync"
	"testing"
	"time"
)

// Shared is a standalone server shared by the tests of one package: the
// first test that asks starts it, and the package's TestMain closes it. The
// zero value is ready to use; it is safe for concurrent use.
type Shared struct {
	mu  sync.Mutex
	e   *Ensemble
	err error // a failed start, reported to every later caller
}

// Servers skips (or fails, see SkipIfUnavailable) the test where ZooKeeper
// is not installed, starts the server on first use, and returns its client
// address. A failed start fails the test.
func (s *Shared) Servers(t testing.TB) []string {
	t.Helper()
	SkipIfUnavailable(t)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.e == nil && s.err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		s.e, s.err = Start(ctx, DefaultConfig())
	}
	if s.err != nil {
		t.Fatalf("start the shared ZooKeeper server: %v", s.err)
	}
	return s.e.Servers()
}

// Close stops the server if it was started.
func (s *Shared) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.e == nil {
		return nil
	}
	return s.e.Close()
}

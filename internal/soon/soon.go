// Package soon waits for conditions in tests: it retries a check until it
// passes or a deadline ends, then fails with the check's last error. Tests
// use it instead of sleeping and hoping (cf. CockroachDB's SucceedsSoon).
package soon

import (
	"testing"
	"time"
)

// Succeeds calls fn every few milliseconds until it returns nil, failing
// the test with fn's last error if within does not suffice.
func Succeeds(t testing.TB, within time.Duration, fn func() error) {
	t.Helper()
	if err := Within(within, fn); err != nil {
		t.Fatalf("condition not met within %v: %v", within, err)
	}
}

// Within calls fn until it returns nil or within passes; it returns fn's
// last error in that case.
func Within(within time.Duration, fn func() error) error {
	deadline := time.Now().Add(within)
	wait := time.Millisecond
	for {
		err := fn()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(wait)
		wait = min(wait*2, 50*time.Millisecond)
	}
}

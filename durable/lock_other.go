//go:build !unix

package durable

import (
	"os"
	"time"
)

// lockFile is a no-op where flock is unavailable: bbolt's own file lock
// (taken by bbolt.Open) still keeps two DBs off the same file.
func lockFile(f *os.File, timeout time.Duration) error { return nil }

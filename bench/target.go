package bench

import "context"

// Target is a store under test. Every method is safe for concurrent use;
// client numbers run from 0 to the configured client count - 1, and a
// target may route each client to a node of its own (e.g. client % nodes).
type Target interface {
	// Name labels the result rows, e.g. "kvstore", "etcd (linearizable)".
	Name() string
	// Get reads key for client. A missing key is not an error.
	Get(ctx context.Context, client int, key string) error
	// Put writes key = value for client.
	Put(ctx context.Context, client int, key string, value []byte) error
	// Durability states what an acknowledged write survives, for the
	// report (e.g. "memory, 3 replicas", "fsync, 3 members").
	Durability() string
	// Close releases the target and whatever it started.
	Close() error
}

// CacheStats is implemented by targets that can report cache hits and
// misses (KVStore); the runner reports the hit ratio of the measured phase.
type CacheStats interface {
	CacheCounts() (hits, misses uint64)
}

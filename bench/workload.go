// Package bench is KVStore's benchmark runner: YCSB-style workloads (A, B,
// C and a write-only W) with uniform or scrambled-Zipfian keys, run by many
// concurrent clients against any Target (KVStore in-process or through its
// Go client, and peers such as etcd and ZooKeeper), with per-operation
// latency histograms and a report as a text table, JSON or ratios.
package bench

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
)

// Workload names: the YCSB core workloads A, B and C, and W (writes only).
const (
	WorkloadA = "A" // 50% reads, 50% updates
	WorkloadB = "B" // 95% reads, 5% updates
	WorkloadC = "C" // reads only
	WorkloadW = "W" // updates only
)

// Workloads lists every workload name, in report order.
var Workloads = []string{WorkloadA, WorkloadB, WorkloadC, WorkloadW}

// Key distributions.
const (
	Uniform = "uniform" // every key equally likely
	Zipf    = "zipfian" // YCSB's scrambled Zipfian, theta 0.99
)

// Defaults of a Workload's zero fields.
const (
	DefaultKeys      = 10000
	DefaultValueSize = 256
	DefaultClients   = 64
	DefaultDuration  = 10 * time.Second
	DefaultWarmup    = 2 * time.Second
)

// ReadProportion is the share of reads in workload name (A, B, C or W; case
// does not matter); the rest are updates.
func ReadProportion(name string) (float64, error) {
	switch strings.ToUpper(name) {
	case WorkloadA:
		return 0.5, nil
	case WorkloadB:
		return 0.95, nil
	case WorkloadC:
		return 1, nil
	case WorkloadW:
		return 0, nil
	}
	return 0, fmt.Errorf("bench: unknown workload %q (want A, B, C or W)", name)
}

// Workload is one benchmark's configuration. Zero fields take the defaults
// (Distribution zipfian, Keys 10000, ValueSize 256, Clients 64, Duration
// 10 s); Warmup has no default (0 means none; the command's default is 2 s).
type Workload struct {
	// Name is A (50% reads, 50% updates), B (95/5), C (reads only) or W
	// (updates only).
	Name string
	// Distribution of the keys: "uniform" or "zipfian" (the default).
	Distribution string
	// Keys is the number of distinct keys, named KeyName(0..Keys-1).
	Keys int
	// ValueSize is the length of every written value in bytes.
	ValueSize int
	// Clients is the number of concurrent clients (goroutines), numbered
	// 0..Clients-1 in the calls to the Target.
	Clients int
	// Duration is the measured phase.
	Duration time.Duration
	// Warmup runs the workload before the measured phase, unrecorded.
	Warmup time.Duration
	// Seed makes the runs repeatable: client i draws its operations and
	// keys from a generator seeded with (Seed, i), so the same seed gives
	// every target the same per-client sequence.
	Seed uint64
	// SkipLoad skips the load phase (writing every key once), for a target
	// already loaded with the same Keys and ValueSize.
	SkipLoad bool
}

// normalize applies the defaults and checks w.
func (w Workload) normalize() (Workload, error) {
	w.Name = strings.ToUpper(w.Name)
	if _, err := ReadProportion(w.Name); err != nil {
		return w, err
	}
	if w.Distribution == "" {
		w.Distribution = Zipf
	}
	w.Distribution = strings.ToLower(w.Distribution)
	if w.Distribution != Uniform && w.Distribution != Zipf {
		return w, fmt.Errorf("bench: unknown distribution %q (want %s or %s)", w.Distribution, Uniform, Zipf)
	}
	if w.Keys == 0 {
		w.Keys = DefaultKeys
	}
	if w.ValueSize == 0 {
		w.ValueSize = DefaultValueSize
	}
	if w.Clients == 0 {
		w.Clients = DefaultClients
	}
	if w.Duration == 0 {
		w.Duration = DefaultDuration
	}
	switch {
	case w.Keys < 1 || w.Keys > 1<<31:
		return w, fmt.Errorf("bench: keys %d out of range [1, 2^31]", w.Keys)
	case w.ValueSize < 0:
		return w, fmt.Errorf("bench: negative value size %d", w.ValueSize)
	case w.Clients < 1:
		return w, fmt.Errorf("bench: clients %d < 1", w.Clients)
	case w.Duration < 0 || w.Warmup < 0:
		return w, fmt.Errorf("bench: negative duration or warm-up")
	}
	return w, nil
}

// KeyName is the name of key number i: "user" and eight digits, as YCSB.
func KeyName(i int) string { return fmt.Sprintf("user%08d", i) }

// keySpace is a workload's keys and how clients choose among them. It is
// read-only once built, shared by every client.
type keySpace struct {
	names []string
	zipf  *Zipfian // nil: uniform
	perm  []uint32 // zipfian rank -> key number
}

func newKeySpace(w Workload) *keySpace {
	ks := &keySpace{names: make([]string, w.Keys)}
	for i := range ks.names {
		ks.names[i] = KeyName(i)
	}
	if w.Distribution == Zipf {
		ks.zipf = NewZipfian(uint64(w.Keys), ZipfianTheta)
		ks.perm = scramble(w.Keys)
	}
	return ks
}

// next draws a key number.
func (ks *keySpace) next(r *rand.Rand) int {
	if ks.zipf == nil {
		return r.IntN(len(ks.names))
	}
	return int(ks.perm[ks.zipf.Next(r)])
}

// clientRand is client i's generator for seed.
func clientRand(seed uint64, i int) *rand.Rand {
	return rand.New(rand.NewPCG(seed, uint64(i)*0x9E3779B97F4A7C15+1))
}

// randomValue is size printable bytes from r.
func randomValue(r *rand.Rand, size int) []byte {
	const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	v := make([]byte, size)
	for i := range v {
		v[i] = letters[r.IntN(len(letters))]
	}
	return v
}

// Package clock is the clock KVStore measures leases and session deadlines
// on, and a fake of it for tests.
//
// A lease or a session deadline says "valid until instant T". Measured on the
// monotonic clock (time.Now's monotonic reading, Go's timers), T is wrong
// after the machine was suspended: CLOCK_MONOTONIC does not advance while
// the machine sleeps, so a copy the coordinator or the leader gave up on
// long ago would still look valid on resume. The system clock (System)
// counts suspended time: on Linux it is CLOCK_BOOTTIME.
//
// Reading CLOCK_BOOTTIME costs a system call (x/sys/unix does not use the
// vDSO; about 350 ns on a VM, four times a cached read), too much for the
// read path, which checks its lease on every read. System's Now therefore
// reads time.Now (one vDSO call, as before) and adds the offset of
// CLOCK_BOOTTIME from the monotonic clock, which the kernel changes only
// when it resumes from a suspend; a resume also steps the wall clock ahead
// of the monotonic one by the same amount, and every Now compares the two
// readings of its time.Now: when their difference moved, Now reads
// CLOCK_BOOTTIME afresh before it answers. A step of the wall clock (NTP, an
// operator) only costs one such read.
//
// Elsewhere than on Linux, System is the monotonic clock and Suspended is
// always 0: a suspend there goes unnoticed, as before this package.
package clock

import (
	"fmt"
	"math"
	"time"
)

// Instant is a reading of a Clock: a time since the clock's origin (for
// System on Linux, the boot). Instants of different clocks do not compare.
// The zero Instant is the origin; no reading of System is zero.
type Instant struct{ ns int64 }

// Add returns t+d, saturated at the ends of the range.
func (t Instant) Add(d time.Duration) Instant {
	s := t.ns + int64(d)
	switch {
	case d > 0 && s < t.ns:
		s = math.MaxInt64
	case d < 0 && s > t.ns:
		s = math.MinInt64
	}
	return Instant{s}
}

// Sub returns t-u.
func (t Instant) Sub(u Instant) time.Duration { return time.Duration(t.ns - u.ns) }

// Before reports whether t is before u.
func (t Instant) Before(u Instant) bool { return t.ns < u.ns }

// After reports whether t is after u.
func (t Instant) After(u Instant) bool { return t.ns > u.ns }

// IsZero reports whether t is the zero Instant.
func (t Instant) IsZero() bool { return t.ns == 0 }

// String shows t as the time since the clock's origin.
func (t Instant) String() string { return fmt.Sprintf("T+%v", time.Duration(t.ns)) }

// Clock is a clock that counts the time the machine spends suspended.
// Implementations are safe for concurrent use.
type Clock interface {
	// Now reads the clock. Readings are monotone: a call that starts
	// after another returned reads no earlier.
	Now() Instant
	// Suspended is how much longer than the monotonic clock this clock has
	// run since it was created: the time the machine spent suspended. It
	// reads the system's clocks afresh (on Linux, a system call): for a
	// watcher, not for every read.
	Suspended() time.Duration
}

// Monotonic returns c without the suspends it counts: a clock that stops
// while the machine is suspended, as the monotonic clock does (Suspended is
// always 0). It is the clock KVStore measured on before this package, kept
// for tests that show what a suspend did then.
func Monotonic(c Clock) Clock { return monotonic{c} }

type monotonic struct{ c Clock }

func (m monotonic) Now() Instant { return m.c.Now().Add(-m.c.Suspended()) }

func (m monotonic) Suspended() time.Duration { return 0 }

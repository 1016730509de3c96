package clock

import (
	"sync/atomic"
	"time"
)

// Fake is a Clock for tests: System plus the suspends the test simulated
// with Jump. Between jumps its time passes as the real one does, so code
// that waits on timers works as usual.
type Fake struct {
	jumped atomic.Int64
}

// NewFake returns a Fake that has not jumped yet.
func NewFake() *Fake { return &Fake{} }

// Now implements Clock.
func (f *Fake) Now() Instant { return System().Now().Add(time.Duration(f.jumped.Load())) }

// Suspended implements Clock.
func (f *Fake) Suspended() time.Duration {
	return System().Suspended() + time.Duration(f.jumped.Load())
}

// Jump simulates a suspend of the machine for d: Now and Suspended jump
// ahead by d at once, as CLOCK_BOOTTIME does on resume, while the monotonic
// clock (time.Now's reading, Go's timers) does not move.
func (f *Fake) Jump(d time.Duration) {
	if d < 0 {
		panic("clock: Fake.Jump backwards")
	}
	f.jumped.Add(int64(d))
}

// Jumped is the sum of the jumps so far.
func (f *Fake) Jumped() time.Duration { return time.Duration(f.jumped.Load()) }

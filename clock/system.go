package clock

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// System returns the machine's clock that counts suspended time: on Linux
// CLOCK_BOOTTIME (read as described in the package comment), elsewhere the
// monotonic clock. It is one clock for the whole process.
func System() Clock {
	systemOnce.Do(func() { system = newBootClock(monoReader(), readBoot) })
	return system
}

var (
	systemOnce sync.Once
	system     *bootClock
)

// monoReader returns a reader of time.Now's two readings: the wall clock
// and the monotonic clock (since now), in nanoseconds.
func monoReader() func() (wall, mono int64) {
	base := time.Now()
	return func() (int64, int64) {
		t := time.Now()
		return t.UnixNano(), int64(t.Sub(base))
	}
}

// wallSlack is how far the wall clock may move against the monotonic clock
// before Now reads CLOCK_BOOTTIME afresh. The two readings of one time.Now
// are two vDSO calls, usually well under a microsecond apart, but the
// thread may be preempted between them; and a suspend shorter than the
// slack goes unnoticed until suspends add up to more, so the slack bounds
// how far Now may lag CLOCK_BOOTTIME.
const wallSlack = int64(time.Millisecond)

// maxGap is how far apart, at most, the monotonic readings around a read of
// CLOCK_BOOTTIME should be; the offset may be overstated by that much (Now
// then runs ahead, the safe side for a deadline). refresh retries a few
// times for a tighter pair.
const maxGap = int64(50 * time.Microsecond)

// bootClock is System: the monotonic clock plus the offset of
// CLOCK_BOOTTIME from it, which the kernel changes only on resume.
type bootClock struct {
	read     func() (wall, mono int64) // time.Now's readings, mono since the clock's creation
	readBoot func(mono func() (wall, mono int64)) int64
	off      atomic.Pointer[offsets]
	first    int64 // off.boot at creation: Suspended counts from there
}

// offsets relate the clocks to the monotonic one at the last refresh.
type offsets struct {
	boot int64 // CLOCK_BOOTTIME minus monotonic: Now is monotonic + boot
	wall int64 // wall clock minus monotonic
}

func newBootClock(read func() (wall, mono int64), readBoot func(func() (wall, mono int64)) int64) *bootClock {
	c := &bootClock{read: read, readBoot: readBoot}
	c.first = c.refresh().boot
	return c
}

// Now implements Clock: one time.Now, and a read of CLOCK_BOOTTIME only
// when the wall clock moved against the monotonic clock (a resume, or a
// step of the wall clock).
func (c *bootClock) Now() Instant {
	wall, mono := c.read()
	o := c.off.Load()
	if d := wall - mono - o.wall; d > wallSlack || d < -wallSlack {
		o = c.refresh()
	}
	return Instant{mono + o.boot}
}

// Suspended implements Clock: it reads CLOCK_BOOTTIME afresh, which also
// brings Now up to date should a resume ever leave the wall clock alone.
func (c *bootClock) Suspended() time.Duration {
	return time.Duration(c.refresh().boot - c.first)
}

// refresh reads CLOCK_BOOTTIME between two readings of the monotonic clock
// and publishes the offsets. The offset never decreases, so that readings
// stay monotone.
func (c *bootClock) refresh() *offsets {
	var best offsets
	bestGap := int64(math.MaxInt64)
	for i := 0; i < 4 && bestGap > maxGap; i++ {
		wall, m1 := c.read()
		boot := c.readBoot(c.read)
		_, m2 := c.read()
		if gap := m2 - m1; gap < bestGap {
			bestGap, best = gap, offsets{boot: boot - m1, wall: wall - m1}
		}
	}
	for {
		old := c.off.Load()
		o := best
		if old != nil && o.boot < old.boot {
			o.boot = old.boot
		}
		if c.off.CompareAndSwap(old, &o) {
			return &o
		}
	}
}

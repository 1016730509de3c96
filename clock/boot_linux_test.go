package clock

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func boottime(t testing.TB) Instant {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		t.Fatalf("clock_gettime(CLOCK_BOOTTIME): %v", err)
	}
	return Instant{ns: ts.Nano()}
}

// TestSystemIsBoottime: on Linux System reads CLOCK_BOOTTIME: each reading
// lies between direct reads of it taken before and after (the upper bound
// loose for a loaded machine; the offset may be overstated by the time
// between two readings, the safe side).
func TestSystemIsBoottime(t *testing.T) {
	c := System()
	for range 1000 {
		before := boottime(t)
		now := c.Now()
		after := boottime(t)
		if now.Before(before) || now.After(after.Add(time.Second)) {
			t.Fatalf("System read %v between CLOCK_BOOTTIME readings %v and %v", now, before, after)
		}
	}
}

func BenchmarkBoottimeSyscall(b *testing.B) {
	for b.Loop() {
		boottime(b)
	}
}

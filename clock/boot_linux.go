package clock

import "golang.org/x/sys/unix"

// readBoot reads CLOCK_BOOTTIME in nanoseconds. It cannot fail on Linux
// 2.6.39 or later; should it fail, it reads the monotonic clock (mono's
// second reading) instead, and suspends go unnoticed.
func readBoot(mono func() (wall, mono int64)) int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		_, m := mono()
		return m
	}
	return ts.Nano()
}

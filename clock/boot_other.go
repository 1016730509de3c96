//go:build !linux

package clock

// readBoot falls back to the monotonic clock (mono's second reading): only
// Linux has CLOCK_BOOTTIME. Suspends go unnoticed.
func readBoot(mono func() (wall, mono int64)) int64 {
	_, m := mono()
	return m
}

// Package transcript holds what the shell's transcript tests share: the
// normalization of a shell's output, so that a transcript recorded in one
// run compares equal in the next.
package transcript

import "regexp"

var (
	addrRE  = regexp.MustCompile(`(127\.0\.0\.1|localhost|\[::1\]):[0-9]+`)
	epochRE = regexp.MustCompile(`\bepoch [0-9]+`)
)

// Normalize replaces what differs from run to run: loopback addresses
// (ADDR) and epochs (epoch N).
func Normalize(s string) string {
	s = addrRE.ReplaceAllString(s, "ADDR")
	return epochRE.ReplaceAllString(s, "epoch N")
}

package zkcoord

import (
	"testing"
	"time"
)

// TestRetrySchedule: after a lost connection the client tries every
// server twice at once, then pauses before each further round, 50 ms,
// then 100 ms, with no gap of more than 100 ms until 2 s after the loss
// (an ensemble's election can end anywhere in the nodes' deadlines), and
// only then leaves the pause (and the failing of queued requests) to the
// client, a second a round.
func TestRetrySchedule(t *testing.T) {
	const n = 3
	var pauses []time.Duration
	retryStartFrom := 0
	for a := 1; a <= 100; a++ {
		p, retryStart := retryPause(a, n)
		if p > 0 {
			if (a-1)%n != 0 {
				t.Errorf("attempt %d pauses %v within a round", a, p)
			}
			pauses = append(pauses, p)
		}
		if retryStart && retryStartFrom == 0 {
			retryStartFrom = a
		}
		if !retryStart && retryStartFrom != 0 && (a-1)%n == 0 {
			t.Errorf("attempt %d starts a round without the client's pause after attempt %d had it", a, retryStartFrom)
		}
	}
	want := []time.Duration{50 * time.Millisecond}
	for len(want) < quickRetryRounds {
		want = append(want, 100*time.Millisecond)
	}
	var total time.Duration
	for _, p := range pauses {
		total += p
	}
	if total < 2*time.Second {
		t.Errorf("quick rounds end %v after the loss, want at least 2s", total)
	}
	if len(pauses) != len(want) {
		t.Fatalf("pauses %v, want %v", pauses, want)
	}
	for i := range want {
		if pauses[i] != want[i] {
			t.Fatalf("pauses %v, want %v", pauses, want)
		}
	}
	if retryStartFrom != 2*n+len(want)*n+1 {
		t.Errorf("the client's own pause from attempt %d, want %d", retryStartFrom, 2*n+len(want)*n+1)
	}
}

package client

import (
	"testing"
	"time"
)

// TestPooledTimerNeverTicksLate: a timer taken from the pool must not
// carry a tick from its previous use, which would end the new wait at
// once (an attempt given up, a write's outcome unknown). It runs under
// the timers of Go before 1.23 (GODEBUG=asynctimerchan=1, the default of
// a program whose go.mod names an older Go), where Stop can report a
// timer fired before its tick reaches the channel: the racy case. Each
// round stops a timer as it fires, then watches the next timer the pool
// gives for a tick it cannot have earned.
func TestPooledTimerNeverTicksLate(t *testing.T) {
	t.Setenv("GODEBUG", "asynctimerchan=1")
	end := time.Now().Add(time.Second)
	rounds := 0
	for ; time.Now().Before(end); rounds++ {
		d := time.Duration(rounds%40) * time.Microsecond
		a := startTimer(d)
		for spin := time.Now(); time.Since(spin) < d; {
		}
		stopTimer(a)
		b := startTimer(time.Hour)
		for watch := time.Now(); time.Since(watch) < 100*time.Microsecond; {
			select {
			case <-b.C:
				t.Fatalf("round %d: a timer from the pool ticked at once (a stale tick of a stopped timer)", rounds)
			default:
			}
		}
		stopTimer(b)
	}
	t.Logf("%d rounds", rounds)
}

package clock_test

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/kvstore/kvstore/clock"
)

// TestSkewedRunsAtItsRate: a Skewed clock counts rate times the time that
// passes, a rate change applies from then on without a jump, and it never
// reports a suspend.
func TestSkewedRunsAtItsRate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fast, slow := clock.NewSkewed(1.1), clock.NewSkewed(0.9)
		f0, s0 := fast.Now(), slow.Now()
		if f0.IsZero() || s0.IsZero() {
			t.Fatal("a reading is the zero Instant")
		}
		time.Sleep(10 * time.Second)
		if d := fast.Now().Sub(f0); d != 11*time.Second {
			t.Fatalf("fast clock counted %v in 10s, want 11s", d)
		}
		if d := slow.Now().Sub(s0); d != 9*time.Second {
			t.Fatalf("slow clock counted %v in 10s, want 9s", d)
		}
		at := slow.Now()
		slow.SetRate(2)
		if slow.Now() != at {
			t.Fatalf("SetRate moved the clock: %v, then %v", at, slow.Now())
		}
		time.Sleep(time.Second)
		if d := slow.Now().Sub(at); d != 2*time.Second || slow.Rate() != 2 {
			t.Fatalf("after SetRate(2) the clock counted %v in 1s (rate %v), want 2s", d, slow.Rate())
		}
		if slow.Elapsed() != 11*time.Second || slow.Suspended() != 0 {
			t.Fatalf("Elapsed %v, Suspended %v; want 11s and 0", slow.Elapsed(), slow.Suspended())
		}
	})
}

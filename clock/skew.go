package clock

import (
	"sync"
	"time"
)

// Skewed is a Clock whose time runs at a rate relative to time.Now's
// monotonic clock: a rate of 1.1 counts 1.1 s for every second that
// passes, 0.9 counts 0.9 s. It is a machine whose oscillator runs fast or
// slow, for simulations of clock drift between nodes (inside a
// testing/synctest bubble, time.Now is the bubble's virtual time). It
// never counts a suspend: Suspended is always 0.
type Skewed struct {
	mu    sync.Mutex
	base  time.Time // time.Now at the last rate change
	at    int64     // the reading at base, in nanoseconds
	rate  float64
	last  int64 // the latest reading returned: readings stay monotone
	start int64 // the reading at creation
}

// skewOrigin is where a Skewed clock's readings start: not zero, as no
// reading of System is zero.
const skewOrigin = int64(time.Hour)

// NewSkewed returns a clock running at rate (> 0) from now on.
func NewSkewed(rate float64) *Skewed {
	if rate <= 0 {
		panic("clock: NewSkewed rate must be positive")
	}
	return &Skewed{base: time.Now(), at: skewOrigin, rate: rate, last: skewOrigin, start: skewOrigin}
}

// Now implements Clock.
func (s *Skewed) Now() Instant {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Instant{s.readLocked(time.Now())}
}

func (s *Skewed) readLocked(now time.Time) int64 {
	r := s.at + int64(float64(now.Sub(s.base))*s.rate)
	if r < s.last {
		r = s.last
	}
	s.last = r
	return r
}

// Suspended implements Clock: a Skewed clock is never suspended.
func (s *Skewed) Suspended() time.Duration { return 0 }

// SetRate makes the clock run at rate (> 0) from now on; the readings so
// far stand.
func (s *Skewed) SetRate(rate float64) {
	if rate <= 0 {
		panic("clock: Skewed.SetRate rate must be positive")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	s.at = s.readLocked(now)
	s.base = now
	s.rate = rate
}

// Rate is the clock's current rate.
func (s *Skewed) Rate() float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rate
}

// Elapsed is how much time the clock has counted since it was created.
func (s *Skewed) Elapsed() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return time.Duration(s.readLocked(time.Now()) - s.start)
}

package clock

import (
	"math"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestInstant(t *testing.T) {
	a := Instant{ns: int64(time.Hour)}
	b := a.Add(time.Second)
	if !a.Before(b) || !b.After(a) || a.After(b) || b.Before(a) || a.Before(a) {
		t.Fatalf("order of %v and %v is wrong", a, b)
	}
	if d := b.Sub(a); d != time.Second {
		t.Fatalf("Sub = %v, want 1s", d)
	}
	if a.IsZero() || !(Instant{}).IsZero() {
		t.Fatal("IsZero is wrong")
	}
	if got := (Instant{ns: math.MaxInt64 - 1}).Add(time.Hour); got.ns != math.MaxInt64 {
		t.Fatalf("Add past the end = %v, want saturated", got)
	}
	if got := (Instant{ns: math.MinInt64 + 1}).Add(-time.Hour); got.ns != math.MinInt64 {
		t.Fatalf("Add before the start = %v, want saturated", got)
	}
	if s := b.String(); !strings.Contains(s, "1h0m1s") {
		t.Fatalf("String = %q", s)
	}
}

// TestSystemAdvancesMonotonically: System's readings never go back, from
// one goroutine or from several in turn, and follow the passing of time.
func TestSystemAdvancesMonotonically(t *testing.T) {
	c := System()
	first := c.Now()
	if first.IsZero() {
		t.Fatal("System's first reading is the origin")
	}
	prev := first
	for range 100000 {
		now := c.Now()
		if now.Before(prev) {
			t.Fatalf("System went back from %v to %v", prev, now)
		}
		prev = now
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10000 {
				mu.Lock()
				now := c.Now()
				if now.Before(prev) {
					t.Errorf("System went back from %v to %v across goroutines", prev, now)
				}
				prev = now
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	start, t0 := c.Now(), time.Now()
	time.Sleep(20 * time.Millisecond)
	elapsed := time.Since(t0)
	if got := c.Now().Sub(start); got < elapsed-wallSlackDuration || got > elapsed+time.Second {
		t.Fatalf("System advanced %v while the monotonic clock advanced %v", got, elapsed)
	}
	if s := c.Suspended(); s < 0 {
		t.Fatalf("Suspended = %v, negative", s)
	}
}

const wallSlackDuration = time.Duration(wallSlack)

// sim is a machine's clocks under the test's control, in nanoseconds.
type sim struct {
	mu               sync.Mutex
	wall, mono, boot int64
	jitter           int64 // added to the wall reading only
	bootReads        int
}

func (s *sim) read() (int64, int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.wall + s.jitter, s.mono
}

func (s *sim) readBoot(func() (int64, int64)) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bootReads++
	return s.boot
}

// tick lets d pass on every clock.
func (s *sim) tick(d time.Duration) {
	s.mu.Lock()
	s.wall, s.mono, s.boot = s.wall+int64(d), s.mono+int64(d), s.boot+int64(d)
	s.mu.Unlock()
}

func (s *sim) reads() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bootReads
}

// TestBootClockSeesResume drives System's logic with simulated clocks. A
// resume (boot time and wall clock jump ahead, the monotonic clock does
// not) shows in the very next Now; a step of the wall clock alone costs a
// read of boot time and changes nothing; jitter under the slack costs
// nothing; a resume that left the wall clock alone shows once Suspended
// (the node's watcher) has looked.
func TestBootClockSeesResume(t *testing.T) {
	s := &sim{wall: 1_700_000_000 * int64(time.Second), mono: 0, boot: int64(time.Hour)}
	c := newBootClock(s.read, s.readBoot)
	if got := c.Now(); got != (Instant{ns: int64(time.Hour)}) {
		t.Fatalf("Now = %v, want boot time T+1h", got)
	}
	s.tick(time.Second)
	reads := s.reads()
	if got := c.Now(); got != (Instant{ns: int64(time.Hour + time.Second)}) {
		t.Fatalf("Now = %v after 1s, want T+1h0m1s", got)
	}
	if s.reads() != reads {
		t.Fatal("Now read boot time with no sign of a resume")
	}

	// Jitter between the wall and monotonic readings, under the slack.
	s.jitter = wallSlack / 2
	c.Now()
	if s.reads() != reads {
		t.Fatal("Now read boot time for jitter under the slack")
	}
	s.jitter = 0

	// A suspend of 10 minutes.
	s.mu.Lock()
	s.wall += int64(10 * time.Minute)
	s.boot += int64(10 * time.Minute)
	s.mu.Unlock()
	if got, want := c.Now(), (Instant{ns: int64(time.Hour + time.Second + 10*time.Minute)}); got != want {
		t.Fatalf("Now = %v right after a resume, want %v", got, want)
	}
	if got := c.Suspended(); got != 10*time.Minute {
		t.Fatalf("Suspended = %v, want 10m", got)
	}

	// The wall clock stepped back an hour (an operator): Now is unmoved.
	s.mu.Lock()
	s.wall -= int64(time.Hour)
	s.mu.Unlock()
	before := s.reads()
	if got, want := c.Now(), (Instant{ns: int64(time.Hour + time.Second + 10*time.Minute)}); got != want {
		t.Fatalf("Now = %v after a step of the wall clock, want %v", got, want)
	}
	if s.reads() == before {
		t.Fatal("a step of the wall clock did not make Now look at boot time")
	}

	// A resume that left the wall clock alone: Now cannot see it, the
	// watcher's Suspended does, and Now follows.
	s.mu.Lock()
	s.boot += int64(time.Minute)
	s.mu.Unlock()
	if got := c.Suspended(); got != 11*time.Minute {
		t.Fatalf("Suspended = %v, want 11m", got)
	}
	if got, want := c.Now(), (Instant{ns: int64(time.Hour + time.Second + 11*time.Minute)}); got != want {
		t.Fatalf("Now = %v after the watcher looked, want %v", got, want)
	}

	// Boot time read behind the offset already published (cannot happen
	// on one machine; a stale read in a race) never moves Now back.
	s.mu.Lock()
	s.boot -= int64(time.Minute)
	s.mu.Unlock()
	c.Suspended()
	if got, want := c.Now(), (Instant{ns: int64(time.Hour + time.Second + 11*time.Minute)}); got.Before(want) {
		t.Fatalf("Now went back to %v, want at least %v", got, want)
	}
}

// TestFake: a jump moves the fake's Now and Suspended at once; Monotonic
// of it does not see the jump.
func TestFake(t *testing.T) {
	f := NewFake()
	m := Monotonic(f)
	before, mBefore := f.Now(), m.Now()
	f.Jump(time.Hour)
	if got := f.Now().Sub(before); got < time.Hour || got > time.Hour+time.Minute {
		t.Fatalf("Fake advanced %v across a jump of 1h", got)
	}
	if got := f.Suspended(); got < time.Hour {
		t.Fatalf("Fake.Suspended = %v after a jump of 1h", got)
	}
	if got := m.Now().Sub(mBefore); got >= time.Hour {
		t.Fatalf("Monotonic(Fake) advanced %v across a jump of 1h, want no jump", got)
	}
	if m.Suspended() != 0 {
		t.Fatal("Monotonic has suspends")
	}
	if f.Jumped() != time.Hour {
		t.Fatalf("Jumped = %v", f.Jumped())
	}
}

// The cost of a reading, against time.Now (what the read path used
// before). BenchmarkBoottimeSyscall (boot_linux_test.go) is what reading
// CLOCK_BOOTTIME on every call would cost.
func BenchmarkSystemNow(b *testing.B) {
	c := System()
	for b.Loop() {
		c.Now()
	}
}

func BenchmarkTimeNow(b *testing.B) {
	for b.Loop() {
		time.Now()
	}
}

package gctune

import (
	"context"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

func TestPolicyGOGC(t *testing.T) {
	p := DefaultPolicy
	for _, c := range []struct {
		live uint64
		want int
	}{
		{0, 100},
		{10 << 20, 100}, // headroom 64 MiB > live
		{64 << 20, 100}, // exactly the floor
		{128 << 20, 50}, // 64 MiB of 128
		{256 << 20, 25}, // 64 MiB of 256, a quarter too
		{2 << 30, 25},   // a quarter of 2 GiB
		{100 << 30, 25}, // never below Percent
	} {
		if got := p.GOGC(c.live); got != c.want {
			t.Errorf("GOGC(%d MiB) = %d, want %d", c.live>>20, got, c.want)
		}
	}
}

// TestTuneSetsGOGC: with a live heap well above its floor, Tune lowers
// GOGC after the next collection.
func TestTuneSetsGOGC(t *testing.T) {
	if _, set := os.LookupEnv("GOGC"); set {
		t.Skip("GOGC is set in the environment: Tune leaves it")
	}
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	live := make([][]byte, 64)
	for i := range live {
		live[i] = make([]byte, 1<<20) // 64 MiB live
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); Tune(ctx, Policy{Floor: 1 << 20, Percent: 25}, time.Millisecond) }()
	defer func() { cancel(); <-done }()
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	deadline := time.Now().Add(10 * time.Second)
	for {
		runtime.GC()
		metrics.Read(s)
		if s[0].Value.Uint64() == 25 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GOGC is %d after 10 s with %d MiB live, want 25", s[0].Value.Uint64(), len(live))
		}
		time.Sleep(5 * time.Millisecond)
	}
	runtime.KeepAlive(live)
}

package memcoord_test

import (
	"sync"
	"testing"

	"github.com/kvstore/kvstore/clock"
	"github.com/kvstore/kvstore/coord"
	"github.com/kvstore/kvstore/coord/coordtest"
	"github.com/kvstore/kvstore/coord/memcoord"
)

// servers maps each *testing.T to its Server: the suite's namespace.
var servers sync.Map

// serverFor gives each test a Server of its own.
func serverFor(t *testing.T) *memcoord.Server {
	s, _ := servers.LoadOrStore(t, memcoord.NewServer())
	return s.(*memcoord.Server)
}

// newCoord connects to t's Server with cfg.
func newCoord(t *testing.T, cfg memcoord.Config) *memcoord.Coordinator {
	t.Helper()
	c, err := memcoord.New(serverFor(t), cfg)
	if err != nil {
		t.Fatalf("memcoord.New: %v", err)
	}
	return c
}

func TestConformance(t *testing.T) {
	coordtest.Run(t, func(t *testing.T) coord.Coordinator { return newCoord(t, memcoord.Config{}) })
}

func TestConformanceClock(t *testing.T) {
	coordtest.RunClock(t, func(t *testing.T, clk clock.Clock) coord.Coordinator {
		return newCoord(t, memcoord.Config{Clock: clk})
	})
}

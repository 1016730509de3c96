package node

import (
	"testing"
	"time"

	"github.com/kvstore/kvstore/clock"
)

// TestQuorumLost is the CheckQuorum rule with no network: a leader steps
// down once, a window after its election, the voters it heard from within
// the last window (itself included) are no majority.
func TestQuorumLost(t *testing.T) {
	const w = 2 * time.Second
	abc := []string{"a", "b", "c"}
	for _, tc := range []struct {
		name    string
		voters  []string
		heard   map[string]clock.Instant
		elected float64
		now     float64
		want    bool
	}{
		{"within the first window: never", abc, nil, 0, 2, false},
		{"a window after the election, heard from none", abc, nil, 0, 2.5, true},
		{"heard from one other voter in the window", abc, map[string]clock.Instant{"b": at(1)}, 0, 3, false},
		{"that answer ages out of the window", abc, map[string]clock.Instant{"b": at(1)}, 0, 3.5, true},
		{"an answer at the window's start counts", abc, map[string]clock.Instant{"b": at(1.5)}, 0, 3.5, false},
		{"non-voters do not count", abc, map[string]clock.Instant{"x": at(3), "y": at(3)}, 0, 3, true},
		{"a sole voter is its own majority", []string{"a"}, nil, 0, 10, false},
		{"a leader that is no voter needs two of three others", abc[1:], map[string]clock.Instant{"b": at(9)}, 0, 10, true},
		{"four voters need three", []string{"a", "b", "c", "d"}, map[string]clock.Instant{"b": at(9)}, 0, 10, true},
		{"four voters, three heard", []string{"a", "b", "c", "d"}, map[string]clock.Instant{"b": at(9), "d": at(8.5)}, 0, 10, false},
	} {
		if got := quorumLost("a", tc.voters, tc.heard, at(tc.elected), at(tc.now), w); got != tc.want {
			t.Errorf("%s: quorumLost = %v, want %v", tc.name, got, tc.want)
		}
		if _, ok := tc.heard["a"]; ok {
			t.Errorf("%s: quorumLost wrote into the leader's heard map", tc.name)
		}
	}
}

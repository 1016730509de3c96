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

// TestNextVoter is the rule for growing the voter record, with no
// network: a member joins the voters only once it holds everything
// committed, and never one this leader removed.
func TestNextVoter(t *testing.T) {
	prog := func(match uint64, reachable bool) *progress { return &progress{match: match, reachable: reachable} }
	members := map[string]string{"a": "a:1", "b": "b:1", "c": "c:1", "d": "d:1", "e": "e:1"}
	for _, tc := range []struct {
		name    string
		voters  []string
		peers   map[string]*progress
		removed map[string]bool
		want    string
	}{
		{"the leader itself first", []string{"b", "c"}, map[string]*progress{"d": prog(9, true)}, nil, "a"},
		{"a caught-up member", []string{"a", "b"}, map[string]*progress{"b": prog(9, true), "c": prog(7, true)}, nil, "c"},
		{"behind the commit: not yet", []string{"a", "b"}, map[string]*progress{"c": prog(6, true)}, nil, ""},
		{"unreachable: not yet", []string{"a", "b"}, map[string]*progress{"c": prog(9, false)}, nil, ""},
		{"removed by this leader: never", []string{"a", "b"}, map[string]*progress{"c": prog(9, true)}, map[string]bool{"c": true}, ""},
		{"no longer a member: no", []string{"a", "b"}, map[string]*progress{"x": prog(9, true)}, nil, ""},
		{"the lowest id of several", []string{"a"}, map[string]*progress{"e": prog(9, true), "c": prog(9, true), "d": prog(9, true)}, nil, "c"},
		{"all voters: none", []string{"a", "b", "c"}, map[string]*progress{"b": prog(9, true), "c": prog(9, true)}, nil, ""},
	} {
		if got := nextVoter("a", tc.voters, tc.peers, tc.removed, members, 7); got != tc.want {
			t.Errorf("%s: nextVoter = %q, want %q", tc.name, got, tc.want)
		}
	}
}

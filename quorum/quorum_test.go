package quorum

import (
	"testing"
	"time"

	"github.com/kvstore/kvstore/clock"
)

func TestCommitted(t *testing.T) {
	for _, tc := range []struct {
		voters []string
		match  map[string]uint64
		want   uint64
	}{
		{[]string{"a"}, map[string]uint64{"a": 7}, 7},
		{[]string{"a", "b", "c"}, map[string]uint64{"a": 9, "b": 5, "c": 1}, 5},
		{[]string{"a", "b", "c"}, map[string]uint64{"a": 9}, 0},
		{[]string{"a", "b"}, map[string]uint64{"a": 9, "b": 4}, 4},
		// Nodes that are not voters never count, however far they got.
		{[]string{"a", "b", "c"}, map[string]uint64{"a": 9, "x": 9, "y": 9}, 0},
		{[]string{"a", "b", "c", "d", "e"}, map[string]uint64{"a": 5, "b": 4, "c": 3, "d": 2, "e": 1}, 3},
		{nil, nil, 0},
	} {
		if got := Committed(tc.voters, tc.match); got != tc.want {
			t.Errorf("Committed(%v, %v) = %d, want %d", tc.voters, tc.match, got, tc.want)
		}
	}
}

func TestHasMajority(t *testing.T) {
	v := []string{"a", "b", "c"}
	if HasMajority(v, map[string]bool{"a": true}) {
		t.Error("1 of 3 is not a majority")
	}
	if !HasMajority(v, map[string]bool{"a": true, "c": true}) {
		t.Error("2 of 3 is a majority")
	}
	if HasMajority(v, map[string]bool{"a": true, "x": true, "y": true}) {
		t.Error("non-voters counted")
	}
	if HasMajority(v, map[string]bool{"a": true, "b": false}) {
		t.Error("a false vote counted")
	}
}

func TestHeardSince(t *testing.T) {
	var t0 clock.Instant
	at := func(s int) clock.Instant { return t0.Add(time.Duration(s) * time.Second) }
	for _, tc := range []struct {
		voters []string
		heard  map[string]clock.Instant
		since  clock.Instant
		want   bool
	}{
		{[]string{"a"}, map[string]clock.Instant{"a": at(5)}, at(5), true},
		{[]string{"a"}, map[string]clock.Instant{"a": at(4)}, at(5), false},
		{[]string{"a", "b", "c"}, map[string]clock.Instant{"a": at(9), "b": at(6)}, at(5), true},
		// An old answer does not count, nor does a node that is no voter.
		{[]string{"a", "b", "c"}, map[string]clock.Instant{"a": at(9), "b": at(4), "x": at(9)}, at(5), false},
		{[]string{"a", "b", "c", "d"}, map[string]clock.Instant{"a": at(9), "b": at(9)}, at(5), false},
		{[]string{"a", "b", "c", "d"}, map[string]clock.Instant{"a": at(9), "b": at(9), "d": at(9)}, at(5), true},
		// No voter record known: no majority.
		{nil, nil, at(0), false},
	} {
		if got := HeardSince(tc.voters, tc.heard, tc.since); got != tc.want {
			t.Errorf("HeardSince(%v, %v, %v) = %v, want %v", tc.voters, tc.heard, tc.since, got, tc.want)
		}
	}
}

package node

import (
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/kvstore/kvstore/clock"
)

// at is an instant s seconds after an arbitrary origin.
func at(s float64) clock.Instant {
	var t0 clock.Instant
	return t0.Add(1000*time.Second + time.Duration(s*float64(time.Second)))
}

// TestHoldingsPending is the rule a write or read waits on, with no
// network: which holders may still read a copy of key older than the
// write at seq, when the first of their leases ends, and which holdings
// are forgotten on the way. Holder "cl" applies nothing (applied 0), as a
// client that caches copies would: the rules treat it like any node.
func TestHoldingsPending(t *testing.T) {
	const key = "k"
	for _, tc := range []struct {
		name        string
		holds       map[string]holding
		applied     map[string]uint64
		seq, latest uint64
		now         float64
		skip        bool
		pending     int
		next        clock.Instant
		expired     int
		left        []string // holders still recorded after
	}{
		{"no holders", nil, nil, 5, 5, 0, false, 0, clock.Instant{}, 0, nil},
		{"an older live copy not applied waits", map[string]holding{"b": {3, at(2)}}, map[string]uint64{"b": 4}, 5, 5, 0, false, 1, at(2), 0, []string{"b"}},
		{"a client's older copy waits out its lease", map[string]holding{"cl": {3, at(2)}}, nil, 5, 5, 1.5, false, 1, at(2), 0, []string{"cl"}},
		{"the earliest end is next", map[string]holding{"b": {3, at(2)}, "c": {4, at(1)}, "cl": {0, at(3)}}, nil, 5, 5, 0, false, 3, at(1), 0, []string{"b", "c", "cl"}},
		{"a holder that applied seq dropped the copy", map[string]holding{"b": {3, at(2)}}, map[string]uint64{"b": 5}, 5, 5, 0, false, 0, clock.Instant{}, 0, nil},
		{"applied seq but not a later latest: kept, not pending", map[string]holding{"b": {3, at(2)}}, map[string]uint64{"b": 5}, 5, 7, 0, false, 0, clock.Instant{}, 0, []string{"b"}},
		{"a copy at seq or later is no older copy", map[string]holding{"b": {5, at(2)}, "c": {6, at(2)}}, nil, 5, 6, 0, false, 0, clock.Instant{}, 0, []string{"b", "c"}},
		{"a lease that ended on a pending copy: expired", map[string]holding{"b": {3, at(2)}}, nil, 5, 5, 2, false, 0, clock.Instant{}, 1, nil},
		{"a lease that ended on a newer copy: forgotten, not expired", map[string]holding{"b": {5, at(2)}}, nil, 5, 5, 2.5, false, 0, clock.Instant{}, 0, nil},
		{"one ended, one pending", map[string]holding{"b": {3, at(1)}, "c": {3, at(3)}}, nil, 5, 5, 1, false, 1, at(3), 1, []string{"c"}},
		{"skip forgets one pending holder", map[string]holding{"b": {3, at(2)}, "c": {3, at(2)}}, nil, 5, 5, 0, true, 1, at(2), 0, nil},
		{"a read of a key never written (seq 0) waits for no copy", map[string]holding{"b": {0, at(2)}}, nil, 0, 0, 0, false, 0, clock.Instant{}, 0, []string{"b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hs := holdings{"other": {"b": {1, at(0)}}}
			if tc.holds != nil {
				hs[key] = maps.Clone(tc.holds)
			}
			skip := tc.skip
			applied := func(id string) uint64 { return tc.applied[id] }
			pending, next, expired := hs.pending(key, tc.seq, tc.latest, at(tc.now), applied, &skip)
			if pending != tc.pending || next != tc.next || expired != tc.expired {
				t.Errorf("pending = %d, next %v, expired %d; want %d, %v, %d", pending, next, expired, tc.pending, tc.next, tc.expired)
			}
			if skip {
				t.Errorf("skip still set after a pending holder was found")
			}
			left := len(tc.left)
			if tc.skip {
				left = len(hs[key]) // which one was forgotten is not fixed
				if left != len(tc.holds)-1 {
					t.Errorf("skip forgot %d holders, want 1", len(tc.holds)-left)
				}
			} else {
				for _, id := range tc.left {
					if _, ok := hs[key][id]; !ok {
						t.Errorf("holder %s forgotten", id)
					}
				}
			}
			if len(hs[key]) != left {
				t.Errorf("holders left %v, want %v", hs[key], tc.left)
			}
			if _, ok := hs[key]; ok && left == 0 {
				t.Errorf("an empty key stays recorded")
			}
			if len(hs["other"]) != 1 {
				t.Errorf("another key's holdings changed: %v", hs["other"])
			}
		})
	}
}

// TestHoldingsLiveGrantSweep: a grant is recorded (and replaces the
// holder's older copy), live counts the copies a write must invalidate,
// sweep forgets the ended leases and the keys left with none.
func TestHoldingsLiveGrantSweep(t *testing.T) {
	hs := make(holdings)
	hs.grant("k", "b", 3, at(2))
	hs.grant("k", "c", 4, at(4))
	hs.grant("k", "cl", 1, at(6))
	hs.grant("j", "b", 1, at(1))
	for _, tc := range []struct {
		seq  uint64
		now  float64
		want int
	}{
		{5, 0, 3}, {4, 0, 2}, {3, 0, 1}, {1, 0, 0}, {5, 2, 2}, {5, 4, 1}, {5, 6, 0},
	} {
		if got := hs.live("k", tc.seq, at(tc.now)); got != tc.want {
			t.Errorf("live(k, %d, %v) = %d, want %d", tc.seq, at(tc.now), got, tc.want)
		}
	}
	hs.grant("k", "b", 6, at(9))
	if h := hs["k"]["b"]; h != (holding{6, at(9)}) {
		t.Errorf("a new grant to b: %+v, want seq 6 until %v", h, at(9))
	}
	hs.sweep(at(4))
	if got := fmt.Sprint(hs); got != fmt.Sprint(holdings{"k": {"b": {6, at(9)}, "cl": {1, at(6)}}}) {
		t.Errorf("after sweep at %v: %s", at(4), got)
	}
	hs.sweep(at(9))
	if len(hs) != 0 {
		t.Errorf("after sweep at %v: %v, want none", at(9), hs)
	}
}

package robustness

import (
	"testing"
	"time"

	"github.com/kvstore/kvstore/linearizability"
)

func TestLongestWithoutWrite(t *testing.T) {
	put := func(call, ret int64) linearizability.Op {
		return linearizability.Op{Input: linearizability.Input{Kind: linearizability.Put, Key: "k", Value: "v"}, Call: call, Return: ret}
	}
	get := func(call, ret int64) linearizability.Op {
		return linearizability.Op{Input: linearizability.Input{Kind: linearizability.Get, Key: "k"}, Call: call, Return: ret}
	}
	unknown := put(40, linearizability.Infinity)
	unknown.Output.Unknown = true
	for _, tc := range []struct {
		name string
		h    []linearizability.Op
		gap  time.Duration
		from int64
	}{
		{"empty", nil, 0, 0},
		{"from the first call to the first write", []linearizability.Op{put(0, 30), put(10, 35)}, 30, 0},
		{"between writes", []linearizability.Op{put(0, 10), put(5, 20), put(15, 90), get(0, 100)}, 70, 20},
		{"after the last write, reads and unknown writes do not count", []linearizability.Op{put(0, 10), unknown, get(20, 200)}, 190, 10},
	} {
		gap, from := LongestWithoutWrite(tc.h)
		if gap != tc.gap || from != tc.from {
			t.Errorf("%s: %v from %d, want %v from %d", tc.name, gap, from, tc.gap, tc.from)
		}
	}
}

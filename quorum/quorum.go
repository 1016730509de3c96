// Package quorum holds the majority arithmetic of KVStore: pure functions
// over a voter set, testable without a cluster. Majorities are always of the
// voter record, never of the nodes that happen to be alive.
package quorum

import (
	"sort"

	"github.com/kvstore/kvstore/clock"
)

// Majority is the number of votes out of n that make a majority.
func Majority(n int) int { return n/2 + 1 }

// Committed returns the highest seq that a majority of voters have applied,
// given each voter's applied seq (voters missing from match count as 0).
func Committed(voters []string, match map[string]uint64) uint64 {
	if len(voters) == 0 {
		return 0
	}
	seqs := make([]uint64, len(voters))
	for i, v := range voters {
		seqs[i] = match[v]
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] > seqs[j] })
	return seqs[Majority(len(voters))-1]
}

// HasMajority reports whether the ids in yes include a majority of voters.
// Ids that are not voters do not count.
func HasMajority(voters []string, yes map[string]bool) bool {
	n := 0
	for _, v := range voters {
		if yes[v] {
			n++
		}
	}
	return n >= Majority(len(voters))
}

// HeardSince reports whether the voters heard from at or after since make
// a majority of voters: heard maps an id to when the last answer from it
// was asked for (the send time of the request it answered). It decides
// whether a leader keeps leading (CheckQuorum) and whether a candidate
// may campaign (pre-vote).
func HeardSince(voters []string, heard map[string]clock.Instant, since clock.Instant) bool {
	n := 0
	for _, v := range voters {
		if at, ok := heard[v]; ok && !at.Before(since) {
			n++
		}
	}
	return n >= Majority(len(voters))
}

// Package quorum holds the majority arithmetic of KVStore: pure functions
// over a voter set, testable without a cluster. Majorities are always of the
// voter record, never of the nodes that happen to be alive.
package quorum

import "sort"

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

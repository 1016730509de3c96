//go:build race

package node_test

// raceEnabled: the race detector changes allocation counts.
const raceEnabled = true

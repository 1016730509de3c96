//go:build race

package cluster_test

// raceEnabled: the test runs under the race detector, which makes the
// large tests too slow (.ci/run runs them without it).
const raceEnabled = true

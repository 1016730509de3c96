//go:build race

package sim

// defaultSeeds is how many schedules TestSimulation runs by default: the
// race detector makes each one several times slower.
const defaultSeeds = 20

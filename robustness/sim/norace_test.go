//go:build !race

package sim

// defaultSeeds is how many schedules TestSimulation runs by default.
const defaultSeeds = 100

package sim

import (
	"strconv"
	"testing"

	"github.com/kvstore/kvstore/node"
	"github.com/kvstore/kvstore/robustness/linearizability"
)

// TestSimulationFindsMixedForwardAnswers is the proof that the simulation
// tests the Forward streams: with Faults.RotateForwardAnswers a follower
// hands each answer of a message that carries several to the wrong
// operation, and some schedule among the first maxForwardSeeds shows a
// history that is not linearizable.
func TestSimulationFindsMixedForwardAnswers(t *testing.T) {
	for seed := uint64(1); seed <= maxForwardSeeds; seed++ {
		sched := NewSchedule(seed, nodesFor(seed), WithinMargin, faultTime, Config().ClockDrift)
		var o outcome
		t.Run(strconv.FormatUint(seed, 10), func(t *testing.T) {
			o = runScheduleWith(t, sched, func(cfg *node.Config) { cfg.Faults.RotateForwardAnswers = true }, linearizability.VisualizationDir(t.TempDir()))
		})
		if o.runErr != nil {
			t.Fatalf("seed %d: run: %v", seed, o.runErr)
		}
		if o.violation() {
			t.Logf("seed %d found a violation: %s %v", seed, o.illegal, o.durable)
			return
		}
	}
	t.Fatalf("no violation in %d schedules whose followers mix up the answers of their Forward streams", maxForwardSeeds)
}

// maxForwardSeeds bounds the schedules TestSimulationFindsMixedForwardAnswers
// tries.
const maxForwardSeeds = 20

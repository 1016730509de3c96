package sim

import (
	"testing"
	"time"
)

// TestSimulationFindsImmediateExpiry: a coordinator that ends sessions
// before their TTL ran out (memcoord's ExpireSessions, at once) breaks
// the contract the protocol relies on (coord.Session: live until its
// Deadline). A follower cut from the coordinator still believes its
// session live and serves cached copies, while the new leader, which no
// longer sees it as a member, takes over without waiting for its leases:
// the simulation must find stale reads. It is why NewSchedule never draws
// Expire.
func TestSimulationFindsImmediateExpiry(t *testing.T) {
	findViolation(t, maxExpirySeeds, "whose coordinator expires sessions at once", func(seed uint64) Schedule {
		s := Schedule{Seed: seed, Nodes: 3, Skew: WithinMargin, Length: 5 * time.Second}
		for n := range 3 {
			s.Events = append(s.Events, Event{Kind: Rate, Node: n, Rate: 1})
		}
		for at := time.Second; at < s.Length; at += 1500 * time.Millisecond {
			s.Events = append(s.Events,
				Event{At: at, Kind: CoordCut, Node: 2},
				Event{At: at + 20*time.Millisecond, Kind: Expire, Node: 2},
				Event{At: at + 40*time.Millisecond, Kind: Expire, Node: 0},
				Event{At: at + 40*time.Millisecond, Kind: Expire, Node: 1},
				Event{At: at + 900*time.Millisecond, Kind: CoordHeal, Node: 2},
			)
		}
		return s
	}, nil)
}

// maxExpirySeeds bounds the schedules TestSimulationFindsImmediateExpiry
// tries.
const maxExpirySeeds = 20

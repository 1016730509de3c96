package nemesis

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// Step is one fault of a schedule.
type Step struct {
	Fault Fault
	Nodes []int         // the nodes it hits (empty for faults aimed at the leader and for a delay of every link)
	Other []int         // for one-way partitions: the nodes whose calls are cut... to Nodes
	Drop  bool          // partitions: drop messages (timeouts) rather than refuse
	Delay time.Duration // for Delay
	Pick  int           // for HandOver, RmiDownFollower, LoseLastCopy, RemoveVoter: which follower, counted from the leader; for Bridge, 0 the leader, else follower Pick-1
	Twice bool          // for LoseDisk and LoseLastCopy: restart the wiped node twice before the heal
	Gap   time.Duration // quiet time before the fault
	Hold  time.Duration // how long the fault lasts
}

func (s Step) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "+%v %s", s.Gap.Round(time.Millisecond), name(s.Fault))
	if len(s.Nodes) > 0 {
		fmt.Fprintf(&b, " %v", s.Nodes)
	}
	if len(s.Other) > 0 {
		fmt.Fprintf(&b, " from %v", s.Other)
	}
	if s.Drop {
		b.WriteString(" (drop)")
	}
	if s.Delay > 0 {
		fmt.Fprintf(&b, " %v", s.Delay)
	}
	if s.Twice {
		b.WriteString(" twice")
	}
	if s.Fault == Bridge {
		if s.Pick == 0 {
			b.WriteString(" via the leader")
		} else {
			fmt.Fprintf(&b, " via follower %d", s.Pick-1)
		}
	}
	fmt.Fprintf(&b, " for %v", s.Hold.Round(time.Millisecond))
	return b.String()
}

// Schedule is a seeded list of steps.
type Schedule struct {
	Seed  uint64
	Steps []Step
}

func (s Schedule) String() string {
	parts := make([]string, len(s.Steps))
	for i, st := range s.Steps {
		parts[i] = st.String()
	}
	return fmt.Sprintf("seed %d: %s", s.Seed, strings.Join(parts, "; "))
}

// Options shape a generated schedule.
type Options struct {
	Size   int     // nodes in the cluster
	Steps  int     // faults in the schedule
	Faults []Fault // fault mix (default AllFaults)
	// MinHold and MaxHold bound each fault's duration; MaxGap bounds the
	// quiet time before each.
	MinHold, MaxHold, MaxGap time.Duration
	// LeaderHold, if longer than a step's drawn hold, is how long the
	// faults of LeaderFaults are held instead: long enough that the
	// others must elect a leader and serve before the heal (a liveness
	// target), not merely wait the fault out. The draws are the same
	// either way, so a seed gives the same steps but for these holds.
	LeaderHold time.Duration
}

// Generate makes the schedule of seed. The same seed and options always
// give the same schedule.
func Generate(seed uint64, o Options) Schedule {
	if len(o.Faults) == 0 {
		o.Faults = AllFaults
	}
	d := &Draw{r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), Size: o.Size}
	s := Schedule{Seed: seed}
	for i := 0; i < o.Steps; i++ {
		st := Step{Fault: o.Faults[d.IntN(len(o.Faults))], Gap: d.Duration(0, o.MaxGap), Hold: d.Duration(o.MinHold, o.MaxHold)}
		if slices.Contains(LeaderFaults, st.Fault) {
			st.Hold = max(st.Hold, o.LeaderHold)
		}
		d.Perm = d.r.Perm(o.Size)
		st.Fault.Draw(d, &st)
		s.Steps = append(s.Steps, st)
	}
	return s
}

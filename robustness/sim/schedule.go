package sim

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/kvstore/kvstore/rpc/memtransport"
)

// Kind is what an Event does.
type Kind string

// Event kinds. Node and Peer are node numbers (0-based).
const (
	Crash     Kind = "crash"      // Node is killed (a process crash)
	Restart   Kind = "restart"    // Node starts again; WithData false: an empty data directory
	Cut       Kind = "cut"        // messages from Node to Peer are lost
	Uncut     Kind = "uncut"      // the cut from Node to Peer heals
	Degrade   Kind = "degrade"    // messages from Node to Peer meet Faults
	Restore   Kind = "restore"    // the faults from Node to Peer clear
	CoordCut  Kind = "coord-cut"  // Node's coordinator connection is cut
	CoordHeal Kind = "coord-heal" // Node's coordinator connection heals
	// Expire makes the coordinator expire Node's sessions at once, before
	// their TTL ran out without keep-alives: beyond the coordinator's
	// contract (coord.Session: live until its Deadline), so NewSchedule
	// never draws it; a session is lost by a CoordCut longer than the TTL.
	Expire Kind = "expire"
	Rate   Kind = "rate" // Node's clock runs at Rate from now on
)

// Event is one step of a Schedule.
type Event struct {
	At       time.Duration // since the cluster first served
	Kind     Kind
	Node     int
	Peer     int
	WithData bool
	Rate     float64
	Faults   memtransport.Faults
}

// String shows the event as one line of a schedule.
func (e Event) String() string {
	s := fmt.Sprintf("%8v %-10s n%d", e.At.Round(time.Millisecond), e.Kind, e.Node+1)
	switch e.Kind {
	case Cut, Uncut, Degrade, Restore:
		s += fmt.Sprintf("->n%d", e.Peer+1)
	}
	switch e.Kind {
	case Restart:
		if !e.WithData {
			s += " (data lost)"
		}
	case Rate:
		s += fmt.Sprintf(" %.3f", e.Rate)
	case Degrade:
		f := e.Faults
		s += fmt.Sprintf(" drop %.2f delay %v+%v reorder %.2f/%v dup %.2f", f.Drop, f.Delay, f.Jitter, f.Reorder, f.ReorderDelay, f.Duplicate)
	}
	return s
}

// Schedule is a seeded list of faults, in time order.
type Schedule struct {
	Seed   uint64
	Nodes  int
	Skew   Skew
	Length time.Duration // faults happen before this; then everything heals
	Events []Event
}

// String lists the schedule, one event a line.
func (s Schedule) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "schedule seed %d: %d nodes, skew %s, faults for %v\n", s.Seed, s.Nodes, s.Skew, s.Length)
	for _, e := range s.Events {
		b.WriteString(e.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// Skew says how far apart the nodes' clock rates may be.
type Skew int

// Skews.
const (
	// WithinMargin keeps every two nodes' clock rates within the
	// configured drift margin (node Config.ClockDrift) of each other, and
	// within the coordinator's margin of its time: the protocol promises
	// linearizability.
	WithinMargin Skew = iota
	// BeyondMargin runs some nodes' clocks far slower or faster than the
	// others': leases outlive what the leader counts, and the simulation
	// must find stale reads.
	BeyondMargin
)

func (s Skew) String() string {
	if s == BeyondMargin {
		return "beyond-margin"
	}
	return "within-margin"
}

// withinRate is the largest departure of a rate from 1 within the margin:
// two rates 1-a and 1+a differ by a factor under 1+drift when
// a < drift/(2+drift); a little under that.
func withinRate(drift float64) float64 { return drift / (2 + drift) * 0.9 }

// NewSchedule draws a schedule from seed: faults of every kind for length,
// at most a minority of the nodes down at once, at most one restart
// without data (two lost disks before a reconciliation may lose
// acknowledged writes legitimately). drift is the nodes' ClockDrift.
func NewSchedule(seed uint64, nodes int, skew Skew, length time.Duration, drift float64) Schedule {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	s := Schedule{Seed: seed, Nodes: nodes, Skew: skew, Length: length}
	add := func(e Event) { s.Events = append(s.Events, e) }
	between := func(lo, hi time.Duration) time.Duration { return lo + time.Duration(r.Int64N(int64(hi-lo)+1)) }
	a := withinRate(drift)
	within := func() float64 { return 1 + (2*r.Float64()-1)*a }
	beyond := make([]bool, nodes)
	if skew == BeyondMargin {
		for range 1 + r.IntN((nodes-1)/2) {
			beyond[r.IntN(nodes)] = true
		}
	}
	// A slow clock is the harmful one: a follower's lease outlives the
	// leader's count of it (a fast leader's would do the same, but the
	// leader moves less often than the followers are read from).
	outside := func() float64 { return 0.2 + 0.3*r.Float64() }
	rate := func(n int) float64 {
		if beyond[n] {
			return outside()
		}
		return within()
	}
	for n := range nodes {
		add(Event{Kind: Rate, Node: n, Rate: rate(n)})
	}

	downUntil := make([]time.Duration, nodes)
	busy := map[[3]int]time.Duration{} // (kind, node, peer) -> until when a fault of that kind holds
	free := func(k, n, p int, at, until time.Duration) bool {
		key := [3]int{k, n, p}
		if busy[key] > at {
			return false
		}
		busy[key] = until
		return true
	}
	wiped := false
	pair := func() (int, int) {
		a := r.IntN(nodes)
		b := (a + 1 + r.IntN(nodes-1)) % nodes
		return a, b
	}
	for at := between(0, 500*time.Millisecond); at < length; at += time.Duration(r.ExpFloat64() * float64(300*time.Millisecond)) {
		switch x := r.IntN(100); {
		case x < 15: // crash and restart
			n := r.IntN(nodes)
			down := 0
			for _, u := range downUntil {
				if u > at {
					down++
				}
			}
			if downUntil[n] > at || down >= (nodes-1)/2 {
				continue
			}
			back := at + between(100*time.Millisecond, 3*time.Second)
			downUntil[n] = back
			withData := wiped || r.IntN(4) != 0
			wiped = wiped || !withData
			add(Event{At: at, Kind: Crash, Node: n})
			add(Event{At: back, Kind: Restart, Node: n, WithData: withData})
		case x < 40: // a partition, one way or both
			a, b := pair()
			until := at + between(200*time.Millisecond, 4*time.Second)
			both := r.IntN(2) == 0
			if !free(0, a, b, at, until) || (both && !free(0, b, a, at, until)) {
				continue
			}
			add(Event{At: at, Kind: Cut, Node: a, Peer: b})
			add(Event{At: until, Kind: Uncut, Node: a, Peer: b})
			if both {
				add(Event{At: at, Kind: Cut, Node: b, Peer: a})
				add(Event{At: until, Kind: Uncut, Node: b, Peer: a})
			}
		case x < 65: // a lossy, slow, reordering, duplicating link
			a, b := pair()
			until := at + between(500*time.Millisecond, 5*time.Second)
			if !free(1, a, b, at, until) {
				continue
			}
			f := memtransport.Faults{
				Drop:         0.3 * r.Float64(),
				Delay:        between(0, 30*time.Millisecond),
				Jitter:       between(0, 100*time.Millisecond),
				Reorder:      0.3 * r.Float64(),
				ReorderDelay: between(0, 300*time.Millisecond),
				Duplicate:    0.2 * r.Float64(),
			}
			add(Event{At: at, Kind: Degrade, Node: a, Peer: b, Faults: f})
			add(Event{At: until, Kind: Restore, Node: a, Peer: b})
		case x < 80: // cut from the coordinator, shorter or longer than a session
			n := r.IntN(nodes)
			until := at + between(300*time.Millisecond, 5*time.Second)
			if !free(2, n, 0, at, until) {
				continue
			}
			add(Event{At: at, Kind: CoordCut, Node: n})
			add(Event{At: until, Kind: CoordHeal, Node: n})
		case x < 90: // session loss: no keep-alive arrives for longer than the TTL
			n := r.IntN(nodes)
			ttl := Config().SessionTTL
			until := at + between(ttl+ttl/10, 2*ttl)
			if !free(2, n, 0, at, until) {
				continue
			}
			add(Event{At: at, Kind: CoordCut, Node: n})
			add(Event{At: until, Kind: CoordHeal, Node: n})
		default: // the clock's rate changes
			n := r.IntN(nodes)
			add(Event{At: at, Kind: Rate, Node: n, Rate: rate(n)})
		}
	}
	slices.SortStableFunc(s.Events, func(x, y Event) int { return int(x.At - y.At) })
	return s
}

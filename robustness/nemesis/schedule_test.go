package nemesis

import (
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"
)

func opts(size int) Options {
	return Options{Size: size, Steps: 6, MinHold: 500 * time.Millisecond, MaxHold: 3 * time.Second, MaxGap: 500 * time.Millisecond}
}

func TestSameSeedSameSchedule(t *testing.T) {
	for _, size := range []int{3, 5} {
		for seed := uint64(0); seed < 50; seed++ {
			a, b := Generate(seed, opts(size)), Generate(seed, opts(size))
			if !reflect.DeepEqual(a, b) {
				t.Fatalf("size %d seed %d: two schedules:\n%s\n%s", size, seed, a, b)
			}
			if a.String() != b.String() {
				t.Fatalf("size %d seed %d: two descriptions:\n%s\n%s", size, seed, a, b)
			}
			if a.Seed != seed || len(a.Steps) != 6 {
				t.Fatalf("size %d seed %d: schedule %s", size, seed, a)
			}
		}
	}
}

func TestDifferentSeedsDiffer(t *testing.T) {
	for _, size := range []int{3, 5} {
		seen := map[string]uint64{}
		for seed := uint64(0); seed < 200; seed++ {
			s := Generate(seed, opts(size))
			steps := fmt.Sprint(s.Steps)
			if prev, ok := seen[steps]; ok {
				t.Fatalf("size %d: seeds %d and %d give the same steps: %s", size, prev, seed, s)
			}
			seen[steps] = seed
		}
	}
}

// TestGenerateShapes checks every generated step against the options: holds
// and gaps in bounds, nodes in range and distinct, a minority where the kind
// says so, and both forms of delay (every link, some nodes) in use.
func TestGenerateShapes(t *testing.T) {
	for _, size := range []int{3, 5} {
		o := opts(size)
		minority := (size - 1) / 2
		kinds := map[Fault]int{}
		var allLinks, perNode, leaderBridges, followerBridges int
		for seed := uint64(0); seed < 300; seed++ {
			for _, st := range Generate(seed, o).Steps {
				kinds[st.Fault]++
				if st.Hold < o.MinHold || st.Hold >= o.MaxHold || st.Gap < 0 || st.Gap >= o.MaxGap {
					t.Fatalf("size %d seed %d: %s: hold or gap out of bounds", size, seed, st)
				}
				all := append(slices.Clone(st.Nodes), st.Other...)
				for i, n := range all {
					if n < 0 || n >= size || slices.Contains(all[i+1:], n) {
						t.Fatalf("size %d seed %d: %s: bad or repeated node %d", size, seed, st, n)
					}
				}
				switch st.Fault {
				case Kill, RmiDown, ZkDown, ZkStall, Isolate:
					if len(st.Nodes) != 1 {
						t.Fatalf("size %d seed %d: %s: want one node", size, seed, st)
					}
				case ZkDownMajority:
					if len(st.Nodes) != minority+1 {
						t.Fatalf("size %d seed %d: %s: want a majority", size, seed, st)
					}
				case Partition:
					if len(st.Nodes) < 1 || len(st.Nodes) > max(minority, 1) {
						t.Fatalf("size %d seed %d: %s: want a minority", size, seed, st)
					}
				case Bridge:
					if len(st.Nodes) != 0 || st.Pick < 0 || st.Pick >= size {
						t.Fatalf("size %d seed %d: %s: want no nodes and a pick under %d", size, seed, st, size)
					}
					if st.Pick == 0 {
						leaderBridges++
					} else {
						followerBridges++
					}
				case OneWay:
					if len(st.Nodes) != 1 || len(st.Other) < 1 {
						t.Fatalf("size %d seed %d: %s: want one node and others", size, seed, st)
					}
				case Delay:
					if st.Delay <= 0 || st.Delay > 200*time.Millisecond {
						t.Fatalf("size %d seed %d: %s: delay out of bounds", size, seed, st)
					}
					if len(st.Nodes) == 0 {
						allLinks++
					} else if len(st.Nodes) <= max(minority, 1) {
						perNode++
					} else {
						t.Fatalf("size %d seed %d: %s: want a minority delayed", size, seed, st)
					}
				}
			}
		}
		for _, k := range AllFaults {
			if kinds[k] == 0 {
				t.Errorf("size %d: %s never generated in 300 schedules", size, k)
			}
		}
		if leaderBridges == 0 || followerBridges == 0 {
			t.Errorf("size %d: bridges through the leader %d, through a follower %d: want both", size, leaderBridges, followerBridges)
		}
		if allLinks == 0 || perNode == 0 {
			t.Errorf("size %d: delays of every link %d, of some nodes %d: want both", size, allLinks, perNode)
		}
	}
}

// TestGenerateDurableShapes checks the steps of the durable fault mix: a
// lost disk hits one node, restarted once or twice; a replaced node is one
// node; the kinds found from the leader name none.
func TestGenerateDurableShapes(t *testing.T) {
	for _, size := range []int{3, 5} {
		o := opts(size)
		o.Faults = DurableFaults
		kinds := map[Fault]int{}
		twice := map[Fault]map[bool]int{LoseDisk: {}, LoseLastCopy: {}}
		for seed := uint64(0); seed < 200; seed++ {
			for _, st := range Generate(seed, o).Steps {
				kinds[st.Fault]++
				switch st.Fault {
				case LoseDisk, ReplaceNode, Kill:
					if len(st.Nodes) != 1 || st.Nodes[0] < 0 || st.Nodes[0] >= size {
						t.Fatalf("size %d seed %d: %s: want one node", size, seed, st)
					}
				default:
					if len(st.Nodes) != 0 {
						t.Fatalf("size %d seed %d: %s: want no nodes named", size, seed, st)
					}
				}
				if st.Twice && st.Fault != LoseDisk && st.Fault != LoseLastCopy {
					t.Fatalf("size %d seed %d: %s: twice on a kind that restarts nothing twice", size, seed, st)
				}
				if m := twice[st.Fault]; m != nil {
					m[st.Twice]++
				}
			}
		}
		for _, k := range o.Faults {
			if kinds[k] == 0 {
				t.Errorf("size %d: %s never generated in 200 schedules", size, k)
			}
		}
		for k, m := range twice {
			if m[true] == 0 || m[false] == 0 {
				t.Errorf("size %d: %s restarted twice %d times, once %d times: want both", size, k, m[true], m[false])
			}
		}
	}
}

// TestLeaderHold: with Options.LeaderHold the faults of LeaderFaults are
// held at least that long, every other step is as without it.
func TestLeaderHold(t *testing.T) {
	o := opts(3)
	long := o
	long.LeaderHold = 4 * time.Second
	held := 0
	for seed := uint64(0); seed < 100; seed++ {
		a, b := Generate(seed, o), Generate(seed, long)
		for i, st := range b.Steps {
			want := a.Steps[i]
			if slices.Contains(LeaderFaults, st.Fault) {
				held++
				want.Hold = max(want.Hold, long.LeaderHold)
			}
			if !reflect.DeepEqual(st, want) {
				t.Fatalf("seed %d step %d: %s with LeaderHold, want %s", seed, i, st, want)
			}
		}
	}
	if held == 0 {
		t.Fatal("no leader fault in 100 schedules")
	}
}

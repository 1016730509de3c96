package nemesis

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/schedules.golden from the current code")

// goldenLine describes a step with every field, so that a golden schedule
// pins down each draw, not only the ones Step.String prints.
func goldenLine(st Step) string {
	return fmt.Sprintf("%s | nodes %v other %v drop %v delay %d pick %d twice %v gap %d hold %d",
		st, st.Nodes, st.Other, st.Drop, int64(st.Delay), st.Pick, st.Twice, int64(st.Gap), int64(st.Hold))
}

// goldenSchedules are the schedules of a few seeds under each fault mix
// the suite uses, with and without LeaderHold.
func goldenSchedules() string {
	everything := append(slices.Clone(AllFaults), HandOver, RmiDownFollower)
	everything = append(everything, DurableFaults...)
	mixes := []struct {
		name  string
		kinds []Fault
	}{{"default", nil}, {"durable", DurableFaults}, {"everything", everything}}
	var b strings.Builder
	for _, size := range []int{3, 5} {
		for _, mix := range mixes {
			for _, leaderHold := range []time.Duration{0, 4 * time.Second} {
				o := Options{Size: size, Steps: 8, Faults: mix.kinds, MinHold: 500 * time.Millisecond, MaxHold: 3 * time.Second, MaxGap: 500 * time.Millisecond, LeaderHold: leaderHold}
				for _, seed := range []uint64{0, 1, 2, 7, 42, 123, 1 << 40, 0xdeadbeef} {
					s := Generate(seed, o)
					fmt.Fprintf(&b, "size %d mix %s leader hold %v seed %d\n", size, mix.name, leaderHold, seed)
					for _, st := range s.Steps {
						fmt.Fprintf(&b, "  %s\n", goldenLine(st))
					}
					fmt.Fprintf(&b, "  = %s\n", s)
				}
			}
		}
	}
	return b.String()
}

// playGolden plays schedules of every fault against the fake cluster and
// describes what each step did: the log, the fault state the heal found and
// the leader then.
func playGolden() string {
	everything := append(slices.Clone(AllFaults), HandOver, RmiDownFollower)
	everything = append(everything, DurableFaults...)
	var b strings.Builder
	for _, size := range []int{2, 3, 5} { // 2: the faults that need more say so
		for seed := range uint64(6) {
			f := newFake(size)
			o := quick(size)
			o.Steps = 30
			o.Faults = everything
			s := Generate(seed, o)
			fmt.Fprintf(&b, "size %d seed %d\n", size, seed)
			n, err := Play(context.Background(), f, s, 5*time.Second, func(format string, args ...any) {
				fmt.Fprintf(&b, "  log: %s\n", fmt.Sprintf(format, args...))
			})
			fmt.Fprintf(&b, "  played %d, err %v\n", n, err)
			for i := range f.faults {
				fmt.Fprintf(&b, "  heal %d: leader %d, found %s\n", i, f.leaders[i], f.faults[i])
			}
		}
	}
	return b.String()
}

// TestGenerateGolden: the schedules generated from a seed are the ones the
// code gave when the golden file was written (go test -run
// TestGenerateGolden -update rewrites it), so that a seed printed by an
// older run still replays the same faults.
func TestGenerateGolden(t *testing.T) {
	golden(t, "schedules.golden", goldenSchedules())
}

// TestPlayGolden: each fault does to the fake cluster what it did when the
// golden file was written (-update rewrites it).
func TestPlayGolden(t *testing.T) {
	golden(t, "play.golden", playGolden())
}

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		g, w := strings.Split(got, "\n"), strings.Split(string(want), "\n")
		for i := range min(len(g), len(w)) {
			if g[i] != w[i] {
				t.Fatalf("%s line %d:\ngot  %s\nwant %s", path, i+1, g[i], w[i])
			}
		}
		t.Fatalf("%s: %d lines, want %d", path, len(g), len(w))
	}
}

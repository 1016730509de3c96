package nemesis

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestFaultNames pins down every fault's name: printed schedules,
// KVSTORE_KINDS and replay commands spell faults so, and ByName finds
// each by it.
func TestFaultNames(t *testing.T) {
	want := []string{
		"kill", "kill-leader", "rmi-down", "zk-down", "zk-stall", "zk-down-leader", "zk-down-majority",
		"partition", "partition-leader", "pause-leader", "bridge", "partition-one-way", "delay", "isolate",
		"hand-over", "rmi-down-follower", "crash-all", "rolling-crash", "lose-disk", "lose-disk-last-copy",
		"replace-node", "remove-voter",
	}
	var got []string
	for _, f := range Faults() {
		got = append(got, f.Name())
		if s, ok := f.(interface{ String() string }); !ok || s.String() != f.Name() {
			t.Errorf("%s: does not print as its name", f.Name())
		}
		if g, ok := ByName(f.Name()); !ok || g != f {
			t.Errorf("ByName(%q) = %v, %v; want the fault itself", f.Name(), g, ok)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("fault names %q, want %q", got, want)
	}
	if f, ok := ByName("no-such-fault"); ok {
		t.Errorf("ByName(no-such-fault) = %v", f)
	}
	if CutLeaderFromPeers != PartitionLeader {
		t.Error("cut-leader-from-peers is not partition-leader")
	}
}

// TestMixesHoldRegisteredFaults: every fault of a mix is registered, and
// every registered fault is in a mix or one of the two AllFaults leaves
// out on purpose.
func TestMixesHoldRegisteredFaults(t *testing.T) {
	in := map[Fault]bool{HandOver: true, RmiDownFollower: true}
	for _, mix := range [][]Fault{AllFaults, DurableFaults, LeaderFaults} {
		for _, f := range mix {
			if !slices.Contains(Faults(), f) {
				t.Errorf("%s is in a mix but not registered", f.Name())
			}
			in[f] = true
		}
	}
	for _, f := range Faults() {
		if !in[f] {
			t.Errorf("%s is in no mix", f.Name())
		}
	}
}

// TestAim: the faults aimed at the leader find it when injected, those
// aimed at a follower also give the step up without one, and the others
// never ask for the leader.
func TestAim(t *testing.T) {
	for _, f := range Faults() {
		fk := newFake(3)
		a, err := aim(context.Background(), fk, Step{Fault: f}, t.Logf)
		if err != nil {
			t.Fatalf("%s: %v", f.Name(), err)
		}
		switch f.Aim() {
		case AtNodes:
			if fk.leaderCalls != 0 || len(a.Nodes) != 0 {
				t.Errorf("%s: aimed at the nodes %v, %d leader calls, want none", f.Name(), a.Nodes, fk.leaderCalls)
			}
		case AtLeader, AtFollower:
			if fk.leaderCalls != 1 || !slices.Equal(a.Nodes, []int{fk.leader}) {
				t.Errorf("%s: aimed at %v, want the leader %d", f.Name(), a.Nodes, fk.leader)
			}
		}
		one := newFake(1)
		_, err = aim(context.Background(), one, Step{Fault: f}, t.Logf)
		if needs := err != nil && strings.Contains(err.Error(), "needs a follower"); needs != (f.Aim() == AtFollower) {
			t.Errorf("%s with one node: %v", f.Name(), err)
		}
	}
	if _, err := aim(context.Background(), newFake(3), Step{}, t.Logf); !errors.Is(err, errNoFault) {
		t.Errorf("a step without a fault: %v, want %v", err, errNoFault)
	}
}

// TestPlayStepWithoutFault: a step without a fault fails to inject, is
// not counted, and the cluster is still healed after it.
func TestPlayStepWithoutFault(t *testing.T) {
	f := newFake(3)
	var log []string
	n, err := Play(context.Background(), f, Schedule{Steps: []Step{{}}}, time.Second, func(format string, args ...any) {
		log = append(log, fmt.Sprintf(format, args...))
	})
	if err != nil || n != 0 || f.heals != 1 || f.healthy != 1 {
		t.Fatalf("%d faults, err %v, %d heals, %d health checks; want 0, nil, 1, 1", n, err, f.heals, f.healthy)
	}
	if !slices.ContainsFunc(log, func(l string) bool { return strings.Contains(l, "inject failed: "+errNoFault.Error()) }) {
		t.Fatalf("log does not say the inject failed:\n%s", strings.Join(log, "\n"))
	}
}

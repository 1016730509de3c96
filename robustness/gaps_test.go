package robustness

import (
	"strings"
	"testing"
	"time"

	"github.com/kvstore/kvstore/node"
	"github.com/kvstore/kvstore/robustness/linearizability"
	"github.com/kvstore/kvstore/robustness/nemesis"
)

// history is writes acknowledged every 100 ms from 0 to 1 s and from 6 s
// to 8 s, reads all along, and a write whose outcome is unknown at 3 s:
// no write is acknowledged from 1 s to 6 s.
func history() []linearizability.Op {
	ms := func(n int) int64 { return int64(time.Duration(n) * time.Millisecond) }
	var h []linearizability.Op
	for t := 0; t <= 8000; t += 100 {
		h = append(h, linearizability.Op{Input: linearizability.Input{Kind: linearizability.Get, Key: "k"}, Call: ms(t), Return: ms(t + 50)})
		if t <= 1000 || t >= 6000 {
			h = append(h, linearizability.Op{Input: linearizability.Input{Kind: linearizability.Put, Key: "k", Value: "v"}, Call: ms(t) - ms(20), Return: ms(t)})
		}
	}
	unknown := linearizability.Op{Input: linearizability.Input{Kind: linearizability.Put, Key: "k", Value: "u"}, Call: ms(3000), Return: linearizability.Infinity}
	unknown.Output.Unknown = true
	return append(h, unknown)
}

// span is a step of kind held from in to heal, healthy again at healthy
// (never if negative), in milliseconds after t0.
func span(t0 time.Time, kind nemesis.Fault, size int, in, heal, healthy int) nemesis.Span {
	at := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	sp := nemesis.Span{Step: nemesis.Step{Fault: kind}, Nodes: []int{0}, Size: size, Injected: at(in), Healing: at(heal)}
	if healthy >= 0 {
		sp.Healthy = at(healthy)
	}
	return sp
}

// TestHealthyWriteGapCatchesBreach: over one synthetic history with no
// acknowledged write from 1 s to 6 s, the window counts in full while the
// faults in place leave a majority healthy (and is a breach of a 3 s
// target naming them), is cut where a fault takes a majority down until
// the cluster is healthy again, and is no breach once what is left is
// short.
func TestHealthyWriteGapCatchesBreach(t *testing.T) {
	t0 := time.Now()
	const target = 3 * time.Second
	s := func(n int) int64 { return int64(time.Duration(n) * time.Millisecond) }
	for _, tc := range []struct {
		name   string
		spans  []nemesis.Span
		want   Window
		breach []string // what the breach must name; none: no breach
	}{
		{"no faults", nil, Window{s(1000), s(6000)}, []string{"5s", "from 1s to 6s", "faults in place: none"}},
		{"a minority fault counts", []nemesis.Span{span(t0, nemesis.Kill, 3, 1050, 2000, 2500)},
			Window{s(1000), s(6000)}, []string{"kill on [0] (injected at 1.05s, healed at 2s, healthy at 2.5s)"}},
		{"partition-leader and a bridge count", []nemesis.Span{span(t0, nemesis.CutLeaderFromPeers, 3, 1050, 2000, 2100), span(t0, nemesis.Bridge, 3, 2200, 2500, 2600)},
			Window{s(1000), s(6000)}, []string{"partition-leader", "bridge"}},
		{"a majority down, then healthy: only the rest counts", []nemesis.Span{span(t0, nemesis.ZkDownMajority, 3, 1050, 4000, 5500)},
			Window{s(5500), s(6000)}, nil},
		{"a majority down, then a minority fault", []nemesis.Span{span(t0, nemesis.ZkDownMajority, 3, 1050, 1500, 2000), span(t0, nemesis.Kill, 3, 2500, 3500, 4000)},
			Window{s(2000), s(6000)}, []string{"4s", "from 2s to 6s", "kill on [0]"}},
		{"a hand-over of 3 nodes takes a majority, of 5 does not", []nemesis.Span{span(t0, nemesis.HandOver, 3, 1050, 3000, 5000), span(t0, nemesis.HandOver, 5, 5100, 5200, 5300)},
			Window{s(5000), s(6000)}, nil},
		{"a crash of all never healed: the rest is left out", []nemesis.Span{span(t0, nemesis.CrashAll, 3, 2000, 2500, -1)},
			Window{s(1000), s(2000)}, nil},
	} {
		got := HealthyWriteGap(history(), tc.spans, t0)
		if got != tc.want {
			t.Errorf("%s: window %v, want %v", tc.name, got, tc.want)
		}
		msg := gapBreach(got, target, tc.spans, t0)
		if (msg != "") != (len(tc.breach) > 0) {
			t.Errorf("%s: breach %q, want one: %v", tc.name, msg, len(tc.breach) > 0)
		}
		for _, w := range tc.breach {
			if !strings.Contains(msg, w) {
				t.Errorf("%s: breach %q does not say %q", tc.name, msg, w)
			}
		}
	}
}

// TestStepGaps: each step is charged the longest window that overlaps it,
// from its injection until the cluster was healthy again.
func TestStepGaps(t *testing.T) {
	t0 := time.Now()
	spans := []nemesis.Span{span(t0, nemesis.PauseLeader, 3, 1050, 2000, 2500), span(t0, nemesis.Kill, 3, 6500, 7000, 7200)}
	gaps := stepGaps(WritelessWindows(history(), unhealthy(spans, t0)), spans, t0)
	if gaps[0] != 5*time.Second || gaps[1] != 100*time.Millisecond {
		t.Fatalf("step gaps %v, want 5s and 100ms", gaps)
	}
	g := gapsByKind{}
	g.add(spans, gaps)
	if got, want := g.String(), "kill n=1 min 100ms median 100ms max 100ms; pause-leader n=1 min 5s median 5s max 5s"; got != want {
		t.Fatalf("by kind %q, want %q", got, want)
	}
}

// TestWriteGapTarget: one session TTL plus one lease plus 1 s, from the
// settings: 5 s with the defaults, 3 s with the suite's.
func TestWriteGapTarget(t *testing.T) {
	cfg := node.DefaultConfig()
	if got := writeGapTarget(cfg); got != 5*time.Second {
		t.Errorf("with the defaults: %v, want 5s", got)
	}
	nodeConfig(&run{})(&cfg)
	if got := writeGapTarget(cfg); got != 3*time.Second {
		t.Errorf("with the suite's settings: %v, want 3s", got)
	}
	nodeConfig(&run{lease: 2 * time.Second})(&cfg)
	if got := writeGapTarget(cfg); got != 5*time.Second {
		t.Errorf("with 2 s sessions and leases: %v, want 5s", got)
	}
}

// TestLongestWithoutWrite: the longest stretch without an acknowledged
// write, reads and writes of unknown outcome not counting.
func TestLongestWithoutWrite(t *testing.T) {
	put := func(call, ret int64) linearizability.Op {
		return linearizability.Op{Input: linearizability.Input{Kind: linearizability.Put, Key: "k", Value: "v"}, Call: call, Return: ret}
	}
	get := func(call, ret int64) linearizability.Op {
		return linearizability.Op{Input: linearizability.Input{Kind: linearizability.Get, Key: "k"}, Call: call, Return: ret}
	}
	unknown := put(40, linearizability.Infinity)
	unknown.Output.Unknown = true
	for _, tc := range []struct {
		name string
		h    []linearizability.Op
		gap  time.Duration
		from int64
	}{
		{"empty", nil, 0, 0},
		{"from the first call to the first write", []linearizability.Op{put(0, 30), put(10, 35)}, 30, 0},
		{"between writes", []linearizability.Op{put(0, 10), put(5, 20), put(15, 90), get(0, 100)}, 70, 20},
		{"after the last write, reads and unknown writes do not count", []linearizability.Op{put(0, 10), unknown, get(20, 200)}, 190, 10},
	} {
		gap, from := LongestWithoutWrite(tc.h)
		if gap != tc.gap || from != tc.from {
			t.Errorf("%s: %v from %d, want %v from %d", tc.name, gap, from, tc.gap, tc.from)
		}
	}
}

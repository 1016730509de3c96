package robustness

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/kvstore/kvstore/robustness/linearizability"
	"github.com/kvstore/kvstore/robustness/nemesis"
)

// Window is a stretch of a history's clock (nanoseconds since the
// recorder's start), From to To, in which no write was acknowledged.
type Window struct{ From, To int64 }

// Len is the window's length.
func (w Window) Len() time.Duration { return time.Duration(w.To - w.From) }

func (w Window) String() string {
	return fmt.Sprintf("%v from %v to %v", w.Len().Round(time.Millisecond),
		time.Duration(w.From).Round(time.Millisecond), time.Duration(w.To).Round(time.Millisecond))
}

// overlaps reports whether w and [from, to] share more than a point.
func (w Window) overlaps(from, to int64) bool { return w.From < to && from < w.To }

// WritelessWindows lists the stretches of h, from its first call to its
// last return, in which no write was acknowledged (a write that returned
// without an unknown outcome), leaving out the excluded stretches: a
// window ends where an excluded stretch begins, and the next begins where
// it ends. Each window runs from an acknowledgement (or the start, or the
// end of an excluded stretch) to the next one; empty windows are left out.
// The windows are in order and do not overlap.
func WritelessWindows(h []linearizability.Op, excluded []Window) []Window {
	if len(h) == 0 {
		return nil
	}
	start, end := h[0].Call, int64(0)
	var acks []int64
	for _, op := range h {
		start = min(start, op.Call)
		if !op.Output.Unknown {
			end = max(end, op.Return)
			if op.Input.Kind.IsWrite() {
				acks = append(acks, op.Return)
			}
		}
	}
	slices.Sort(acks)
	// The segments of [start, end] outside every excluded stretch.
	ex := slices.Clone(excluded)
	slices.SortFunc(ex, func(a, b Window) int { return cmp.Compare(a.From, b.From) })
	var segs []Window
	at := start
	for _, e := range ex {
		if e.From > at {
			segs = append(segs, Window{at, min(e.From, end)})
		}
		at = max(at, e.To)
	}
	if at < end {
		segs = append(segs, Window{at, end})
	}
	var out []Window
	i := 0
	for _, s := range segs {
		prev := s.From
		for ; i < len(acks) && acks[i] <= s.To; i++ {
			if acks[i] > prev {
				out = append(out, Window{prev, acks[i]})
				prev = acks[i]
			}
		}
		if s.To > prev {
			out = append(out, Window{prev, s.To})
		}
	}
	return out
}

// longest is the longest of ws (the first of equals; zero if none).
func longest(ws []Window) Window {
	var best Window
	for _, w := range ws {
		if w.Len() > best.Len() {
			best = w
		}
	}
	return best
}

// LongestWithoutWrite returns the longest stretch of h, from its first call
// to its last return, in which no write was acknowledged, and where that
// stretch starts (nanoseconds on the history's clock). It is what a
// schedule cost in availability, faults that took a majority down
// included.
func LongestWithoutWrite(h []linearizability.Op) (gap time.Duration, from int64) {
	w := longest(WritelessWindows(h, nil))
	return w.Len(), w.From
}

// at is t on the clock of a history that started at t0.
func at(t, t0 time.Time) int64 { return int64(t.Sub(t0)) }

// unhealthy lists, on the clock of a history that started at t0, the
// stretches in which a step of spans was exempt from the liveness target
// (nemesis.LivenessExempt: most leave no healthy majority): from its
// injection until the cluster was healthy again after its heal, or for
// ever if it never was.
func unhealthy(spans []nemesis.Span, t0 time.Time) []Window {
	var out []Window
	for _, sp := range spans {
		if !nemesis.LivenessExempt(sp.Step, sp.Size) {
			continue
		}
		to := linearizability.Infinity
		if !sp.Healthy.IsZero() {
			to = at(sp.Healthy, t0)
		}
		out = append(out, Window{at(sp.Injected, t0), to})
	}
	return out
}

// HealthyWriteGap returns the longest window of h without an acknowledged
// write while a majority of voters was healthy: the stretches in which a
// step of spans was exempt from the liveness target (it left no healthy
// majority, or was a rolling crash), and the heal after it until the
// cluster was healthy again, are left out. t0 is the history's start
// (linearizability.Recorder.Start).
func HealthyWriteGap(h []linearizability.Op, spans []nemesis.Span, t0 time.Time) Window {
	return longest(WritelessWindows(h, unhealthy(spans, t0)))
}

// faultsDuring describes the steps of spans in place (held or healing)
// during w: each with its nodes and its times on the history's clock.
func faultsDuring(w Window, spans []nemesis.Span, t0 time.Time) string {
	var parts []string
	for _, sp := range spans {
		end := linearizability.Infinity
		if !sp.Healthy.IsZero() {
			end = at(sp.Healthy, t0)
		}
		if !w.overlaps(at(sp.Injected, t0), end) {
			continue
		}
		healthy := "never healthy again"
		if end != linearizability.Infinity {
			healthy = fmt.Sprintf("healthy at %v", time.Duration(end).Round(time.Millisecond))
		}
		parts = append(parts, fmt.Sprintf("%s on %v (injected at %v, healed at %v, %s)", sp.Step.Fault.Name(), sp.Nodes,
			time.Duration(at(sp.Injected, t0)).Round(time.Millisecond), time.Duration(at(sp.Healing, t0)).Round(time.Millisecond), healthy))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, "; ")
}

// gapBreach says, if w is longer than target, how: the window, its start
// and end, and the faults in place during it; "" if it is not.
func gapBreach(w Window, target time.Duration, spans []nemesis.Span, t0 time.Time) string {
	if w.Len() <= target {
		return ""
	}
	return fmt.Sprintf("no write acknowledged for %v while a majority was healthy (target %v): from %v to %v on the history's clock; faults in place: %s",
		w.Len().Round(time.Millisecond), target, time.Duration(w.From).Round(time.Millisecond), time.Duration(w.To).Round(time.Millisecond), faultsDuring(w, spans, t0))
}

// stepGaps gives, for each of spans, the longest of windows that overlaps
// it (from its injection until the cluster was healthy again, or the end
// of the history): what that step cost in availability.
func stepGaps(windows []Window, spans []nemesis.Span, t0 time.Time) []time.Duration {
	out := make([]time.Duration, len(spans))
	for i, sp := range spans {
		end := linearizability.Infinity
		if !sp.Healthy.IsZero() {
			end = at(sp.Healthy, t0)
		}
		for _, w := range windows {
			if w.overlaps(at(sp.Injected, t0), end) {
				out[i] = max(out[i], w.Len())
			}
		}
	}
	return out
}

// gapsByKind collects the step gaps (stepGaps) of many runs by fault name.
type gapsByKind map[string][]time.Duration

func (g gapsByKind) add(spans []nemesis.Span, gaps []time.Duration) {
	for i, sp := range spans {
		k := sp.Step.Fault.Name()
		g[k] = append(g[k], gaps[i])
	}
}

func (g gapsByKind) merge(o gapsByKind) {
	for k, ds := range o {
		g[k] = append(g[k], ds...)
	}
}

// String gives each kind's count, minimum, median and maximum, in kind
// order.
func (g gapsByKind) String() string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(g)) {
		ds := slices.Sorted(slices.Values(g[k]))
		r := func(d time.Duration) time.Duration { return d.Round(10 * time.Millisecond) }
		parts = append(parts, fmt.Sprintf("%s n=%d min %v median %v max %v", k, len(ds), r(ds[0]), r(ds[len(ds)/2]), r(ds[len(ds)-1])))
	}
	return strings.Join(parts, "; ")
}

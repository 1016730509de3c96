package linearizability

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// Result is the outcome of [Check]. At most one of Ok, Illegal and Unknown
// is true:
//
//   - Ok: the history is linearizable (proven).
//   - Illegal: the history is not linearizable; IllegalKeys names the keys
//     whose sub-history is not, and Visualization the HTML file showing why.
//   - Unknown: the checker ran out of time or ctx was cancelled before it
//     could decide. This is NOT a pass: Ok is false.
//
// None is true when the history is malformed (Err says how).
type Result struct {
	// Ok is true iff the history was proven linearizable.
	Ok bool
	// Illegal is true iff the history was proven not linearizable.
	Illegal bool
	// Unknown is true if the checker did not finish (timeout or ctx); the
	// history is then neither proven nor refuted.
	Unknown bool
	// Ops is the number of operations that were checked: the history less
	// reads with an unknown outcome and unknown-outcome puts that no read
	// observed (see Pruned).
	Ops int
	// Pruned is the number of operations of the history that were left out
	// because they cannot affect the verdict: reads with an unknown outcome
	// and unknown-outcome puts whose value no read of their key returned.
	Pruned int
	// Keys is the number of distinct keys (partitions) checked.
	Keys int
	// IllegalKeys lists, sorted, the keys whose operations could not be
	// linearized, when the history is illegal.
	IllegalKeys []string
	// Visualization is the path of porcupine's HTML visualisation, written
	// when the history is illegal; empty otherwise.
	Visualization string
	// Duration is how long the check took.
	Duration time.Duration
	// Err reports a malformed history, a cancelled ctx, or a failure to
	// write the visualisation (Illegal still stands in that case).
	Err error
}

// String summarises the result for a test failure message.
func (r Result) String() string {
	var b strings.Builder
	switch {
	case r.Ok:
		fmt.Fprintf(&b, "linearizable: %d ops on %d keys checked in %v", r.Ops, r.Keys, r.Duration)
	case r.Unknown:
		fmt.Fprintf(&b, "linearizability UNKNOWN (not a pass): checker did not finish %d ops on %d keys within %v", r.Ops, r.Keys, r.Duration)
	case !r.Illegal:
		fmt.Fprintf(&b, "linearizability not checked")
	default:
		fmt.Fprintf(&b, "NOT linearizable: %d ops on %d keys; keys %q cannot be linearized", r.Ops, r.Keys, r.IllegalKeys)
		if r.Visualization != "" {
			fmt.Fprintf(&b, "; visualization: %s", r.Visualization)
		}
	}
	if r.Err != nil {
		fmt.Fprintf(&b, " (%v)", r.Err)
	}
	return b.String()
}

// CheckOption configures [Check].
type CheckOption func(*checkConfig)

type checkConfig struct {
	dir     string
	noPrune bool
	noViz   bool
}

// VisualizationDir sets the directory in which Check writes the HTML
// visualisation of an illegal history (default: os.TempDir()). The file is
// named linearizability-*.html; the directory must exist.
func VisualizationDir(dir string) CheckOption {
	return func(c *checkConfig) { c.dir = dir }
}

// withoutPruning keeps unobserved unknown-outcome puts (tests compare both).
func withoutPruning() CheckOption {
	return func(c *checkConfig) { c.noPrune = true }
}

// withoutVisualization skips the HTML file (randomized tests).
func withoutVisualization() CheckOption {
	return func(c *checkConfig) { c.noViz = true }
}

// Check decides whether history is linearizable with respect to [Model],
// using porcupine.CheckOperationsVerbose. Operations with Output.Unknown get
// the return time [Infinity]; reads with an unknown outcome are ignored, and
// so are unknown-outcome puts that no read observed (see the package doc).
//
// The search stops after timeout (no limit if timeout <= 0) or at ctx's
// deadline, whichever is first, giving Result.Unknown. If ctx is cancelled
// (rather than reaching its deadline) Check returns Unknown at once, but the
// search goes on in the background until timeout; pass a timeout.
//
// If the history is illegal, porcupine's HTML visualisation (the per-key
// partial linearizations and the operation that could not be linearized) is
// written to a new file in the [VisualizationDir] and its path returned in
// Result.Visualization.
func Check(ctx context.Context, history []Op, timeout time.Duration, opts ...CheckOption) Result {
	var cfg checkConfig
	for _, o := range opts {
		o(&cfg)
	}
	begin := time.Now()
	ops, pruned, err := prepare(history, !cfg.noPrune)
	res := Result{Ops: len(ops), Pruned: pruned}
	if err != nil {
		res.Err = err
		return res
	}
	model := Model()
	parts := partitionOps(ops)
	res.Keys = len(parts)

	if err := ctx.Err(); err != nil {
		res.Unknown, res.Err = true, err
		return res
	}
	if dl, ok := ctx.Deadline(); ok {
		rem := time.Until(dl)
		if rem <= 0 {
			res.Unknown, res.Err = true, context.DeadlineExceeded
			return res
		}
		if timeout <= 0 || rem < timeout {
			timeout = rem
		}
	}

	type outcome struct {
		r    porcupine.CheckResult
		info porcupine.LinearizationInfo
	}
	done := make(chan outcome, 1)
	go func() {
		r, info := porcupine.CheckOperationsVerbose(model, ops, timeout)
		done <- outcome{r, info}
	}()
	var o outcome
	select {
	case o = <-done:
	case <-ctx.Done():
		if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			res.Unknown, res.Err = true, ctx.Err()
			res.Duration = time.Since(begin)
			return res
		}
		// The search's own timeout is no later than the deadline: its
		// answer is imminent, and may even be a verdict.
		o = <-done
	}
	res.Duration = time.Since(begin)

	switch o.r {
	case porcupine.Ok:
		res.Ok = true
	case porcupine.Unknown:
		res.Unknown = true
	case porcupine.Illegal:
		res.Illegal = true
		res.IllegalKeys = illegalKeys(parts, o.info)
		if !cfg.noViz {
			path, err := writeVisualization(cfg.dir, model, o.info)
			res.Visualization = path
			if err != nil {
				res.Err = err
			}
		}
	default:
		res.Err = fmt.Errorf("linearizability: unexpected porcupine result %q", o.r)
	}
	return res
}

// prepare validates history and converts it to porcupine operations, giving
// unknown-outcome operations the return time Infinity and leaving out what
// cannot affect the verdict (see Result.Pruned).
func prepare(history []Op, prune bool) ([]porcupine.Operation, int, error) {
	if err := Validate(history); err != nil {
		return nil, 0, err
	}
	// observed[key][value]: some read of key returned value.
	observed := make(map[string]map[string]bool)
	for _, op := range history {
		if op.Input.Kind == Get && !op.Output.Unknown && op.Output.Found {
			m := observed[op.Input.Key]
			if m == nil {
				m = make(map[string]bool)
				observed[op.Input.Key] = m
			}
			m[op.Output.Value] = true
		}
	}
	ops := make([]porcupine.Operation, 0, len(history))
	pruned := 0
	for _, op := range history {
		in, out, ret := op.Input, op.Output, op.Return
		if out.Unknown {
			if in.Kind == Get || (prune && in.Kind == Put && !observed[in.Key][in.Value]) {
				pruned++
				continue
			}
			ret = Infinity
		}
		switch {
		case in.Kind != Get:
			out = Output{Unknown: out.Unknown, Err: out.Err}
		case !out.Found:
			out.Value = ""
		}
		if in.Kind != Put {
			in.Value = ""
		}
		var meta interface{}
		if out.Err != "" {
			meta = out.Err
		}
		ops = append(ops, porcupine.Operation{
			ClientId: op.ClientID,
			Input:    in,
			Call:     op.Call,
			Output:   out,
			Return:   ret,
			Metadata: meta,
		})
	}
	return ops, pruned, nil
}

// illegalKeys returns the keys of the partitions that porcupine could not
// linearize completely: their longest partial linearization is shorter than
// the partition. parts must be in the order porcupine saw them (Partition is
// deterministic).
func illegalKeys(parts [][]porcupine.Operation, info porcupine.LinearizationInfo) []string {
	partials := info.PartialLinearizations()
	var keys []string
	for i, part := range parts {
		longest := 0
		if i < len(partials) {
			for _, l := range partials[i] {
				longest = max(longest, len(l))
			}
		}
		if longest < len(part) {
			keys = append(keys, part[0].Input.(Input).Key)
		}
	}
	return keys
}

func writeVisualization(dir string, model porcupine.Model, info porcupine.LinearizationInfo) (string, error) {
	f, err := os.CreateTemp(dir, "linearizability-*.html")
	if err != nil {
		return "", fmt.Errorf("linearizability: writing visualization: %w", err)
	}
	path := f.Name()
	err = porcupine.Visualize(model, info, f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return path, fmt.Errorf("linearizability: writing visualization %s: %w", path, err)
	}
	return path, nil
}

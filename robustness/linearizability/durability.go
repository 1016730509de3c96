package linearizability

import (
	"fmt"
	"strings"
)

// FinalValue is the state of one key read from a node after the run: Found
// tells whether the key exists, Value is its value if it does.
type FinalValue struct {
	Value string `json:"value,omitempty"`
	Found bool   `json:"found,omitempty"`
}

// String returns the quoted value, or "(absent)".
func (f FinalValue) String() string {
	if !f.Found {
		return "(absent)"
	}
	return fmt.Sprintf("%q", f.Value)
}

// Violation is one key whose final state the history does not explain.
type Violation struct {
	// Key is the offending key.
	Key string
	// Final is the state that was read.
	Final FinalValue
	// Reason says what is wrong, e.g. a value nobody wrote or a lost write.
	Reason string
	// Allowed lists the final states the history allows, described.
	Allowed []string
}

// DurabilityError is returned by [Durability]; it lists every offending key,
// in key order.
type DurabilityError struct {
	Violations []Violation
}

// Error lists every violation, one per line.
func (e *DurabilityError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "linearizability: final state not explained by the history (%d keys):", len(e.Violations))
	for _, v := range e.Violations {
		fmt.Fprintf(&b, "\n  key %q: final %v: %s; allowed: %s", v.Key, v.Final, v.Reason, strings.Join(v.Allowed, " | "))
	}
	return b.String()
}

// Durability checks that the final state of a node, read after healing when
// no operation is running any more, is explained by the history. final maps
// each key to its final state; a key of the history that final does not
// contain is taken to be absent, so final must hold every key of the
// history (read them all, or scan the node). Call it once per node; that
// the nodes agree with each other is the caller's check.
//
// The rule, for every key k of the history or of final. Let the writes of k
// be its Put and Delete operations in the history: acknowledged ones and
// ones with an unknown outcome (definitely failed writes are not in the
// history). A write w is superseded if some acknowledged write a of k was
// invoked after w was acknowledged (w.Return < a.Call): w precedes a in
// every linearization, so w cannot be the last write. An unknown-outcome
// write is never superseded (it may take effect at any time after its call,
// or never). The candidates of k are the writes that are not superseded,
// plus the initial absence if k has no acknowledged write (every write may
// have failed). The final state of k must be the effect of some candidate:
// Put(v) gives present with value v, Delete and the initial absence give
// absent. In particular:
//
//   - a value nobody wrote to k is a violation;
//   - a lost acknowledged write is a violation: if the last acknowledged
//     write W of k finished before every other write of k (acknowledged or
//     unknown) started, W is the only candidate, so the final state must be
//     W's (its value, or absent for a Delete);
//   - an unknown-outcome write concurrent with or after W may or may not
//     show: both are accepted;
//   - a value overwritten by a later acknowledged write and resurrected is a
//     violation.
//
// Values are assumed unique per key, as the workload writes them; with
// repeated values the rule never reports a false violation but can miss a
// lost write whose value another candidate also wrote. Reads in the history
// are not used: [AppendFinalReads] with [Check] is stricter, as it also
// requires the final state to agree with what reads observed.
//
// The error, a *[DurabilityError], lists every offending key.
func Durability(history []Op, final map[string]FinalValue) error {
	if err := Validate(history); err != nil {
		return err
	}
	writes := make(map[string][]Op)
	keys := make(map[string]bool)
	for _, op := range history {
		keys[op.Input.Key] = true
		if op.Input.Kind.IsWrite() {
			if op.Output.Unknown {
				op.Return = Infinity
			}
			writes[op.Input.Key] = append(writes[op.Input.Key], op)
		}
	}
	for k := range final {
		keys[k] = true
	}
	var violations []Violation
	for _, k := range sortedKeys(keys) {
		fin := final[k]
		if !fin.Found {
			fin.Value = ""
		}
		if v, bad := checkKey(k, writes[k], fin); bad {
			violations = append(violations, v)
		}
	}
	if len(violations) > 0 {
		return &DurabilityError{Violations: violations}
	}
	return nil
}

// checkKey applies the rule of Durability to one key.
func checkKey(key string, ws []Op, fin FinalValue) (Violation, bool) {
	acked := false
	for _, w := range ws {
		if !w.Output.Unknown {
			acked = true
		}
	}
	superseded := func(w Op) bool {
		for _, a := range ws {
			if !a.Output.Unknown && w.Return < a.Call {
				return true
			}
		}
		return false
	}
	var allowed []string
	explained := false
	written, overwritten := false, false
	if !acked {
		allowed = append(allowed, "(absent): no acknowledged write")
		explained = !fin.Found
	}
	for _, w := range ws {
		effect := FinalValue{}
		if w.Input.Kind == Put {
			effect = FinalValue{Value: w.Input.Value, Found: true}
		}
		if effect == fin {
			written = true
		}
		if superseded(w) {
			if effect == fin {
				overwritten = true
			}
			continue
		}
		if effect == fin {
			explained = true
		}
		outcome := "acknowledged"
		if w.Output.Unknown {
			outcome = "outcome unknown"
		}
		allowed = append(allowed, fmt.Sprintf("%v: %s by client %d (%s, called at %d)",
			effect, w.Input.Kind, w.ClientID, outcome, w.Call))
	}
	if explained {
		return Violation{}, false
	}
	var reason string
	switch {
	case fin.Found && !written:
		reason = "value never written to this key"
	case overwritten:
		reason = "state overwritten by a later acknowledged write came back (lost write)"
	case len(ws) > 0:
		reason = "lost acknowledged write"
	default:
		reason = "no write of this key in the history"
	}
	return Violation{Key: key, Final: fin, Reason: reason, Allowed: allowed}, true
}

// AppendFinalReads returns a copy of history followed by one Get per key
// (every key of history or final; a key missing from final reads absent),
// issued by clientID after every operation of history returned, whose
// results are final. Checking the result with [Check] verifies that the final
// state is linearizable after the history: stricter than [Durability], since
// the final reads must also agree with what the history's reads observed
// (unknown-outcome writes may still be placed before or after them).
// clientID should be one no workload client uses, so the visualisation
// shows the final reads on their own row.
func AppendFinalReads(history []Op, final map[string]FinalValue, clientID int) []Op {
	var t int64
	keys := make(map[string]bool)
	for _, op := range history {
		keys[op.Input.Key] = true
		t = max(t, op.Call)
		if !op.Output.Unknown && op.Return != Infinity {
			t = max(t, op.Return)
		}
	}
	for k := range final {
		keys[k] = true
	}
	t++
	out := make([]Op, len(history), len(history)+len(keys))
	copy(out, history)
	for _, k := range sortedKeys(keys) {
		f := final[k]
		o := Output{Found: f.Found}
		if f.Found {
			o.Value = f.Value
		}
		out = append(out, Op{ClientID: clientID, Input: Input{Kind: Get, Key: k}, Output: o, Call: t, Return: t})
	}
	return out
}

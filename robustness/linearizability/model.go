package linearizability

import (
	"fmt"
	"hash/fnv"
	"html"
	"math"
	"sort"

	"github.com/anishathalye/porcupine"
)

// OpKind is the kind of a client operation. The zero value is invalid, so
// that an operation whose kind was forgotten (or misspelt in a hand-written
// JSON history) is rejected rather than read as a Get.
type OpKind uint8

const (
	// Get reads a key: Output.Found tells whether it exists and
	// Output.Value holds its value.
	Get OpKind = iota + 1
	// Put sets a key to Input.Value.
	Put
	// Delete removes a key (deleting an absent key is not an error).
	Delete
)

// String returns "get", "put" or "delete" (the JSON spelling).
func (k OpKind) String() string {
	switch k {
	case Get:
		return "get"
	case Put:
		return "put"
	case Delete:
		return "delete"
	}
	return fmt.Sprintf("OpKind(%d)", uint8(k))
}

// Valid reports whether k is Get, Put or Delete.
func (k OpKind) Valid() bool { return k >= Get && k <= Delete }

// IsWrite reports whether k is Put or Delete.
func (k OpKind) IsWrite() bool { return k == Put || k == Delete }

// MarshalText encodes k as "get", "put" or "delete".
func (k OpKind) MarshalText() ([]byte, error) {
	if !k.Valid() {
		return nil, fmt.Errorf("linearizability: invalid operation kind %d", uint8(k))
	}
	return []byte(k.String()), nil
}

// UnmarshalText decodes "get", "put" or "delete".
func (k *OpKind) UnmarshalText(b []byte) error {
	switch string(b) {
	case "get":
		*k = Get
	case "put":
		*k = Put
	case "delete":
		*k = Delete
	default:
		return fmt.Errorf("linearizability: unknown operation kind %q (want get, put or delete)", b)
	}
	return nil
}

// Input is what a client asked for. Value is used by Put only.
type Input struct {
	Kind  OpKind `json:"kind"`
	Key   string `json:"key"`
	Value string `json:"value,omitempty"`
}

// Output is what a client was told.
type Output struct {
	// Value is the value a Get returned; meaningful only if Found.
	Value string `json:"value,omitempty"`
	// Found tells whether a Get found the key. Ignored for Put and Delete.
	Found bool `json:"found,omitempty"`
	// Unknown marks an operation whose outcome is unknown (time-out,
	// connection lost mid-write): a write may or may not have taken effect,
	// now or later. Its return time is treated as [Infinity].
	Unknown bool `json:"unknown,omitempty"`
	// Err is the error text the client saw, if any. Informational only: it
	// is shown in the visualisation but never affects the check.
	Err string `json:"err,omitempty"`
}

// Infinity is the return time of an operation whose outcome is unknown: it
// may take effect at any time after its call. It is porcupine's (and etcd's)
// convention of returning such operations "at infinity".
const Infinity int64 = math.MaxInt64

// state is the state of one partition (one key): a register that may be
// absent. It is comparable, so porcupine's default == equality applies.
type state struct {
	value   string
	present bool
}

// Model returns the sequential specification of the store as a porcupine
// model. It is partitioned by key (Partition and PartitionEvent), so a state
// is that of a single key: (value, present), initially absent. Step accepts:
//
//   - a Get iff its output matches the state (Found == present and, if
//     found, Value == value); the state is unchanged;
//   - a Put always, setting the state to (Input.Value, present);
//   - a Delete always, setting the state to absent.
//
// Inputs are [Input] values and outputs [Output] values (not pointers).
//
// A write with Output.Unknown set is applied like any other: the "did not
// take effect" branch is covered by giving it the return time [Infinity]
// (which [Check] does), so it can be linearized after everything else. A Get
// with Output.Unknown set is accepted without constraint (it carries no
// information; [Check] drops such reads anyway).
//
// DescribeOperation, DescribeState and DescribeOperationMetadata (the
// client's error text) feed porcupine's HTML visualisation.
func Model() porcupine.Model {
	return porcupine.Model{
		Partition:      partitionOps,
		PartitionEvent: partitionEvents,
		Init:           func() interface{} { return state{} },
		Step: func(s, in, out interface{}) (bool, interface{}) {
			return step(s.(state), in.(Input), out.(Output))
		},
		Hash: func(s interface{}) uint64 {
			st := s.(state)
			h := fnv.New64a()
			h.Write([]byte(st.value))
			if st.present {
				h.Write([]byte{1})
			}
			return h.Sum64()
		},
		DescribeOperation: func(in, out interface{}) string {
			return describeOp(in.(Input), out.(Output))
		},
		DescribeState: func(s interface{}) string {
			// The visualisation inserts state descriptions as HTML.
			return html.EscapeString(describeState(s.(state)))
		},
		DescribeOperationMetadata: func(m interface{}) string {
			if m == nil {
				return ""
			}
			// Inserted as HTML too.
			return html.EscapeString(fmt.Sprint(m))
		},
	}
}

func step(s state, in Input, out Output) (bool, state) {
	switch in.Kind {
	case Get:
		if out.Unknown {
			return true, s
		}
		if out.Found != s.present {
			return false, s
		}
		return !out.Found || out.Value == s.value, s
	case Put:
		return true, state{value: in.Value, present: true}
	case Delete:
		return true, state{}
	}
	panic(fmt.Sprintf("linearizability: invalid operation kind %d", uint8(in.Kind)))
}

func describeState(s state) string {
	if !s.present {
		return "(absent)"
	}
	return fmt.Sprintf("%q", s.value)
}

func describeOp(in Input, out Output) string {
	suffix := ""
	if out.Unknown {
		suffix = " -> ? (outcome unknown)"
	}
	switch in.Kind {
	case Get:
		if out.Unknown {
			return fmt.Sprintf("get(%q)%s", in.Key, suffix)
		}
		if !out.Found {
			return fmt.Sprintf("get(%q) -> (absent)", in.Key)
		}
		return fmt.Sprintf("get(%q) -> %q", in.Key, out.Value)
	case Put:
		return fmt.Sprintf("put(%q, %q)%s", in.Key, in.Value, suffix)
	case Delete:
		return fmt.Sprintf("delete(%q)%s", in.Key, suffix)
	}
	return fmt.Sprintf("%v -> %v", in, out)
}

// partitionOps groups operations by key, keys in sorted order (Check relies
// on the order being deterministic to name the keys that failed).
func partitionOps(history []porcupine.Operation) [][]porcupine.Operation {
	byKey := make(map[string][]porcupine.Operation)
	for _, op := range history {
		k := op.Input.(Input).Key
		byKey[k] = append(byKey[k], op)
	}
	keys := sortedKeys(byKey)
	parts := make([][]porcupine.Operation, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, byKey[k])
	}
	return parts
}

// partitionEvents groups events by key. A return event carries an Output,
// which has no key, so it is placed by the key of its call (same Id).
func partitionEvents(history []porcupine.Event) [][]porcupine.Event {
	keyOf := make(map[int]string)
	for _, ev := range history {
		if ev.Kind == porcupine.CallEvent {
			keyOf[ev.Id] = ev.Value.(Input).Key
		}
	}
	byKey := make(map[string][]porcupine.Event)
	for _, ev := range history {
		k := keyOf[ev.Id]
		byKey[k] = append(byKey[k], ev)
	}
	keys := sortedKeys(byKey)
	parts := make([][]porcupine.Event, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, byKey[k])
	}
	return parts
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

package linearizability

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
)

// Op is one completed (or abandoned, outcome-unknown) client operation of a
// history. Times are nanoseconds on a monotonic clock shared by all clients
// (the [Recorder]'s), and the interval [Call, Return] is closed: operations
// whose intervals touch are concurrent.
type Op struct {
	// ClientID identifies the client (one row of the visualisation).
	// Zero-based. A client should have at most one operation in flight.
	ClientID int `json:"client"`
	// Input is the request.
	Input Input `json:"input"`
	// Output is the response; Output.Unknown marks an unknown outcome.
	Output Output `json:"output"`
	// Call is when the request was issued (before it was sent).
	Call int64 `json:"call"`
	// Return is when the response was received (after it arrived). It is
	// [Infinity] for an operation with an unknown outcome; [Check] treats
	// it as Infinity whenever Output.Unknown is set, so hand-written
	// histories may leave it out for such operations.
	Return int64 `json:"return,omitempty"`
}

// historyVersion is the version of the JSON history format.
const historyVersion = 1

// historyFile is the JSON layout of a saved history:
//
//	{"version": 1, "comment": "...", "ops": [{"client": 0, "input":
//	{"kind": "put", "key": "x", "value": "1"}, "output": {}, "call": 0,
//	"return": 10}, ...]}
type historyFile struct {
	Version int    `json:"version"`
	Comment string `json:"comment,omitempty"`
	Ops     []Op   `json:"ops"`
}

// SaveHistory writes ops to path as indented JSON, one history per file, so
// that a failing history can be kept as an artifact and replayed with
// [LoadHistory] and [Check]. It fails if an operation is malformed (see
// [Validate]).
func SaveHistory(path string, ops []Op) error {
	if err := Validate(ops); err != nil {
		return err
	}
	if ops == nil {
		ops = []Op{}
	}
	b, err := json.MarshalIndent(historyFile{Version: historyVersion, Ops: ops}, "", "  ")
	if err != nil {
		return fmt.Errorf("linearizability: encoding history: %w", err)
	}
	b = append(b, '\n')
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("linearizability: saving history: %w", err)
	}
	return nil
}

// LoadHistory reads a history written by [SaveHistory] (or by hand: the
// optional "comment" field may describe it). Unknown fields, an unsupported
// version and malformed operations (see [Validate]) are errors.
func LoadHistory(path string) ([]Op, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("linearizability: loading history: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var f historyFile
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("linearizability: decoding history %s: %w", path, err)
	}
	if f.Version != historyVersion {
		return nil, fmt.Errorf("linearizability: history %s: version %d, want %d", path, f.Version, historyVersion)
	}
	if err := Validate(f.Ops); err != nil {
		return nil, fmt.Errorf("linearizability: history %s: %w", path, err)
	}
	return f.Ops, nil
}

// Validate reports every malformed operation of a history: an invalid kind,
// a negative client id, or a return time before the call time of an
// operation whose outcome is known.
func Validate(ops []Op) error {
	var errs []error
	for i, op := range ops {
		if !op.Input.Kind.Valid() {
			errs = append(errs, fmt.Errorf("op %d: invalid kind %d", i, uint8(op.Input.Kind)))
		}
		if op.ClientID < 0 {
			errs = append(errs, fmt.Errorf("op %d: negative client id %d", i, op.ClientID))
		}
		if !op.Output.Unknown && op.Return < op.Call {
			errs = append(errs, fmt.Errorf("op %d (%s): returns at %d before its call at %d",
				i, describeOp(op.Input, op.Output), op.Return, op.Call))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("linearizability: malformed history: %w", errors.Join(errs...))
	}
	return nil
}

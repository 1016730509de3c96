package linearizability

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/anishathalye/porcupine"
)

func TestModelStep(t *testing.T) {
	m := Model()
	s := m.Init()
	steps := []struct {
		in  Input
		out Output
		ok  bool
	}{
		{Input{Kind: Get, Key: "x"}, Output{}, true},
		{Input{Kind: Get, Key: "x"}, Output{Value: "1", Found: true}, false},
		{Input{Kind: Put, Key: "x", Value: "1"}, Output{}, true},
		{Input{Kind: Get, Key: "x"}, Output{}, false},
		{Input{Kind: Get, Key: "x"}, Output{Value: "2", Found: true}, false},
		{Input{Kind: Get, Key: "x"}, Output{Value: "1", Found: true}, true},
		{Input{Kind: Put, Key: "x", Value: "2"}, Output{Unknown: true}, true},
		{Input{Kind: Get, Key: "x"}, Output{Value: "2", Found: true}, true},
		{Input{Kind: Get, Key: "x"}, Output{Unknown: true}, true},
		{Input{Kind: Delete, Key: "x"}, Output{}, true},
		{Input{Kind: Get, Key: "x"}, Output{}, true},
		{Input{Kind: Put, Key: "x", Value: ""}, Output{}, true}, // empty value is present
		{Input{Kind: Get, Key: "x"}, Output{}, false},
		{Input{Kind: Get, Key: "x"}, Output{Value: "", Found: true}, true},
	}
	for i, st := range steps {
		ok, next := m.Step(s, st.in, st.out)
		if ok != st.ok {
			t.Fatalf("step %d %s in state %s: ok=%v, want %v",
				i, m.DescribeOperation(st.in, st.out), m.DescribeState(s), ok, st.ok)
		}
		if ok {
			s = next
		}
	}
	if m.Hash(state{value: "a", present: true}) == m.Hash(state{value: "a"}) {
		t.Error("hash ignores presence")
	}
}

func TestDescribe(t *testing.T) {
	m := Model()
	for _, tc := range []struct {
		in   Input
		out  Output
		want string
	}{
		{Input{Kind: Get, Key: "x"}, Output{Value: "1", Found: true}, `get("x") -> "1"`},
		{Input{Kind: Get, Key: "x"}, Output{}, `get("x") -> (absent)`},
		{Input{Kind: Put, Key: "x", Value: "1"}, Output{}, `put("x", "1")`},
		{Input{Kind: Put, Key: "x", Value: "1"}, Output{Unknown: true}, `put("x", "1") -> ? (outcome unknown)`},
		{Input{Kind: Delete, Key: "x"}, Output{}, `delete("x")`},
	} {
		if got := m.DescribeOperation(tc.in, tc.out); got != tc.want {
			t.Errorf("DescribeOperation = %s, want %s", got, tc.want)
		}
	}
	if got := m.DescribeState(state{value: "<b>", present: true}); got != `&#34;&lt;b&gt;&#34;` {
		t.Errorf("DescribeState must escape HTML: %s", got)
	}
	if got := m.DescribeState(state{}); got != "(absent)" {
		t.Errorf("DescribeState(absent) = %s", got)
	}
}

// TestPartitionEvents checks the event form of the model, porcupine-style:
// the reappear pattern as events is illegal, a legal variant is not.
func TestPartitionEvents(t *testing.T) {
	ev := func(id int, kind porcupine.EventKind, v interface{}) porcupine.Event {
		return porcupine.Event{ClientId: id % 3, Id: id, Kind: kind, Value: v}
	}
	call, ret := porcupine.CallEvent, porcupine.ReturnEvent
	found := func(v string) Output { return Output{Value: v, Found: true} }
	history := []porcupine.Event{
		ev(0, call, Input{Kind: Put, Key: "x", Value: "1"}),
		ev(1, call, Input{Kind: Put, Key: "x", Value: "2"}),
		ev(5, call, Input{Kind: Put, Key: "y", Value: "9"}),
		ev(2, call, Input{Kind: Get, Key: "x"}),
		ev(2, ret, found("1")),
		ev(5, ret, Output{}),
		ev(3, call, Input{Kind: Get, Key: "x"}),
		ev(3, ret, found("2")),
		ev(4, call, Input{Kind: Get, Key: "x"}),
		ev(4, ret, found("1")),
		ev(0, ret, Output{}),
		ev(1, ret, Output{}),
	}
	m := Model()
	parts := m.PartitionEvent(history)
	if len(parts) != 2 || len(parts[0]) != 10 || len(parts[1]) != 2 {
		t.Fatalf("partitions: %v", parts)
	}
	if porcupine.CheckEvents(m, history) {
		t.Error("read 1, read 2, read 1 with one write of 1 accepted")
	}
	history[8], history[9] = ev(4, call, Input{Kind: Get, Key: "x"}), ev(4, ret, found("2"))
	if !porcupine.CheckEvents(m, history) {
		t.Error("read 1, read 2, read 2 rejected")
	}
}

func TestSaveLoadRoundTrip(t *testing.T) {
	ops := []Op{
		{ClientID: 0, Input: Input{Kind: Put, Key: "x", Value: "1"}, Call: 0, Return: 10},
		{ClientID: 1, Input: Input{Kind: Put, Key: "x", Value: "2"}, Output: Output{Unknown: true, Err: "timed out"}, Call: 5, Return: Infinity},
		{ClientID: 2, Input: Input{Kind: Get, Key: "x"}, Output: Output{Value: "1", Found: true}, Call: 11, Return: 20},
		{ClientID: 2, Input: Input{Kind: Delete, Key: "x"}, Call: 21, Return: 30},
		{ClientID: 2, Input: Input{Kind: Get, Key: "x"}, Call: 31, Return: 40},
	}
	path := filepath.Join(t.TempDir(), "h.json")
	if err := SaveHistory(path, ops); err != nil {
		t.Fatal(err)
	}
	got, err := LoadHistory(path)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, ops) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, ops)
	}
	b, _ := os.ReadFile(path)
	for _, want := range []string{`"kind": "put"`, `"kind": "delete"`, `"unknown": true`, `"version": 1`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("saved file lacks %s:\n%s", want, b)
		}
	}

	empty := filepath.Join(t.TempDir(), "empty.json")
	if err := SaveHistory(empty, nil); err != nil {
		t.Fatal(err)
	}
	if got, err := LoadHistory(empty); err != nil || len(got) != 0 {
		t.Fatalf("empty history: %v %v", got, err)
	}
}

func TestLoadHistoryRejects(t *testing.T) {
	for name, content := range map[string]string{
		"bad kind":      `{"version": 1, "ops": [{"client": 0, "input": {"kind": "cas", "key": "x"}, "output": {}, "call": 0, "return": 1}]}`,
		"missing kind":  `{"version": 1, "ops": [{"client": 0, "input": {"key": "x"}, "output": {}, "call": 0, "return": 1}]}`,
		"unknown field": `{"version": 1, "ops": [{"client": 0, "input": {"kind": "get", "key": "x"}, "output": {"fuond": true}, "call": 0, "return": 1}]}`,
		"version":       `{"version": 2, "ops": []}`,
		"return < call": `{"version": 1, "ops": [{"client": 0, "input": {"kind": "get", "key": "x"}, "output": {}, "call": 5, "return": 1}]}`,
		"not json":      `[`,
	} {
		path := filepath.Join(t.TempDir(), "h.json")
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadHistory(path); err == nil {
			t.Errorf("%s: loaded without error", name)
		}
	}
	if _, err := LoadHistory(filepath.Join(t.TempDir(), "missing.json")); err == nil {
		t.Error("missing file loaded")
	}
}

func TestOpKindJSON(t *testing.T) {
	for _, k := range []OpKind{Get, Put, Delete} {
		b, err := json.Marshal(k)
		if err != nil {
			t.Fatal(err)
		}
		var back OpKind
		if err := json.Unmarshal(b, &back); err != nil || back != k {
			t.Errorf("%v: %s -> %v, %v", k, b, back, err)
		}
	}
	if _, err := json.Marshal(OpKind(0)); err == nil {
		t.Error("zero kind marshalled")
	}
}

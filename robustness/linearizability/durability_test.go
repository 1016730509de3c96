package linearizability

import (
	"errors"
	"strings"
	"testing"
)

func put(client int, key, value string, call, ret int64) Op {
	return Op{ClientID: client, Input: Input{Kind: Put, Key: key, Value: value}, Call: call, Return: ret}
}

func del(client int, key string, call, ret int64) Op {
	return Op{ClientID: client, Input: Input{Kind: Delete, Key: key}, Call: call, Return: ret}
}

func unknown(op Op) Op {
	op.Output.Unknown = true
	op.Return = Infinity
	return op
}

func present(v string) FinalValue { return FinalValue{Value: v, Found: true} }

func TestDurability(t *testing.T) {
	absent := FinalValue{}
	for _, tc := range []struct {
		name    string
		history []Op
		final   map[string]FinalValue
		bad     []string // offending keys, in order
		reason  string   // expected in the error
	}{
		{
			name:    "last acknowledged write present",
			history: []Op{put(0, "x", "1", 0, 10), put(0, "x", "2", 20, 30)},
			final:   map[string]FinalValue{"x": present("2")},
		},
		{
			name:    "acknowledged write lost: older value",
			history: []Op{put(0, "x", "1", 0, 10), put(0, "x", "2", 20, 30)},
			final:   map[string]FinalValue{"x": present("1")},
			bad:     []string{"x"},
			reason:  "overwritten",
		},
		{
			name:    "acknowledged write lost: key absent",
			history: []Op{put(0, "x", "1", 0, 10)},
			final:   map[string]FinalValue{"x": absent},
			bad:     []string{"x"},
			reason:  "lost acknowledged write",
		},
		{
			name:    "acknowledged write lost: key missing from final",
			history: []Op{put(0, "x", "1", 0, 10)},
			final:   map[string]FinalValue{},
			bad:     []string{"x"},
		},
		{
			name:    "value nobody wrote",
			history: []Op{put(0, "x", "1", 0, 10)},
			final:   map[string]FinalValue{"x": present("7")},
			bad:     []string{"x"},
			reason:  "never written",
		},
		{
			name:    "key nobody wrote",
			history: []Op{put(0, "x", "1", 0, 10)},
			final:   map[string]FinalValue{"x": present("1"), "y": present("1")},
			bad:     []string{"y"},
			reason:  "never written",
		},
		{
			name:    "unknown write present",
			history: []Op{put(0, "x", "1", 0, 10), unknown(put(1, "x", "2", 20, 0))},
			final:   map[string]FinalValue{"x": present("2")},
		},
		{
			name:    "unknown write absent",
			history: []Op{put(0, "x", "1", 0, 10), unknown(put(1, "x", "2", 20, 0))},
			final:   map[string]FinalValue{"x": present("1")},
		},
		{
			name:    "only unknown writes: may all have failed",
			history: []Op{unknown(put(1, "x", "2", 20, 0))},
			final:   map[string]FinalValue{},
		},
		{
			name:    "only unknown writes: one applied",
			history: []Op{unknown(put(1, "x", "2", 20, 0))},
			final:   map[string]FinalValue{"x": present("2")},
		},
		{
			name: "unknown write called before an acknowledged write may still apply after it",
			history: []Op{
				unknown(put(1, "x", "2", 0, 0)),
				put(0, "x", "1", 10, 20),
			},
			final: map[string]FinalValue{"x": present("2")},
		},
		{
			name:    "unknown delete applied",
			history: []Op{put(0, "x", "1", 0, 10), unknown(del(1, "x", 20, 0))},
			final:   map[string]FinalValue{"x": absent},
		},
		{
			name:    "unknown delete not applied",
			history: []Op{put(0, "x", "1", 0, 10), unknown(del(1, "x", 20, 0))},
			final:   map[string]FinalValue{"x": present("1")},
		},
		{
			name:    "acknowledged delete last",
			history: []Op{put(0, "x", "1", 0, 10), del(1, "x", 20, 30)},
			final:   map[string]FinalValue{},
		},
		{
			name:    "deleted value resurrected",
			history: []Op{put(0, "x", "1", 0, 10), del(1, "x", 20, 30)},
			final:   map[string]FinalValue{"x": present("1")},
			bad:     []string{"x"},
			reason:  "overwritten",
		},
		{
			name:    "concurrent acknowledged writes: either wins",
			history: []Op{put(0, "x", "1", 0, 20), put(1, "x", "2", 10, 30), del(2, "x", 15, 16)},
			final:   map[string]FinalValue{"x": present("1")},
		},
		{
			name:    "concurrent acknowledged writes: delete wins",
			history: []Op{put(0, "x", "1", 0, 20), put(1, "x", "2", 10, 30), del(2, "x", 15, 16)},
			final:   map[string]FinalValue{},
		},
		{
			name:    "touching intervals are concurrent",
			history: []Op{put(0, "x", "1", 0, 10), put(1, "x", "2", 10, 20)},
			final:   map[string]FinalValue{"x": present("1")},
		},
		{
			name:    "absent key never written",
			history: []Op{{Input: Input{Kind: Get, Key: "x"}, Call: 0, Return: 1}},
			final:   map[string]FinalValue{"x": absent},
		},
		{
			name: "every offending key is listed",
			history: []Op{
				put(0, "a", "1", 0, 10), put(0, "b", "1", 0, 10), put(0, "c", "1", 0, 10),
			},
			final:  map[string]FinalValue{"a": present("1"), "b": absent, "c": present("2"), "d": present("3")},
			bad:    []string{"b", "c", "d"},
			reason: "never written",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Durability(tc.history, tc.final)
			if len(tc.bad) == 0 {
				if err != nil {
					t.Fatalf("unexpected violation: %v", err)
				}
				return
			}
			var de *DurabilityError
			if !errors.As(err, &de) {
				t.Fatalf("want a *DurabilityError for keys %q, got %v", tc.bad, err)
			}
			var got []string
			for _, v := range de.Violations {
				got = append(got, v.Key)
			}
			if strings.Join(got, ",") != strings.Join(tc.bad, ",") {
				t.Errorf("offending keys %q, want %q", got, tc.bad)
			}
			if !strings.Contains(err.Error(), tc.reason) {
				t.Errorf("error %q does not say %q", err, tc.reason)
			}
			for _, k := range tc.bad {
				if !strings.Contains(err.Error(), `key "`+k+`"`) {
					t.Errorf("error does not list key %q: %v", k, err)
				}
			}
			t.Log(err)
		})
	}
}

func TestDurabilityMalformed(t *testing.T) {
	err := Durability([]Op{put(0, "x", "1", 10, 5)}, nil)
	if err == nil || !strings.Contains(err.Error(), "malformed") {
		t.Fatalf("got %v", err)
	}
}

package linearizability

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

const checkTimeout = 30 * time.Second

// TestHistories loads every hand-written history in testdata: *-ok.json must
// be linearizable, *-bad.json must not be, must blame exactly key "x" (the
// convention of those files) and must leave a visualisation behind.
func TestHistories(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	var nOK, nBad int
	for _, file := range files {
		name := filepath.Base(file)
		wantOK := strings.HasSuffix(name, "-ok.json")
		wantBad := strings.HasSuffix(name, "-bad.json")
		if !wantOK && !wantBad {
			t.Errorf("%s: name must end in -ok.json or -bad.json", name)
			continue
		}
		if wantOK {
			nOK++
		} else {
			nBad++
		}
		t.Run(strings.TrimSuffix(name, ".json"), func(t *testing.T) {
			ops, err := LoadHistory(file)
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			res := Check(context.Background(), ops, checkTimeout, VisualizationDir(dir))
			t.Log(res)
			if res.Unknown {
				t.Fatalf("checker did not finish: %v", res)
			}
			if wantOK {
				if !res.Ok || res.Err != nil || res.Visualization != "" || len(res.IllegalKeys) != 0 {
					t.Fatalf("want linearizable, got %v", res)
				}
				return
			}
			if res.Ok || !res.Illegal {
				t.Fatalf("want NOT linearizable, got %v", res)
			}
			if res.Err != nil {
				t.Fatalf("unexpected error: %v", res.Err)
			}
			if !slices.Equal(res.IllegalKeys, []string{"x"}) {
				t.Errorf("IllegalKeys = %q, want [x]", res.IllegalKeys)
			}
			if filepath.Dir(res.Visualization) != dir {
				t.Errorf("visualization %q not in %q", res.Visualization, dir)
			}
			b, err := os.ReadFile(res.Visualization)
			if err != nil {
				t.Fatalf("visualization: %v", err)
			}
			if len(b) == 0 || !strings.Contains(string(b), "<html") || !strings.Contains(string(b), `get(\"x\")`) {
				t.Errorf("visualization %s does not look like porcupine's HTML for this history (%d bytes)", res.Visualization, len(b))
			}
		})
	}
	if nOK < 3 || nBad < 3 {
		t.Errorf("testdata has %d ok and %d bad histories, want at least 3 of each", nOK, nBad)
	}
}

func TestCheckPrunesAndCounts(t *testing.T) {
	ops, err := LoadHistory(filepath.Join("testdata", "unknown-put-absent-ok.json"))
	if err != nil {
		t.Fatal(err)
	}
	res := Check(context.Background(), ops, checkTimeout)
	// Two unobserved unknown puts and one unknown get are pruned.
	if !res.Ok || res.Ops != 3 || res.Pruned != 3 || res.Keys != 1 {
		t.Fatalf("got %+v, want Ok with 3 ops checked and 3 pruned on 1 key", res)
	}
	res = Check(context.Background(), ops, checkTimeout, withoutPruning())
	if !res.Ok || res.Ops != 5 || res.Pruned != 1 {
		t.Fatalf("without pruning: got %+v, want Ok with 5 ops checked and 1 pruned", res)
	}
}

func TestCheckEmpty(t *testing.T) {
	res := Check(context.Background(), nil, checkTimeout)
	if !res.Ok || res.Ops != 0 {
		t.Fatalf("empty history: %v", res)
	}
}

func TestCheckMalformed(t *testing.T) {
	ops := []Op{
		{Input: Input{Kind: Put, Key: "x", Value: "1"}, Call: 10, Return: 5},
		{Input: Input{Key: "x"}, Call: 0, Return: 1},
	}
	res := Check(context.Background(), ops, checkTimeout)
	if res.Ok || res.Unknown || res.Illegal || res.Err == nil {
		t.Fatalf("malformed history: got %+v, want an error", res)
	}
	for _, want := range []string{"op 0", "op 1"} {
		if !strings.Contains(res.Err.Error(), want) {
			t.Errorf("error %q does not mention %s", res.Err, want)
		}
	}
}

// TestCheckCancelled: a check that cannot run is Unknown, and Unknown is not Ok.
func TestCheckCancelled(t *testing.T) {
	ops, err := LoadHistory(filepath.Join("testdata", "sequential-ok.json"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res := Check(ctx, ops, checkTimeout)
	if !res.Unknown || res.Ok || res.Illegal || res.Err == nil {
		t.Fatalf("cancelled: got %+v, want Unknown and not Ok", res)
	}
	if !strings.Contains(res.String(), "not a pass") {
		t.Errorf("String() = %q", res.String())
	}

	ctx, cancel = context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	res = Check(ctx, ops, checkTimeout)
	if !res.Unknown || res.Ok {
		t.Fatalf("past deadline: got %+v, want Unknown and not Ok", res)
	}
}

// TestCheckTimeout: a search that cannot finish in time gives Unknown. Many
// overlapping puts of one key whose values are read back in an order that no
// linearization allows make porcupine's search explode.
func TestCheckTimeout(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	var ops []Op
	const n = 40
	for i := range n {
		v := string(rune('a'+i%26)) + string(rune('a'+i/26))
		ops = append(ops, Op{ClientID: i, Input: Input{Kind: Put, Key: "x", Value: v}, Call: 0, Return: 1000})
	}
	// Reads that each see a different value, concurrent with everything,
	// and a final read of a value that does not exist.
	for i := range n {
		v := string(rune('a'+i%26)) + string(rune('a'+i/26))
		ops = append(ops, Op{ClientID: n + i, Input: Input{Kind: Get, Key: "x"}, Output: Output{Value: v, Found: true}, Call: 0, Return: 1000})
	}
	ops = append(ops, Op{ClientID: 2 * n, Input: Input{Kind: Get, Key: "x"}, Output: Output{Value: "zz", Found: true}, Call: 0, Return: 1000})
	res := Check(context.Background(), ops, 200*time.Millisecond)
	t.Log(res)
	if res.Ok {
		t.Fatalf("got Ok for a history with a read of a value never written")
	}
	if !res.Unknown {
		t.Skipf("the checker refuted the history within the timeout; cannot exercise Unknown here: %v", res)
	}
	if res.Visualization != "" {
		t.Errorf("no visualization expected for Unknown")
	}
}

// TestCheckAgainstBruteForce is porcupine-style randomized testing: small
// random single-key histories, checked by Check (with and without pruning)
// and by a brute-force search that treats unknown-outcome writes literally
// (taking effect at any point after their call, or never). All must agree.
// This validates the model, the "return at infinity" convention and the
// pruning of unobserved unknown puts.
func TestCheckAgainstBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	iters := 3000
	if testing.Short() {
		iters = 300
	}
	var legal, illegal int
	for i := range iters {
		ops := randomHistory(rng)
		want := bruteForce(ops)
		for _, prune := range []bool{true, false} {
			opts := []CheckOption{withoutVisualization()}
			if !prune {
				opts = append(opts, withoutPruning())
			}
			res := Check(context.Background(), ops, checkTimeout, opts...)
			if res.Unknown || res.Err != nil {
				t.Fatalf("iteration %d: %v", i, res)
			}
			if res.Ok != want {
				path := filepath.Join(t.TempDir(), "history.json")
				_ = SaveHistory(path, ops)
				t.Fatalf("iteration %d: Check (pruning %v) says ok=%v, brute force says %v; history %s: %+v",
					i, prune, res.Ok, want, path, ops)
			}
		}
		if want {
			legal++
		} else {
			illegal++
		}
	}
	t.Logf("%d legal, %d illegal histories", legal, illegal)
	if legal < iters/10 || illegal < iters/10 {
		t.Errorf("generator is unbalanced: %d legal, %d illegal", legal, illegal)
	}
}

func randomHistory(rng *rand.Rand) []Op {
	n := 2 + rng.IntN(5) // 2..6 operations
	values := []string{"1", "2", "3"}
	var ops []Op
	for c := range n {
		call := int64(rng.IntN(40))
		op := Op{ClientID: c, Call: call, Return: call + int64(rng.IntN(20))}
		switch r := rng.IntN(10); {
		case r < 4:
			op.Input = Input{Kind: Get, Key: "x"}
			if rng.IntN(4) != 0 {
				op.Output = Output{Value: values[rng.IntN(len(values))], Found: true}
			}
			if rng.IntN(12) == 0 {
				op.Output = Output{Unknown: true}
			}
		case r < 8:
			op.Input = Input{Kind: Put, Key: "x", Value: values[rng.IntN(len(values))]}
		default:
			op.Input = Input{Kind: Delete, Key: "x"}
		}
		if op.Input.Kind.IsWrite() && rng.IntN(3) == 0 {
			op.Output = Output{Unknown: true}
			op.Return = Infinity
		}
		ops = append(ops, op)
	}
	return ops
}

// bruteForce decides linearizability of a small single-key history by
// enumeration: choose which unknown-outcome writes took effect, then try
// every order of the chosen operations that respects real time (a precedes b
// if a returned, with a known outcome, strictly before b was called).
func bruteForce(history []Op) bool {
	var known, unknown []Op
	for _, op := range history {
		switch {
		case !op.Output.Unknown:
			known = append(known, op)
		case op.Input.Kind.IsWrite():
			unknown = append(unknown, op)
		}
	}
	for mask := 0; mask < 1<<len(unknown); mask++ {
		ops := slices.Clone(known)
		for i, op := range unknown {
			if mask&(1<<i) != 0 {
				ops = append(ops, op)
			}
		}
		if bruteOrder(ops, make([]bool, len(ops)), state{}) {
			return true
		}
	}
	return false
}

func bruteOrder(ops []Op, placed []bool, s state) bool {
	all := true
	for i := range ops {
		if placed[i] {
			continue
		}
		all = false
		// i can go next iff no unplaced operation must precede it.
		ready := true
		for j := range ops {
			if j != i && !placed[j] && !ops[j].Output.Unknown && ops[j].Return < ops[i].Call {
				ready = false
				break
			}
		}
		if !ready {
			continue
		}
		var next state
		switch ops[i].Input.Kind {
		case Get:
			if ops[i].Output.Found != s.present || (s.present && ops[i].Output.Value != s.value) {
				continue
			}
			next = s
		case Put:
			next = state{value: ops[i].Input.Value, present: true}
		case Delete:
			next = state{}
		}
		placed[i] = true
		ok := bruteOrder(ops, placed, next)
		placed[i] = false
		if ok {
			return true
		}
	}
	return all
}

// TestAppendFinalReads: the final state as reads after the history.
func TestAppendFinalReads(t *testing.T) {
	ops, err := LoadHistory(filepath.Join("testdata", "unknown-put-absent-ok.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		final map[string]FinalValue
		ok    bool
	}{
		{map[string]FinalValue{"x": {Value: "1", Found: true}}, true},
		{map[string]FinalValue{"x": {Value: "2", Found: true}}, true},  // unknown put applied late
		{map[string]FinalValue{"x": {Value: "3", Found: true}}, true},  // the other one
		{map[string]FinalValue{}, false},                               // x absent: nobody deleted it
		{map[string]FinalValue{"x": {Value: "4", Found: true}}, false}, // nobody wrote 4
		{map[string]FinalValue{"x": {Value: "1", Found: true}, "y": {Value: "1", Found: true}}, false},
	} {
		h := AppendFinalReads(ops, tc.final, 99)
		if len(h) <= len(ops) || h[len(h)-1].ClientID != 99 {
			t.Fatalf("AppendFinalReads did not append reads: %+v", h)
		}
		res := Check(context.Background(), h, checkTimeout, VisualizationDir(t.TempDir()))
		if res.Ok != tc.ok || res.Unknown {
			t.Errorf("final %v: got %v, want ok=%v", tc.final, res, tc.ok)
		}
	}
}

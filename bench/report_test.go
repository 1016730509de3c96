package bench

import (
	"bytes"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestWriteTableAndRatios(t *testing.T) {
	hit := 0.987
	ours := []Result{
		{Target: "kvstore (in-process)", Workload: "A", Distribution: Zipf, Clients: 64, OpsPerSec: 1234567.4, Latency: Latency{P50: 850, P99: 12300, P999: 45600 * time.Microsecond}, CacheHitRatio: &hit, Durability: "memory, 3 replicas (majority acknowledged)"},
		{Target: "kvstore (in-process)", Workload: "C", Distribution: Zipf, Clients: 64, OpsPerSec: 5e6, Latency: Latency{P50: 300, P99: 900, P999: 2 * time.Second}, Errors: 2, Durability: "memory, 3 replicas (majority acknowledged)"},
	}
	peers := []Result{
		{Target: "etcd (linearizable)", Workload: "A", Distribution: Zipf, Clients: 64, OpsPerSec: 12345.67, Durability: "fsync, 3 members"},
		{Target: "zookeeper", Workload: "C", Distribution: Zipf, Clients: 64, OpsPerSec: 50000, Durability: "fsync, 3 servers"},
		{Target: "etcd (linearizable)", Workload: "C", Distribution: Zipf, Clients: 64, OpsPerSec: 0},
	}
	var b bytes.Buffer
	if err := WriteTable(&b, append(append([]Result(nil), ours...), peers...)); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 6 {
		t.Fatalf("table has %d lines, want 6:\n%s", len(lines), out)
	}
	for _, want := range []string{"target", "ops/s", "p99.9", "hit ratio", "durability", "1,234,567", "850ns", "12.3µs", "45.6ms", "2.00s", "98.7%", "fsync, 3 members"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	// Aligned: the last column starts at the same rune offset everywhere.
	col := func(l, sub string) int { return utf8.RuneCountInString(l[:strings.Index(l, sub)]) }
	at := col(lines[0], "durability")
	for _, l := range lines[1:] {
		for _, d := range []string{"memory", "fsync"} {
			if strings.Contains(l, d) && col(l, d) != at {
				t.Errorf("durability column not aligned:\n%s", out)
			}
		}
	}
	for _, l := range lines {
		if strings.HasSuffix(l, " ") {
			t.Errorf("trailing blanks: %q", l)
		}
	}

	b.Reset()
	if err := WriteRatios(&b, ours, peers); err != nil {
		t.Fatal(err)
	}
	out = b.String()
	for _, want := range []string{"÷ etcd (linearizable)", "÷ zookeeper", "100×", "-"} {
		if !strings.Contains(out, want) {
			t.Errorf("ratios lack %q:\n%s", want, out)
		}
	}
	// A: 1234567.4 / 12345.67 = 100.0; C: 5e6 / 50000 = 100, flagged for
	// KVStore's errors, and etcd's 0 -> "-".
	if !strings.Contains(lineWith(out, "A"), "100×") || strings.Contains(lineWith(out, "A"), "*") ||
		!strings.Contains(lineWith(out, " C "), "-") || !strings.Contains(lineWith(out, " C "), "100× *") || !strings.Contains(out, "* one of the two runs had errors") {
		t.Errorf("ratios:\n%s", out)
	}
}

// TestRounds: Median keeps the median round whole, and paired ratios are
// the median of the rounds' ratios, not the ratio of the medians; the
// table shows the rounds' spread.
func TestRounds(t *testing.T) {
	// Ours and the peer ran back to back in three rounds; the machine
	// was twice as fast in round 2 for both.
	ours := Median([]Result{
		{Target: "kvstore", Workload: "C", OpsPerSec: 100, Latency: Latency{P99: 1}},
		{Target: "kvstore", Workload: "C", OpsPerSec: 300, Latency: Latency{P99: 3}},
		{Target: "kvstore", Workload: "C", OpsPerSec: 120, Latency: Latency{P99: 2}},
	})
	if ours.OpsPerSec != 120 || ours.Latency.P99 != 2 || len(ours.RoundOpsPerSec) != 3 || ours.RoundOpsPerSec[1] != 300 {
		t.Fatalf("median round %+v, want the 120 ops/s one with every round's ops/s", ours)
	}
	peer := Median([]Result{
		{Target: "etcd", Workload: "C", OpsPerSec: 50},
		{Target: "etcd", Workload: "C", OpsPerSec: 150},
		{Target: "etcd", Workload: "C", OpsPerSec: 100},
	})
	// Per round: 2, 2, 1.2 -> median 2. The medians' ratio, 120/100,
	// would be 1.2.
	if r, paired := Ratio(ours, peer); !paired || r != 2 {
		t.Fatalf("Ratio = %v (paired %v), want 2 (paired)", r, paired)
	}
	one := Median([]Result{{Target: "x", OpsPerSec: 7}})
	if one.OpsPerSec != 7 || one.RoundOpsPerSec != nil {
		t.Fatalf("one round: %+v", one)
	}
	if r, paired := Ratio(one, Result{OpsPerSec: 14}); paired || r != 0.5 {
		t.Fatalf("unpaired Ratio = %v (paired %v), want 0.5", r, paired)
	}
	var b bytes.Buffer
	if err := WriteTable(&b, []Result{ours, peer}); err != nil {
		t.Fatal(err)
	}
	// kvstore: (300-100)/2/120 = 83%; etcd: (150-50)/2/100 = 50%.
	if out := b.String(); !strings.Contains(out, "spread") || !strings.Contains(out, "±83%") || !strings.Contains(out, "±50%") {
		t.Errorf("table without the rounds' spread:\n%s", out)
	}
	b.Reset()
	if err := WriteRatios(&b, []Result{ours}, []Result{peer}); err != nil {
		t.Fatal(err)
	}
	if out := b.String(); !strings.Contains(out, "2.00×") || !strings.Contains(out, "median of each round's ratio") {
		t.Errorf("ratios:\n%s", out)
	}
}

// lineWith returns the line of s containing sub.
func lineWith(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) && strings.Contains(l, "kvstore") {
			return l
		}
	}
	return ""
}

func TestFormat(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0ns", 999: "999ns", 1000: "1.00µs", 12345: "12.3µs", 123456: "123µs",
		1500 * time.Microsecond: "1.50ms", 3 * time.Second: "3.00s",
	} {
		if got := FormatLatency(d); got != want {
			t.Errorf("FormatLatency(%d) = %q, want %q", d, got, want)
		}
	}
	for v, want := range map[float64]string{0: "0", 999.4: "999", 1000: "1,000", 1234567.5: "1,234,568", -1234: "-1,234"} {
		if got := fmtCount(v); got != want {
			t.Errorf("fmtCount(%v) = %q, want %q", v, got, want)
		}
	}
}

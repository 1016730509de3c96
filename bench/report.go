package bench

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// WriteTable writes results as an aligned text table, one row per result:
// target, workload, distribution, clients, ops/s, overall p50/p99/p99.9
// latency, cache hit ratio ("-" where the target reports none), errors and
// durability. When some result ran in rounds, a "spread" column after
// ops/s gives half the range of its rounds' ops/s as a share of the median.
func WriteTable(w io.Writer, results []Result) error {
	rounds := slices.ContainsFunc(results, func(r Result) bool { return len(r.RoundOpsPerSec) > 1 })
	t := table{header: []string{"target", "workload", "dist", "clients", "ops/s"}, right: []bool{false, false, false, true, true}}
	if rounds {
		t.header, t.right = append(t.header, "spread"), append(t.right, true)
	}
	t.header = append(t.header, "p50", "p99", "p99.9", "hit ratio", "errors", "durability")
	t.right = append(t.right, true, true, true, true, true, false)
	for _, r := range results {
		hit := "-"
		if r.CacheHitRatio != nil {
			hit = fmt.Sprintf("%.1f%%", 100**r.CacheHitRatio)
		}
		row := []string{r.Target, r.Workload, r.Distribution, strconv.Itoa(r.Clients), fmtCount(r.OpsPerSec)}
		if rounds {
			row = append(row, roundSpread(r))
		}
		t.rows = append(t.rows, append(row, FormatLatency(r.Latency.P50), FormatLatency(r.Latency.P99), FormatLatency(r.Latency.P999),
			hit, strconv.FormatUint(r.Errors, 10), r.Durability))
	}
	return t.write(w)
}

// roundSpread is half the range of r's rounds' ops/s over its median, as
// "±12%"; "-" for a result of one round.
func roundSpread(r Result) string {
	if len(r.RoundOpsPerSec) < 2 || r.OpsPerSec <= 0 {
		return "-"
	}
	lo, hi := slices.Min(r.RoundOpsPerSec), slices.Max(r.RoundOpsPerSec)
	return fmt.Sprintf("±%.0f%%", 100*(hi-lo)/2/r.OpsPerSec)
}

// table is a text table with columns aligned left or right.
type table struct {
	header []string
	right  []bool // per column: align right
	rows   [][]string
}

func (t table) write(w io.Writer) error {
	width := make([]int, len(t.header))
	for _, row := range append([][]string{t.header}, t.rows...) {
		for i, c := range row {
			width[i] = max(width[i], utf8.RuneCountInString(c))
		}
	}
	var b strings.Builder
	for _, row := range append([][]string{t.header}, t.rows...) {
		var line strings.Builder
		for i, c := range row {
			pad := strings.Repeat(" ", width[i]-utf8.RuneCountInString(c))
			if i > 0 {
				line.WriteString("  ")
			}
			if i < len(t.right) && t.right[i] {
				line.WriteString(pad + c)
			} else {
				line.WriteString(c + pad)
			}
		}
		b.WriteString(strings.TrimRight(line.String(), " "))
		b.WriteByte('\n')
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteRatios writes, for every result of ours, its ops/s divided by the
// ops/s of each peer target on the same workload and distribution: one row
// per workload, one column per peer target name (in order of first
// appearance), "-" where the peer has no such result or did no operation,
// and a "*" (explained below the table) where either run had errors. When
// both ran the same number of rounds (Result.RoundOpsPerSec), the ratio is
// the median of the rounds' ratios: each round ran the two back to back,
// so a machine that slows down between rounds moves both.
func WriteRatios(w io.Writer, ours []Result, peers []Result) error {
	var names []string
	byPeer := map[string]map[string]Result{}
	for _, p := range peers {
		m, ok := byPeer[p.Target]
		if !ok {
			names = append(names, p.Target)
			m = map[string]Result{}
			byPeer[p.Target] = m
		}
		m[p.Workload+"/"+p.Distribution] = p
	}
	if _, err := fmt.Fprintln(w, "KVStore ops/s ÷ peer ops/s, per workload"); err != nil {
		return err
	}
	t := table{header: []string{"target", "workload", "dist", "ops/s"}, right: []bool{false, false, false, true}}
	flagged, paired := false, false
	for _, n := range names {
		t.header = append(t.header, "÷ "+n)
		t.right = append(t.right, true)
	}
	for _, o := range ours {
		row := []string{o.Target, o.Workload, o.Distribution, fmtCount(o.OpsPerSec)}
		for _, n := range names {
			p, ok := byPeer[n][o.Workload+"/"+o.Distribution]
			if !ok || p.OpsPerSec <= 0 {
				row = append(row, "-")
				continue
			}
			r, isPaired := Ratio(o, p)
			paired = paired || isPaired
			ratio := fmtRatio(r)
			if o.Errors > 0 || p.Errors > 0 {
				ratio += " *"
				flagged = true
			}
			row = append(row, ratio)
		}
		t.rows = append(t.rows, row)
	}
	if err := t.write(w); err != nil {
		return err
	}
	if paired {
		if _, err := fmt.Fprintln(w, "ratios are the median of each round's ratio (the two ran back to back in every round)"); err != nil {
			return err
		}
	}
	if flagged {
		_, err := fmt.Fprintln(w, "* one of the two runs had errors (see the errors column): its ops/s counts successful operations only")
		return err
	}
	return nil
}

// Ratio is ours' ops/s over peer's: the median of the per-round ratios
// when both ran the same rounds (paired true), else the plain ratio.
func Ratio(ours, peer Result) (ratio float64, paired bool) {
	n := len(ours.RoundOpsPerSec)
	if n < 2 || n != len(peer.RoundOpsPerSec) {
		return ours.OpsPerSec / peer.OpsPerSec, false
	}
	var rs []float64
	for i := range n {
		if peer.RoundOpsPerSec[i] > 0 {
			rs = append(rs, ours.RoundOpsPerSec[i]/peer.RoundOpsPerSec[i])
		}
	}
	if len(rs) == 0 {
		return ours.OpsPerSec / peer.OpsPerSec, false
	}
	slices.Sort(rs)
	if len(rs)%2 == 1 {
		return rs[len(rs)/2], true
	}
	return (rs[len(rs)/2-1] + rs[len(rs)/2]) / 2, true
}

// fmtRatio prints a ratio with three significant digits and a "×".
func fmtRatio(r float64) string {
	switch {
	case r >= 100:
		return strconv.FormatFloat(r, 'f', 0, 64) + "×"
	case r >= 10:
		return strconv.FormatFloat(r, 'f', 1, 64) + "×"
	}
	return strconv.FormatFloat(r, 'f', 2, 64) + "×"
}

// fmtCount prints a rate or count rounded to an integer, with thousands
// separators: 1234567.8 -> "1,234,568".
func fmtCount(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "-"
	}
	s := strconv.FormatInt(int64(math.Round(v)), 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// FormatLatency prints d with three significant digits in ns, µs, ms or s:
// 850ns, 1.23µs, 45.6ms, 2.00s.
func FormatLatency(d time.Duration) string {
	v := float64(d)
	unit := "ns"
	switch {
	case d >= time.Second:
		v, unit = v/1e9, "s"
	case d >= time.Millisecond:
		v, unit = v/1e6, "ms"
	case d >= time.Microsecond:
		v, unit = v/1e3, "µs"
	default:
		return strconv.FormatInt(int64(d), 10) + unit
	}
	switch {
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64) + unit
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64) + unit
	}
	return strconv.FormatFloat(v, 'f', 2, 64) + unit
}

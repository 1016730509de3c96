package bench

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// TestHistogramBuckets checks the bucket arithmetic: every value falls in
// its bucket's range, buckets are contiguous, and no bucket is wider than
// 1/128 of its lower bound (above the exact ones).
func TestHistogramBuckets(t *testing.T) {
	prevEnd := uint64(0)
	for b := 0; b < histBuckets; b++ {
		low, width := histBounds(b)
		if low != prevEnd {
			t.Fatalf("bucket %d starts at %d, previous ended at %d", b, low, prevEnd)
		}
		if width > 1 && float64(width)/float64(low) > 1.0/histSubCount {
			t.Fatalf("bucket %d: width %d over low %d is more than 1/%d", b, width, low, histSubCount)
		}
		if histBucket(low) != b || histBucket(low+width-1) != b {
			t.Fatalf("bucket %d [%d, %d): ends map to %d and %d", b, low, low+width, histBucket(low), histBucket(low+width-1))
		}
		prevEnd = low + width
	}
	if prevEnd <= uint64(HistogramMax) {
		t.Fatalf("buckets end at %d, below the maximum %d", prevEnd, HistogramMax)
	}
	if histBuckets > 5000 {
		t.Fatalf("%d buckets: too many for one per client and operation kind", histBuckets)
	}
}

// exactQuantile is the ceil(q*n)-th smallest of sorted vs.
func exactQuantile(sorted []time.Duration, q float64) time.Duration {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(i, 0)]
}

func TestHistogramQuantiles(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	dists := map[string]func() time.Duration{
		"uniform 100ns-60s":    func() time.Duration { return 100 + time.Duration(r.Int64N(int64(HistogramMax)-100)) },
		"uniform 1µs-2µs":      func() time.Duration { return time.Microsecond + time.Duration(r.Int64N(1000)) },
		"exponential mean 1ms": func() time.Duration { return time.Duration(r.ExpFloat64() * 1e6) },
		"log-uniform 100ns-60s": func() time.Duration {
			return time.Duration(math.Exp(math.Log(100) + r.Float64()*(math.Log(6e10)-math.Log(100))))
		},
		"bimodal 2µs and 5ms": func() time.Duration {
			if r.IntN(100) < 98 {
				return 2*time.Microsecond + time.Duration(r.NormFloat64()*100)
			}
			return 5*time.Millisecond + time.Duration(r.NormFloat64()*1e5)
		},
	}
	for name, draw := range dists {
		t.Run(name, func(t *testing.T) {
			const n = 200000
			vs := make([]time.Duration, n)
			var h Histogram
			for i := range vs {
				vs[i] = max(draw(), 100)
				h.Record(vs[i])
			}
			slices.Sort(vs)
			if h.Count() != n || h.Min() != vs[0] || h.Max() != vs[n-1] {
				t.Fatalf("count %d min %v max %v, want %d %v %v", h.Count(), h.Min(), h.Max(), n, vs[0], vs[n-1])
			}
			for _, q := range []float64{0.01, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999} {
				got, want := h.Quantile(q), exactQuantile(vs, q)
				if rel := math.Abs(float64(got-want)) / float64(want); rel > 0.01 {
					t.Errorf("q%v = %v, exact %v: off by %.2f%%", q, got, want, 100*rel)
				}
			}
		})
	}
}

func TestHistogramMergeAndEdges(t *testing.T) {
	var empty Histogram
	if empty.Quantile(0.5) != 0 || empty.Mean() != 0 || empty.Count() != 0 {
		t.Fatal("an empty histogram is not all zero")
	}
	var a, b, all Histogram
	r := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 10000; i++ {
		d := time.Duration(r.Int64N(int64(time.Millisecond)))
		all.Record(d)
		if i%3 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
	}
	a.Merge(&b)
	a.Merge(&empty)
	if a.Count() != all.Count() || a.Min() != all.Min() || a.Max() != all.Max() || a.Mean() != all.Mean() {
		t.Fatalf("merged count/min/max/mean %d/%v/%v/%v, want %d/%v/%v/%v", a.Count(), a.Min(), a.Max(), a.Mean(), all.Count(), all.Min(), all.Max(), all.Mean())
	}
	for _, q := range []float64{0, 0.5, 0.99, 1} {
		if a.Quantile(q) != all.Quantile(q) {
			t.Fatalf("merged q%v %v, want %v", q, a.Quantile(q), all.Quantile(q))
		}
	}
	var e Histogram
	e.Merge(&all)
	if e.Quantile(0.5) != all.Quantile(0.5) {
		t.Fatal("merge into an empty histogram differs")
	}

	var c Histogram
	c.Record(-5)
	c.Record(2 * HistogramMax)
	if c.Min() != 0 || c.Max() != HistogramMax || c.Quantile(1) != HistogramMax {
		t.Fatalf("clamping: min %v max %v", c.Min(), c.Max())
	}
	var one Histogram
	one.Record(1234 * time.Nanosecond)
	for _, q := range []float64{0, 0.5, 1} {
		if one.Quantile(q) != 1234 {
			t.Fatalf("one value: q%v = %v, want 1.234µs (kept within min and max)", q, one.Quantile(q))
		}
	}
}

func BenchmarkHistogramRecord(b *testing.B) {
	var h Histogram
	for i := 0; b.Loop(); i++ {
		h.Record(time.Duration(i&0xfffff) * 7)
	}
}

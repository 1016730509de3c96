package bench

import (
	"math"
	"math/bits"
	"time"
)

// Histogram records latencies in log-linear buckets, in the manner of
// HdrHistogram: values below 256 ns have a bucket each; above, every power
// of two is split into 128 equal buckets, so a bucket is at most 1/128 of
// its lower bound wide and a quantile (the bucket's midpoint) is within
// 0.4% of a recorded value. Values above HistogramMax are clamped to it.
//
// The zero value is empty and ready to use. A Histogram is not safe for
// concurrent use: give each goroutine its own and Merge them at the end.
type Histogram struct {
	counts   []uint64 // allocated on first Record
	count    uint64
	sum      float64 // nanoseconds, for the mean
	min, max int64   // nanoseconds; valid when count > 0
}

const (
	histSubBits  = 7
	histSubCount = 1 << histSubBits // buckets per power of two

	// HistogramMax is the largest latency a Histogram distinguishes.
	HistogramMax = 60 * time.Second
)

// histBuckets is the number of buckets up to HistogramMax.
var histBuckets = histBucket(uint64(HistogramMax)) + 1

// histBucket is v's bucket: v itself below 2*histSubCount; above, the
// bucket's power of two e (v in [2^(e+7), 2^(e+8))) times 128 plus the top
// eight bits of v.
func histBucket(v uint64) int {
	if v < 2*histSubCount {
		return int(v)
	}
	e := bits.Len64(v) - histSubBits - 1
	return e*histSubCount + int(v>>uint(e))
}

// histBounds returns bucket b's range [low, low+width).
func histBounds(b int) (low, width uint64) {
	if b < 2*histSubCount {
		return uint64(b), 1
	}
	e := b/histSubCount - 1
	sub := uint64(b%histSubCount + histSubCount)
	return sub << uint(e), 1 << uint(e)
}

// Record adds one latency. Negative values count as zero.
func (h *Histogram) Record(d time.Duration) {
	v := int64(d)
	if v < 0 {
		v = 0
	}
	if v > int64(HistogramMax) {
		v = int64(HistogramMax)
	}
	if h.counts == nil {
		h.counts = make([]uint64, histBuckets)
	}
	h.counts[histBucket(uint64(v))]++
	if h.count == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.count++
	h.sum += float64(v)
}

// Merge adds every value recorded in o to h.
func (h *Histogram) Merge(o *Histogram) {
	if o == nil || o.count == 0 {
		return
	}
	if h.counts == nil {
		h.counts = make([]uint64, histBuckets)
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.count == 0 || o.min < h.min {
		h.min = o.min
	}
	if o.max > h.max {
		h.max = o.max
	}
	h.count += o.count
	h.sum += o.sum
}

// Count is the number of values recorded.
func (h *Histogram) Count() uint64 { return h.count }

// Min is the smallest value recorded (0 if none).
func (h *Histogram) Min() time.Duration { return time.Duration(h.min) }

// Max is the largest value recorded (0 if none), clamped to HistogramMax.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max) }

// Mean is the average of the values recorded (0 if none).
func (h *Histogram) Mean() time.Duration {
	if h.count == 0 {
		return 0
	}
	return time.Duration(math.Round(h.sum / float64(h.count)))
}

// Quantile returns the value at quantile q (0 <= q <= 1): the midpoint of
// the bucket holding the ceil(q*count)-th smallest value, kept within
// [Min, Max]. It is 0 for an empty histogram.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.count == 0 {
		return 0
	}
	switch {
	case q <= 0:
		return time.Duration(h.min)
	case q >= 1:
		return time.Duration(h.max)
	}
	rank := uint64(math.Ceil(q * float64(h.count)))
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for b, c := range h.counts {
		seen += c
		if seen < rank {
			continue
		}
		low, width := histBounds(b)
		v := int64(low + width/2)
		if width == 1 {
			v = int64(low)
		}
		return time.Duration(min(max(v, h.min), h.max))
	}
	return time.Duration(h.max)
}

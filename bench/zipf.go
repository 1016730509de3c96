package bench

import (
	"math"
	"math/rand/v2"
	"slices"
)

// ZipfianTheta is YCSB's default skew ("zipfian constant").
const ZipfianTheta = 0.99

// Zipfian draws item numbers 0..n-1 with P(i) proportional to 1/(i+1)^theta,
// item 0 the most popular: YCSB's ZipfianGenerator, the method of Gray et
// al., "Quickly Generating Billion-Record Synthetic Databases" (SIGMOD
// 1994), which works for any theta in (0, 1), unlike math/rand/v2's Zipf
// (s > 1). Items 0 and 1 get exactly their share; later ones follow the
// paper's closed-form approximation.
//
// Next is a monotone function of one uniform draw u; a table over 2^16
// equal slices of [0, 1) answers directly wherever a slice maps to a
// single item (some 95% of draws for n = 10000, theta 0.99), sparing the
// math.Pow of the formula, with exactly the formula's results.
//
// A Zipfian is read-only once built: it is safe for concurrent use, each
// caller passing its own *rand.Rand.
type Zipfian struct {
	n         uint64
	theta     float64
	alpha     float64 // 1 / (1 - theta)
	zetan     float64 // zeta(n, theta)
	eta       float64
	halfPowTh float64  // 1 + 0.5^theta
	slices    []uint32 // per slice of u: its item, or zipfMixed
}

const (
	zipfSliceBits = 16
	zipfMixed     = ^uint32(0) // the slice spans several items
)

// NewZipfian returns a generator over n >= 1 items with skew theta in
// (0, 1).
func NewZipfian(n uint64, theta float64) *Zipfian {
	if n < 1 {
		panic("bench: NewZipfian: n < 1")
	}
	if !(theta > 0 && theta < 1) {
		panic("bench: NewZipfian: theta must be in (0, 1)")
	}
	z := &Zipfian{n: n, theta: theta, alpha: 1 / (1 - theta), zetan: zeta(n, theta)}
	zeta2 := zeta(2, theta)
	z.eta = (1 - math.Pow(2/float64(n), 1-theta)) / (1 - zeta2/z.zetan)
	z.halfPowTh = 1 + math.Pow(0.5, theta)
	if n < uint64(zipfMixed) {
		const m = 1 << zipfSliceBits
		z.slices = make([]uint32, m)
		for b := range z.slices {
			lo := z.item(float64(b) / m)
			hi := z.item(math.Nextafter(float64(b+1)/m, 0))
			if lo == hi {
				z.slices[b] = uint32(lo)
			} else {
				z.slices[b] = zipfMixed
			}
		}
	}
	return z
}

// zeta is sum_{i=1..n} 1/i^theta.
func zeta(n uint64, theta float64) float64 {
	var s float64
	for i := uint64(1); i <= n; i++ {
		s += 1 / math.Pow(float64(i), theta)
	}
	return s
}

// Share is the probability of item i (exact for every i; Next's
// approximation is exact for items 0 and 1).
func (z *Zipfian) Share(i uint64) float64 {
	return 1 / math.Pow(float64(i+1), z.theta) / z.zetan
}

// Next draws an item number in [0, n).
func (z *Zipfian) Next(r *rand.Rand) uint64 {
	u := r.Float64()
	if z.slices != nil {
		if v := z.slices[int(u*(1<<zipfSliceBits))]; v != zipfMixed {
			return uint64(v)
		}
	}
	return z.item(u)
}

// item is YCSB's formula: the item for uniform draw u in [0, 1).
func (z *Zipfian) item(u float64) uint64 {
	uz := u * z.zetan
	if uz < 1 {
		return 0
	}
	if uz < z.halfPowTh {
		return 1
	}
	v := uint64(float64(z.n) * math.Pow(z.eta*u-z.eta+1, z.alpha))
	if v >= z.n { // rounding at u close to 1
		v = z.n - 1
	}
	return v
}

// scramble returns a permutation of 0..n-1 that spreads the popular items of
// a Zipfian over the key space, as YCSB's ScrambledZipfianGenerator does by
// hashing item numbers with FNV-1a. YCSB takes the hash modulo n, which
// merges some items and leaves some keys never drawn; ordering the items by
// their hash instead is a bijection, so the key popularities are exactly the
// Zipfian's and the hot keys are still scattered. perm[rank] is the key.
func scramble(n int) []uint32 {
	type kh struct {
		key  uint32
		hash uint64
	}
	hs := make([]kh, n)
	for i := range hs {
		hs[i] = kh{uint32(i), fnv64(uint64(i))}
	}
	slices.SortFunc(hs, func(a, b kh) int {
		switch {
		case a.hash < b.hash:
			return -1
		case a.hash > b.hash:
			return 1
		}
		return int(a.key) - int(b.key)
	})
	perm := make([]uint32, n)
	for rank, h := range hs {
		perm[rank] = h.key
	}
	return perm
}

// fnv64 is FNV-1a over the eight little-endian bytes of v, YCSB's
// Utils.fnvhash64.
func fnv64(v uint64) uint64 {
	const (
		offset = 0xCBF29CE484222325
		prime  = 1099511628211
	)
	h := uint64(offset)
	for i := 0; i < 8; i++ {
		h ^= v & 0xff
		h *= prime
		v >>= 8
	}
	return h
}

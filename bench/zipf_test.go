package bench

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestZipfianShares(t *testing.T) {
	const n, draws = 10000, 2000000
	z := NewZipfian(n, ZipfianTheta)
	// zeta(10000, 0.99) is about 9.9: the most popular item gets ~10%.
	if top := z.Share(0); top < 0.09 || top > 0.115 {
		t.Fatalf("share of item 0 = %v, want about 0.10 for theta 0.99, n 10000", top)
	}
	r := rand.New(rand.NewPCG(7, 8))
	counts := make([]int, n)
	for i := 0; i < draws; i++ {
		v := z.Next(r)
		if v >= n {
			t.Fatalf("draw %d out of range [0, %d)", v, n)
		}
		counts[v]++
	}
	// Items 0 and 1 are drawn with their exact probability; later ones by
	// Gray et al.'s approximation (as in YCSB, which overweights items 2
	// and 3 by some 15%, checked by the head's total below).
	for i, tol := range []float64{0.02, 0.03} {
		got := float64(counts[i]) / draws
		if want := z.Share(uint64(i)); math.Abs(got-want)/want > tol {
			t.Errorf("item %d: share %.4f, want %.4f (±%.0f%%)", i, got, want, 100*tol)
		}
	}
	// The distribution is heavy-headed: the top 1% of items get well over
	// a third of the draws (exactly: sum of the first 100 shares).
	head := 0
	for _, c := range counts[:100] {
		head += c
	}
	var want float64
	for i := uint64(0); i < 100; i++ {
		want += z.Share(i)
	}
	if got := float64(head) / draws; math.Abs(got-want) > 0.03 {
		t.Errorf("top 100 items: share %.3f, want %.3f", got, want)
	}
	// Small n and the extremes of u stay in range.
	for _, m := range []uint64{1, 2, 3} {
		zm := NewZipfian(m, ZipfianTheta)
		for i := 0; i < 10000; i++ {
			if v := zm.Next(r); v >= m {
				t.Fatalf("n=%d: draw %d out of range", m, v)
			}
		}
	}
}

// TestScrambledZipfian checks the key chooser: a permutation, so the most
// popular key gets item 0's share exactly, and the hot keys are scattered
// over the key space rather than being keys 0, 1, 2...
func TestScrambledZipfian(t *testing.T) {
	const n, draws = 10000, 1000000
	ks := newKeySpace(Workload{Name: "C", Distribution: Zipf, Keys: n})
	sorted := slices.Clone(ks.perm)
	slices.Sort(sorted)
	for i, k := range sorted {
		if int(k) != i {
			t.Fatalf("scramble is not a permutation of 0..%d (position %d holds %d)", n-1, i, k)
		}
	}
	r := rand.New(rand.NewPCG(9, 10))
	counts := make([]int, n)
	for i := 0; i < draws; i++ {
		counts[ks.next(r)]++
	}
	top := 0
	for k, c := range counts {
		if c > counts[top] {
			top = k
		}
	}
	want := ks.zipf.Share(0)
	if got := float64(counts[top]) / draws; math.Abs(got-want)/want > 0.03 {
		t.Errorf("most popular key %s: share %.4f, want %.4f", KeyName(top), got, want)
	}
	if top != int(ks.perm[0]) {
		t.Errorf("most popular key is %d, want perm[0] = %d", top, ks.perm[0])
	}
	// The ten hottest keys: spread over the key space, not adjacent.
	hot := slices.Clone(ks.perm[:10])
	slices.Sort(hot)
	if hot[9]-hot[0] < n/2 {
		t.Errorf("hottest keys %v span less than half the key space", hot)
	}
	for i := 1; i < len(hot); i++ {
		if hot[i]-hot[i-1] == 1 {
			t.Errorf("hottest keys %v include neighbours", hot)
			break
		}
	}
	// Each tenth of the key space gets a fair part of the draws (between
	// 2% and 40%; unscrambled, the first tenth would get about 75%).
	for d := 0; d < 10; d++ {
		sum := 0
		for _, c := range counts[d*n/10 : (d+1)*n/10] {
			sum += c
		}
		if f := float64(sum) / draws; f < 0.02 || f > 0.40 {
			t.Errorf("keys %d..%d: share %.3f", d*n/10, (d+1)*n/10-1, f)
		}
	}
}

func TestUniformKeys(t *testing.T) {
	const n, draws = 100, 100000
	ks := newKeySpace(Workload{Name: "C", Distribution: Uniform, Keys: n})
	r := rand.New(rand.NewPCG(1, 1))
	counts := make([]int, n)
	for i := 0; i < draws; i++ {
		counts[ks.next(r)]++
	}
	for k, c := range counts {
		if c < draws/n*8/10 || c > draws/n*12/10 {
			t.Fatalf("key %d drawn %d times of %d, want about %d", k, c, draws, draws/n)
		}
	}
	if ks.names[7] != "user00000007" {
		t.Fatalf("key 7 is named %q", ks.names[7])
	}
}

func BenchmarkZipfianNext(b *testing.B) {
	ks := newKeySpace(Workload{Name: "C", Distribution: Zipf, Keys: 10000})
	r := rand.New(rand.NewPCG(1, 1))
	for b.Loop() {
		ks.next(r)
	}
}

// TestZipfianTable: the slice table gives exactly the formula's item.
func TestZipfianTable(t *testing.T) {
	for _, n := range []uint64{1, 2, 3, 100, 10000, 1000000} {
		z := NewZipfian(n, ZipfianTheta)
		r := rand.New(rand.NewPCG(n, 3))
		direct := 0
		for i := 0; i < 200000; i++ {
			u := r.Float64()
			if i < 1000 { // the slices' edges
				u = math.Nextafter(float64(i+1)/(1<<zipfSliceBits), 0)
				if i%2 == 0 {
					u = float64(i) / (1 << zipfSliceBits)
				}
			}
			want := z.item(u)
			got := want
			if v := z.slices[int(u*(1<<zipfSliceBits))]; v != zipfMixed {
				got = uint64(v)
			} else {
				direct++
			}
			if got != want {
				t.Fatalf("n=%d u=%v: table %d, formula %d", n, u, got, want)
			}
		}
		if n == 10000 && direct > 200000/5 {
			t.Errorf("n=10000: %d of 200000 draws needed the formula, want under 20%%", direct)
		}
	}
}

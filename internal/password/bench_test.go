package password

import "testing"

// The hashes/s these report are the ceiling for POST /login throughput: the
// login benchmark in BENCHMARKS.md is measured against the parallel figure.

func BenchmarkHashOWASP(b *testing.B) {
	h := NewHasher(OWASP(), 1, 0)
	ctx := b.Context()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := h.Hash(ctx, "correct horse battery staple"); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "hashes/s")
}

func BenchmarkHashOWASPParallel(b *testing.B) {
	// Default bounds: NumCPU hashes at once, and a queue that absorbs
	// RunParallel's GOMAXPROCS goroutines, so no call gets ErrBusy.
	h := NewHasher(OWASP(), 0, -1)
	ctx := b.Context()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := h.Hash(ctx, "correct horse battery staple"); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "hashes/s")
}

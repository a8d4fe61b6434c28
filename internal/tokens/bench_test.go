package tokens

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
)

func BenchmarkIssue(b *testing.B) {
	f := newFixture(b)
	c := testClaims()
	b.ReportAllocs()
	defer reportCPU(b)()
	for b.Loop() {
		if _, err := f.k.Issue(c); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkIssueParallel(b *testing.B) {
	f := newFixture(b)
	c := testClaims()
	b.ReportAllocs()
	defer reportCPU(b)()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := f.k.Issue(c); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkVerify(b *testing.B) {
	f := newFixture(b)
	token, err := f.k.Issue(testClaims())
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	defer reportCPU(b)()
	for b.Loop() {
		if _, err := f.k.Verify(ctx, token); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyParallel(b *testing.B) {
	f := newFixture(b)
	token, err := f.k.Issue(testClaims())
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	defer reportCPU(b)()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := f.k.Verify(ctx, token); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkVerifyUncached is the cost of a token's first Verify: the signature
// check and claims parsing that the cache saves on its later ones.
func BenchmarkVerifyUncached(b *testing.B) {
	f := newFixture(b)
	token, err := f.k.Issue(testClaims())
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	defer reportCPU(b)()
	for b.Loop() {
		if _, err := f.k.verify(ctx, token); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyUncachedParallel(b *testing.B) {
	f := newFixture(b)
	token, err := f.k.Issue(testClaims())
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	defer reportCPU(b)()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := f.k.verify(ctx, token); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkRefreshToken(b *testing.B) {
	f := newFixture(b)
	sid := uuid.New()
	b.ReportAllocs()
	defer reportCPU(b)()
	for b.Loop() {
		tok := f.k.RefreshToken(sid, 1)
		if _, _, err := f.k.ParseRefreshToken(tok); err != nil {
			b.Fatal(err)
		}
	}
}

// reportCPU adds the process CPU time per operation, which unlike ns/op does
// not grow when other work shares the machine.
func reportCPU(b *testing.B) func() {
	start := cpuTime(b)
	return func() {
		b.ReportMetric(float64((cpuTime(b)-start).Nanoseconds())/float64(b.N), "cpu-ns/op")
	}
}

func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

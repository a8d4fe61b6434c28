package ratelimit

// Benchmarks of Allow: one round trip each, except for the refusals of a key
// the instance already knows is over its limit. Run with
// go test -run '^$' -bench Allow ./ratelimit/

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authd/authd/internal/testenv"
)

func BenchmarkAllow(b *testing.B) {
	pool, _ := testenv.Database(b)
	l := New(pool, testSecret, time.Now)
	ctx := context.Background()
	// High enough that every request is allowed.
	lim := Limit{Requests: 1 << 30, Window: time.Minute}
	var seq atomic.Int64
	manyKeys := func() string { return "ip:bench:" + strconv.FormatInt(seq.Add(1)%100_000, 10) }
	oneKey := func() string { return "ip:bench:hot" }

	for _, bc := range []struct {
		name string
		key  func() string
	}{{"one_key", oneKey}, {"many_keys", manyKeys}} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				if _, _, err := l.Allow(ctx, bc.key(), lim); err != nil {
					b.Fatal(err)
				}
			}
		})
		// 16 clients per core: one key serialises on its row's lock, many
		// keys do not.
		b.Run(bc.name+"_parallel", func(b *testing.B) {
			b.SetParallelism(16)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, _, err := l.Allow(ctx, bc.key(), lim); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkAllowFlood is a flood from one address, over its limit: after the
// first refusal the instance answers from memory.
func BenchmarkAllowFlood(b *testing.B) {
	pool, _ := testenv.Database(b)
	l := New(pool, testSecret, time.Now)
	ctx := context.Background()
	lim := Limit{Requests: 10, Window: time.Hour}
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, _, err := l.Allow(ctx, "ip:bench:flood", lim); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

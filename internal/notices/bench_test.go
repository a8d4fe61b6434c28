package notices

// Benchmarks of the notices consumer. They run only with -bench; see
// BENCHMARKS.md for the commands and the figures on the reference machine.

import (
	"context"
	"testing"
	"time"

	"github.com/authd/authd/domain"
)

// BenchmarkNoticeThroughput is one instance sending b.N notices that are
// waiting in the stream when it starts: ns/op is the time per notice, from
// the stream to Mailpit's acceptance and the mark in Postgres.
func BenchmarkNoticeThroughput(b *testing.B) {
	f := newFixture(b)
	for range b.N {
		f.add(b, domain.TwoFactorStream(f.user), stranger, time.Now(), &domain.TotpEnabled{UserID: f.user, Step: 1})
	}
	f.relayed(b)
	c := f.consumer(b, Config{}, nil)
	b.ResetTimer()
	run(b, c)
	f.settled(b, "authd_notices")
	b.StopTimer()
}

// BenchmarkNoticeLagAt100PerSecond appends 100 notices a second for 10
// seconds while one instance sends them, and reports the lag from each
// event's time to its mail's acceptance by SMTP (marked sent in Postgres)
// at the 50th and 99th percentile. Run it with -benchtime=1x.
func BenchmarkNoticeLagAt100PerSecond(b *testing.B) {
	f := newFixture(b)
	run(b, f.consumer(b, Config{}, nil))
	b.ResetTimer()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for range 1000 {
		<-tick.C
		f.add(b, domain.TwoFactorStream(f.user), stranger, time.Now(), &domain.TotpEnabled{UserID: f.user, Step: 1})
	}
	f.settled(b, "authd_notices")
	b.StopTimer()
	var p50, p99 float64
	if err := f.pool.QueryRow(context.Background(), `SELECT
		percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM n.updated_at - e.occurred_at)),
		percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM n.updated_at - e.occurred_at))
		FROM notices_sent n JOIN events e ON e.id = n.event_id WHERE n.state = 'sent'`).Scan(&p50, &p99); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(p50*1000, "p50_lag_ms")
	b.ReportMetric(p99*1000, "p99_lag_ms")
}

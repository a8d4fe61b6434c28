package eventstore_test

// Benchmarks of the append path. They run only with -bench; see BENCHMARKS.md
// for the commands and the figures on the reference machine.

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/internal/pgpool"
	"github.com/authd/authd/internal/testenv"
)

// benchMetadata is the "who caused it" part of a registration, about the size
// of the metadata in bench/pgbench-insert.sql.
var benchMetadata = eventstore.Metadata{
	IP:        "203.0.113.42",
	UserAgent: "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
	RequestID: "6f1c2a9e-3b7d-4e58-9a0c-1d2e3f4a5b6c",
}

// benchSecret is the sealed part of a registration: a password hash, set
// directly so as not to depend on the name of the domain's secret type.
var benchSecret = json.RawMessage(`{"password_hash":"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"}`)

// benchRegistration is one UserRegistered event as a command would append it:
// ~200 bytes of public data and a small sealed secret (a password hash).
func benchRegistration(tenant uuid.UUID) (string, eventstore.Event) {
	id := uuid.New()
	e, err := eventstore.Encode(&domain.UserRegistered{
		UserID:   id,
		TenantID: tenant,
		Email:    "bench.user." + id.String()[:8] + "@example.com",
		Name:     "Bench User With A Reasonably Long Display Name",
	})
	if err != nil {
		panic(err) // a fixed event always encodes; this runs outside the benchmark's goroutine
	}
	e.TenantID, e.UserID, e.Metadata = tenant, id, benchMetadata
	e.Secret = benchSecret
	return "user-" + id.String(), e
}

// benchStore opens a fresh migrated database with a pool of maxConns
// connections (the test pool has 20, fewer than the 32 writers), warmed up.
func benchStore(b *testing.B, maxConns int32) (*eventstore.Store, *pgxpool.Pool) {
	b.Helper()
	_, url := testenv.Database(b)
	ctx := context.Background()
	pool, err := pgpool.Open(ctx, url, maxConns)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	// Open every connection now, so no benchmark pays for connecting.
	conns := make([]*pgxpool.Conn, 0, maxConns)
	for range maxConns {
		c, err := pool.Acquire(ctx)
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, c)
	}
	for _, c := range conns {
		c.Release()
	}
	return eventstore.NewStore(pool, testenv.Sealer(b), nil), pool
}

// BenchmarkAppend measures committed appends per second: each op is one
// UserRegistered event appended to a new stream (expected version 0), sealed
// secret included, spread over the given number of concurrent writers, each
// with its own connection. Compare appends/s with bench/raw-insert.sh at the
// same client count.
func BenchmarkAppend(b *testing.B) {
	// One database for the three sub-benchmarks: a sub-benchmark's function
	// runs several times with a growing b.N, and a database made inside it
	// would be dropped and made again between the runs.
	store, _ := benchStore(b, 32)
	for _, writers := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			benchAppend(b, store, writers)
		})
	}
}

func benchAppend(b *testing.B, store *eventstore.Store, writers int) {
	ctx := context.Background()
	tenant := uuid.New()
	var next atomic.Int64
	var failed atomic.Value
	var wg sync.WaitGroup
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				stream, e := benchRegistration(tenant)
				if _, err := store.Append(ctx, stream, 0, e); err != nil {
					failed.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "appends/s")
}

// BenchmarkRelay measures the relay's throughput: each op relays a log of
// relayBenchEvents registrations, each of its own user, from the start of
// the log to a new stream on the machine's NATS, and stops the relay (which
// saves its checkpoint). The log is appended once, outside the timing.
func BenchmarkRelay(b *testing.B) {
	const relayBenchEvents, perAppend = 20000, 100
	store, pool := benchStore(b, 8)
	ctx := context.Background()
	tenant := uuid.New()
	for i := range relayBenchEvents / perAppend {
		batch := make([]eventstore.Event, perAppend)
		for j := range batch {
			_, batch[j] = benchRegistration(tenant)
		}
		if _, err := store.Append(ctx, fmt.Sprintf("bench-relay-%d", i), 0, batch...); err != nil {
			b.Fatal(err)
		}
	}
	var elapsed time.Duration
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		bus := testenv.NATS(b, testenv.MachineNATS)
		stream, err := bus.EnsureStream(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := pool.Exec(ctx, `UPDATE relay_checkpoint SET tx_id = '0', position = 0`); err != nil {
			b.Fatal(err)
		}
		if _, err := pool.Exec(ctx, `TRUNCATE stream_messages`); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		r := eventstore.NewRelay(store, bus, eventstore.RelayConfig{}, slog.New(slog.DiscardHandler), nil)
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { r.Run(runCtx); close(done) }()
		for {
			info, err := stream.Info(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if info.State.LastSeq >= relayBenchEvents {
				break
			}
			time.Sleep(time.Millisecond)
		}
		cancel()
		<-done
		elapsed += time.Since(start)
	}
	b.ReportMetric(float64(b.N*relayBenchEvents)/elapsed.Seconds(), "events/s")
}

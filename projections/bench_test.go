package projections_test

// Benchmarks of the read side: how long an appended event takes to reach the
// users read model, how long a command waits for read-your-writes, and how
// fast a projection rebuilds from the log. They run only with -bench; see
// BENCHMARKS.md for the commands and the figures on the reference machine.
//
// The lag benchmarks do a fixed amount of work (a steady rate for a fixed
// time) whatever b.N is; run them with -benchtime=1x.
//
// Environment knobs (all optional):
//
//	AUTHD_BENCH_RATE=1000          appends per second of the loaded runs
//	AUTHD_BENCH_SECONDS=10         length of each loaded or sequential run
//	AUTHD_BENCH_NATS=embedded      or "machine" for the machine's nats-server
//	AUTHD_BENCH_REBUILD_USERS=500000  users seeded for BenchmarkRebuild1M (2 events each)
//	AUTHD_BENCH_REBUILD_BATCHES=5000,10000,20000
//	AUTHD_BENCH_REBUILD_CPUPROFILE=file  CPU profile of the rebuilds only (not the seeding)

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/internal/natsbus"
	"github.com/authd/authd/internal/testenv"
	"github.com/authd/authd/projections"
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func benchNATS() testenv.NATSServer {
	if os.Getenv("AUTHD_BENCH_NATS") == string(testenv.MachineNATS) {
		return testenv.MachineNATS
	}
	return testenv.EmbeddedNATS
}

var benchMetadata = eventstore.Metadata{
	IP:        "203.0.113.42",
	UserAgent: "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
	RequestID: "6f1c2a9e-3b7d-4e58-9a0c-1d2e3f4a5b6c",
}

// benchSecret is the sealed part of a registration: a password hash, set
// directly so as not to depend on the name of the domain's secret type.
var benchSecret = json.RawMessage(`{"password_hash":"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"}`)

// registration is a new user's UserRegistered event as a command appends it.
func registration(id, tenant uuid.UUID) eventstore.Event {
	e, err := eventstore.Encode(&domain.UserRegistered{
		UserID:   id,
		TenantID: tenant,
		Email:    "bench.user." + id.String() + "@example.com",
		Name:     "Bench User " + id.String()[:8],
	})
	if err != nil {
		panic(err) // a fixed event always encodes
	}
	e.TenantID, e.UserID, e.Metadata = tenant, id, benchMetadata
	e.Secret = benchSecret
	return e
}

func verification(id, tenant uuid.UUID) eventstore.Event {
	e, err := eventstore.Encode(domain.EmailVerified{UserID: id})
	if err != nil {
		panic(err)
	}
	e.TenantID, e.UserID, e.Metadata = tenant, id, benchMetadata
	return e
}

// pipeline is a running write-to-read path: store, relay, JetStream, runner.
type pipeline struct {
	pool   *pgxpool.Pool
	bus    *natsbus.Bus
	store  *eventstore.Store
	runner *projections.Runner
	reg    *prometheus.Registry
	tenant uuid.UUID
}

// startPipeline runs a relay and a runner with their default configuration
// on a fresh database and stream, and waits until an event gets through.
func startPipeline(b *testing.B) *pipeline {
	b.Helper()
	pool, _ := testenv.Database(b)
	bus := testenv.NATS(b, benchNATS())
	p := &pipeline{pool: pool, bus: bus, reg: prometheus.NewRegistry(), tenant: uuid.New()}
	p.start(b)
	for range 20 {
		if _, err := p.appendAndWait(context.Background()); err != nil {
			b.Fatalf("warm-up: %v (statuses %+v)", err, p.runner.Statuses())
		}
	}
	return p
}

// secondInstance starts another instance's store, relay and runner on p's
// database and stream, as a second authd would: the first keeps the lead.
func (p *pipeline) secondInstance(b *testing.B) *pipeline {
	b.Helper()
	other := &pipeline{pool: p.pool, bus: p.bus, reg: prometheus.NewRegistry(), tenant: p.tenant}
	other.start(b)
	return other
}

// start runs a relay and a runner of p's own, with default configurations.
func (p *pipeline) start(b *testing.B) {
	b.Helper()
	log := slog.New(slog.DiscardHandler)
	p.store = eventstore.NewStore(p.pool, testenv.Sealer(b), nil)
	relay := eventstore.NewRelay(p.store, p.bus, eventstore.RelayConfig{}, log, nil)
	p.runner = projections.NewRunner(p.pool, p.bus, projections.All(), projections.Config{}, log, p.reg)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); relay.Run(ctx) }()
	go func() { defer wg.Done(); p.runner.Run(ctx) }()
	b.Cleanup(func() { cancel(); wg.Wait() }) // before the bus closes and the database is dropped
}

// sample is one registration's way through the pipeline.
type sample struct {
	start    time.Time // just before Append
	appended time.Time // Append returned
	waited   time.Time // Wait for its cursor returned
}

func (s sample) endToEnd() time.Duration { return s.waited.Sub(s.start) }
func (s sample) wait() time.Duration     { return s.waited.Sub(s.appended) }
func (s sample) append() time.Duration   { return s.appended.Sub(s.start) }

// appendAndWait registers one user and waits, as a command does, until the
// users projection has applied it.
func (p *pipeline) appendAndWait(ctx context.Context) (sample, error) {
	id := uuid.New()
	e := registration(id, p.tenant)
	var s sample
	s.start = time.Now()
	c, err := p.store.Append(ctx, "user-"+id.String(), 0, e)
	s.appended = time.Now()
	if err != nil {
		return s, err
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err = p.runner.Wait(wctx, projections.Users{}, c.Last)
	s.waited = time.Now()
	return s, err
}

// loaded registers users at a steady rate for d: a pacer hands each tick to
// a pool of workers, so a slow append does not hold the next one back. It
// returns the rate at which appends were started.
func (p *pipeline) loaded(b *testing.B, rate int, d time.Duration) (samples []sample, achieved float64) {
	b.Helper()
	total := int(float64(rate) * d.Seconds())
	ticks := make(chan struct{}, total)
	results := make(chan sample, total)
	var failed atomic.Value
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range ticks {
				s, err := p.appendAndWait(context.Background())
				if err != nil {
					failed.CompareAndSwap(nil, err)
					continue
				}
				results <- s
			}
		}()
	}
	// A pacer rather than a time.Ticker: a ticker drops ticks whenever this
	// goroutine is late, which would quietly lower the rate on a busy machine.
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	for i := range total {
		time.Sleep(time.Until(start.Add(time.Duration(i) * interval)))
		ticks <- struct{}{}
	}
	dispatched := time.Since(start)
	close(ticks)
	wg.Wait()
	close(results)
	if err, _ := failed.Load().(error); err != nil {
		b.Fatalf("loaded run: %v (statuses %+v)", err, p.runner.Statuses())
	}
	for s := range results {
		samples = append(samples, s)
	}
	return samples, float64(len(samples)) / dispatched.Seconds()
}

// sequential registers users one after the other, each waiting for its
// projection before the next append, for d.
func (p *pipeline) sequential(b *testing.B, d time.Duration) []sample {
	b.Helper()
	var samples []sample
	for end := time.Now().Add(d); time.Now().Before(end); {
		s, err := p.appendAndWait(context.Background())
		if err != nil {
			b.Fatalf("sequential run: %v (statuses %+v)", err, p.runner.Statuses())
		}
		samples = append(samples, s)
	}
	return samples
}

// quantile of durations, nearest rank, in milliseconds.
func quantile(ds []time.Duration, q float64) float64 {
	if len(ds) == 0 {
		return math.NaN()
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return float64(s[max(i, 0)]) / float64(time.Millisecond)
}

func durations(samples []sample, f func(sample) time.Duration) []time.Duration {
	out := make([]time.Duration, len(samples))
	for i, s := range samples {
		out[i] = f(s)
	}
	return out
}

// applyDelay returns the runner's authd_projection_apply_delay_seconds
// histogram of the users projection: cumulative counts per upper bound.
func (p *pipeline) applyDelay(b *testing.B) (bounds []float64, counts []uint64) {
	b.Helper()
	mfs, err := p.reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "authd_projection_apply_delay_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			users := false
			for _, l := range m.GetLabel() {
				users = users || (l.GetName() == "projection" && l.GetValue() == "users")
			}
			if !users {
				continue
			}
			for _, bk := range m.GetHistogram().GetBucket() {
				bounds = append(bounds, bk.GetUpperBound())
				counts = append(counts, bk.GetCumulativeCount())
			}
			bounds = append(bounds, math.Inf(1))
			counts = append(counts, m.GetHistogram().GetSampleCount())
		}
	}
	if bounds == nil {
		b.Fatal("no authd_projection_apply_delay_seconds{projection=users} histogram")
	}
	return bounds, counts
}

// histogramQuantile interpolates linearly inside the bucket, as Prometheus's
// histogram_quantile does, over the counts after minus before; milliseconds.
func histogramQuantile(q float64, bounds []float64, before, after []uint64) float64 {
	total := after[len(after)-1] - before[len(before)-1]
	if total == 0 {
		return math.NaN()
	}
	rank := q * float64(total)
	lower, prev := 0.0, 0.0
	for i, ub := range bounds {
		c := float64(after[i] - before[i])
		if c >= rank {
			if math.IsInf(ub, 1) {
				return lower * 1000 // above the last bound: report the bound
			}
			return 1000 * (lower + (ub-lower)*(rank-prev)/max(c-prev, 1e-9))
		}
		lower, prev = ub, c
	}
	return math.NaN()
}

// BenchmarkEndToEndLag appends one new user's UserRegistered per append at a
// steady rate (1,000/s for 10 s) with the relay and the runner running on
// embedded NATS, and reports, per event, the time from just before Append to
// the return of Runner.Wait for its cursor (e2e), and the apply delay (the
// projection's commit minus the event's OccurredAt) from the runner's
// histogram. Run with -benchtime=1x.
func BenchmarkEndToEndLag(b *testing.B) {
	rate := envInt("AUTHD_BENCH_RATE", 1000)
	d := time.Duration(envInt("AUTHD_BENCH_SECONDS", 10)) * time.Second
	p := startPipeline(b)
	bounds, before := p.applyDelay(b)
	b.ResetTimer()
	samples, achieved := p.loaded(b, rate, d)
	b.StopTimer()
	_, after := p.applyDelay(b)

	e2e := durations(samples, sample.endToEnd)
	b.ReportMetric(achieved, "events/s")
	b.ReportMetric(quantile(e2e, 0.50), "e2e_p50_ms")
	b.ReportMetric(quantile(e2e, 0.99), "e2e_p99_ms")
	b.ReportMetric(quantile(e2e, 1), "e2e_max_ms")
	b.ReportMetric(histogramQuantile(0.50, bounds, before, after), "apply_delay_p50_ms")
	b.ReportMetric(histogramQuantile(0.99, bounds, before, after), "apply_delay_p99_ms")
	b.ReportMetric(quantile(durations(samples, sample.append), 0.99), "append_p99_ms")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkReadYourWritesWait reports the time a command spends in
// Runner.Wait after its append returned: under a steady 1,000 appends/s
// ("loaded") and with one append at a time ("sequential"). Run with
// -benchtime=1x.
func BenchmarkReadYourWritesWait(b *testing.B) {
	rate := envInt("AUTHD_BENCH_RATE", 1000)
	d := time.Duration(envInt("AUTHD_BENCH_SECONDS", 10)) * time.Second
	report := func(b *testing.B, samples []sample) {
		w := durations(samples, sample.wait)
		b.ReportMetric(quantile(w, 0.50), "wait_p50_ms")
		b.ReportMetric(quantile(w, 0.99), "wait_p99_ms")
		b.ReportMetric(quantile(w, 1), "wait_max_ms")
		b.ReportMetric(quantile(durations(samples, sample.append), 0.50), "append_p50_ms")
		b.ReportMetric(0, "ns/op")
	}
	b.Run("loaded", func(b *testing.B) {
		p := startPipeline(b)
		b.ResetTimer()
		samples, achieved := p.loaded(b, rate, d)
		b.StopTimer()
		b.ReportMetric(achieved, "events/s")
		report(b, samples)
	})
	b.Run("sequential", func(b *testing.B) {
		p := startPipeline(b)
		b.ResetTimer()
		samples := p.sequential(b, d)
		b.StopTimer()
		b.ReportMetric(float64(len(samples))/d.Seconds(), "events/s")
		report(b, samples)
	})
	// One append at a time through an instance that neither relays nor
	// applies the projection, as half the commands are with two instances.
	b.Run("sequential-other-instance", func(b *testing.B) {
		other := startPipeline(b).secondInstance(b)
		b.ResetTimer()
		samples := other.sequential(b, d)
		b.StopTimer()
		b.ReportMetric(float64(len(samples))/d.Seconds(), "events/s")
		report(b, samples)
	})
}

// rebuildRequested reports whether -bench names BenchmarkRebuild1M itself,
// so that -bench . does not seed a million events.
func rebuildRequested() bool {
	f := flag.Lookup("test.bench")
	return f != nil && strings.Contains(f.Value.String(), "Rebuild1M")
}

// BenchmarkRebuild1M seeds 500,000 users' UserRegistered and then their
// EmailVerified (1,000,000 events, real ones written by Store.Write in
// changes of 1,000 streams), then times projections.Rebuild of the users
// projection at several batch sizes and reports events/s. It runs only when
// -bench names it: go test ./projections -run XXX -bench Rebuild1M -benchtime 1x
func BenchmarkRebuild1M(b *testing.B) {
	if testing.Short() || !rebuildRequested() {
		b.Skip("seeds 1,000,000 events and takes minutes: run with -bench=Rebuild1M -benchtime=1x")
	}
	users := envInt("AUTHD_BENCH_REBUILD_USERS", 500_000)
	pool, _ := testenv.Database(b)
	store := eventstore.NewStore(pool, testenv.Sealer(b), nil)
	ctx := context.Background()

	start := time.Now()
	seedUsers(b, store, users)
	seeded := time.Since(start)
	// A log that old has been vacuumed and analyzed; a fresh one has not.
	if _, err := pool.Exec(ctx, `VACUUM ANALYZE events`); err != nil {
		b.Fatal(err)
	}
	var events int64
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM events`).Scan(&events); err != nil {
		b.Fatal(err)
	}
	var size string
	if err := pool.QueryRow(ctx, `SELECT pg_size_pretty(pg_total_relation_size('events'))`).Scan(&size); err != nil {
		b.Fatal(err)
	}
	b.Logf("seeded %d events (%s with indexes) in %s (%.0f events/s), vacuumed in %s",
		events, size, seeded.Round(time.Millisecond), float64(events)/seeded.Seconds(), (time.Since(start) - seeded).Round(time.Millisecond))

	if path := os.Getenv("AUTHD_BENCH_REBUILD_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			b.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { pprof.StopCPUProfile(); f.Close() })
	}

	for _, bs := range strings.Split(os.Getenv("AUTHD_BENCH_REBUILD_BATCHES"), ",") {
		batch, _ := strconv.Atoi(bs)
		if bs == "" {
			for _, batch := range []int{5000, 10000, 20000} {
				benchRebuild(b, pool, store, batch, events, users)
			}
			break
		}
		benchRebuild(b, pool, store, batch, events, users)
	}
}

func benchRebuild(b *testing.B, pool *pgxpool.Pool, store *eventstore.Store, batch int, events int64, users int) {
	b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
		ctx := context.Background()
		b.ResetTimer()
		for range b.N {
			stats, err := projections.Rebuild(ctx, pool, store, projections.Users{}, batch, nil)
			if err != nil {
				b.Fatal(err)
			}
			if stats.Events != events {
				b.Fatalf("rebuild applied %d events, the log holds %d", stats.Events, events)
			}
		}
		b.StopTimer()
		b.ReportMetric(float64(events)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
		var n, verified int
		if err := pool.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE email_verified) FROM users`).Scan(&n, &verified); err != nil {
			b.Fatal(err)
		}
		if n != users || verified != users {
			b.Fatalf("rebuilt read model has %d users, %d verified; want %d and %d", n, verified, users, users)
		}
	})
}

// seedUsers appends n users' UserRegistered, then, in later transactions,
// their EmailVerified, through Store.Write: changes of up to 1,000 new streams
// of one event each, written by several goroutines.
func seedUsers(b *testing.B, store *eventstore.Store, n int) {
	b.Helper()
	const perChange = 1000
	const writers = 4
	ids := make([]uuid.UUID, n)
	for i := range ids {
		ids[i] = uuid.New()
	}
	tenant := uuid.New()
	phase := func(expected int64, event func(id, tenant uuid.UUID) eventstore.Event) {
		var next atomic.Int64
		var failed atomic.Value
		var wg sync.WaitGroup
		for range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					lo := int(next.Add(perChange)) - perChange
					if lo >= n {
						return
					}
					hi := min(lo+perChange, n)
					ch := eventstore.Change{Appends: make([]eventstore.StreamAppend, 0, hi-lo)}
					for _, id := range ids[lo:hi] {
						ch.Appends = append(ch.Appends, eventstore.StreamAppend{
							Stream: "user-" + id.String(), Expected: expected,
							Events: []eventstore.Event{event(id, tenant)},
						})
					}
					if _, err := store.Write(context.Background(), ch); err != nil {
						failed.CompareAndSwap(nil, err)
						return
					}
				}
			}()
		}
		wg.Wait()
		if err, _ := failed.Load().(error); err != nil {
			b.Fatalf("seed: %v", err)
		}
	}
	phase(0, registration)
	phase(1, verification)
}

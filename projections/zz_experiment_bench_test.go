package projections_test

// TEMPORARY experiment; deleted before hand-over.

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/projections"
	"github.com/authd/authd/testenv"
)

// usersPG is projections.Users with pgtype.UUID arrays instead of []uuid.UUID.
type usersPG struct{}

func (usersPG) Name() string     { return "users" }
func (usersPG) Tables() []string { return []string{"users"} }

type row struct {
	id, tenant     uuid.UUID
	email, name    string
	verified       bool
	created, moved time.Time
}

func pgu(id uuid.UUID) pgtype.UUID { return pgtype.UUID{Bytes: id, Valid: true} }

func (usersPG) Apply(ctx context.Context, tx pgx.Tx, events []eventstore.Event) error {
	created := map[uuid.UUID]*row{}
	var order []uuid.UUID
	verified := map[uuid.UUID]time.Time{}
	for _, e := range events {
		switch e.Type {
		case domain.TypeUserRegistered:
			var v domain.UserRegistered
			if err := json.Unmarshal(e.Data, &v); err != nil {
				return err
			}
			created[v.UserID] = &row{id: v.UserID, tenant: v.TenantID, email: v.Email, name: v.Name, created: e.OccurredAt, moved: e.OccurredAt}
			order = append(order, v.UserID)
		case domain.TypeEmailVerified:
			var v domain.EmailVerified
			if err := json.Unmarshal(e.Data, &v); err != nil {
				return err
			}
			if r, ok := created[v.UserID]; ok {
				r.verified, r.moved = true, e.OccurredAt
			} else {
				verified[v.UserID] = e.OccurredAt
			}
		}
	}
	if len(order) > 0 {
		n := len(order)
		ids, tenants := make([]pgtype.UUID, n), make([]pgtype.UUID, n)
		emails, names := make([]string, n), make([]string, n)
		flags := make([]bool, n)
		createdAt, updatedAt := make([]time.Time, n), make([]time.Time, n)
		for i, id := range order {
			r := created[id]
			ids[i], tenants[i], emails[i], names[i], flags[i], createdAt[i], updatedAt[i] = pgu(r.id), pgu(r.tenant), r.email, r.name, r.verified, r.created, r.moved
		}
		if _, err := tx.Exec(ctx, `INSERT INTO users (id, tenant_id, email, name, email_verified, created_at, updated_at)
			SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::bool[], $6::timestamptz[], $7::timestamptz[])`,
			ids, tenants, emails, names, flags, createdAt, updatedAt); err != nil {
			return err
		}
	}
	if len(verified) > 0 {
		ids, at := make([]pgtype.UUID, 0, len(verified)), make([]time.Time, 0, len(verified))
		names, flags := make([]*string, 0, len(verified)), make([]bool, 0, len(verified))
		for id, t := range verified {
			ids, at, names, flags = append(ids, pgu(id)), append(at, t), append(names, nil), append(flags, true)
		}
		tag, err := tx.Exec(ctx, `UPDATE users u
		SET name = coalesce(v.name, u.name), email_verified = u.email_verified OR v.verified, updated_at = v.at
		FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::bool[]) AS v(id, at, name, verified)
		WHERE u.id = v.id`, ids, at, names, flags)
		if err != nil {
			return err
		}
		if tag.RowsAffected() != int64(len(ids)) {
			return fmt.Errorf("unknown users")
		}
	}
	return nil
}

// loop emulates Rebuild's main loop into a scratch table (no swap), reading
// the next batch while the current one is applied when pipelined.
func loop(b *testing.B, pool interface {
	Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
}, store *eventstore.Store, p projections.Projection, batch int, pipelined bool, with string) time.Duration {
	ctx := context.Background()
	pp := pool.(*pgxpool.Pool)
	for _, q := range []string{`DROP SCHEMA IF EXISTS exp CASCADE`, `CREATE SCHEMA exp`, `CREATE TABLE exp.users (LIKE public.users INCLUDING ALL)` + with} {
		if _, err := pp.Exec(ctx, q); err != nil {
			b.Fatal(err)
		}
	}
	apply := func(evs []eventstore.Event) {
		if err := pgx.BeginFunc(ctx, pp, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SET LOCAL search_path TO exp, public`); err != nil {
				return err
			}
			return p.Apply(ctx, tx, evs)
		}); err != nil {
			b.Fatal(err)
		}
	}
	start := time.Now()
	type res struct {
		evs []eventstore.Event
		err error
	}
	read := func(c eventstore.Cursor) <-chan res {
		ch := make(chan res, 1)
		go func() { evs, err := store.ReadLog(ctx, c, batch); ch <- res{evs, err} }()
		return ch
	}
	next := read(eventstore.Cursor{})
	for {
		r := <-next
		if r.err != nil {
			b.Fatal(r.err)
		}
		if len(r.evs) == 0 {
			break
		}
		c := r.evs[len(r.evs)-1].Commit
		if pipelined {
			next = read(c)
			apply(r.evs)
		} else {
			apply(r.evs)
			next = read(c)
		}
	}
	return time.Since(start)
}

func BenchmarkZZExperiment(b *testing.B) {
	users := envInt("AUTHD_BENCH_REBUILD_USERS", 100_000)
	pool, _ := testenv.Database(b)
	store := eventstore.NewStore(pool, newSealer(b), nil)
	ctx := context.Background()
	seedUsers(b, store, users)
	if _, err := pool.Exec(ctx, `VACUUM ANALYZE events`); err != nil {
		b.Fatal(err)
	}
	n := float64(2 * users)
	const batch = 10000
	for round := 0; round < 3; round++ {
		for _, v := range []struct {
			name      string
			p         projections.Projection
			pipelined bool
			with      string
		}{
			{"Users serial", projections.Users{}, false, ""},
			{"usersPG serial", usersPG{}, false, ""},
			{"Users pipelined", projections.Users{}, true, ""},
			{"Users ff80", projections.Users{}, false, " WITH (fillfactor = 80)"},
			{"usersPG pipelined ff80", usersPG{}, true, " WITH (fillfactor = 80)"},
		} {
			d := loop(b, pool, store, v.p, batch, v.pipelined, v.with)
			b.Logf("%-24s %6.2fs %7.0f events/s  load %s", v.name, d.Seconds(), n/d.Seconds(), loadavg())
		}
	}
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

func startPipelineWith(b *testing.B, ps []projections.Projection, relayCfg eventstore.RelayConfig) *pipeline {
	b.Helper()
	pool, _ := testenv.Database(b)
	bus := testenv.NATS(b, benchNATS())
	log := slog.New(slog.DiscardHandler)
	p := &pipeline{pool: pool, reg: prometheus.NewRegistry(), tenant: uuid.New()}
	p.store = eventstore.NewStore(pool, newSealer(b), nil)
	relay := eventstore.NewRelay(p.store, bus, relayCfg, log, nil)
	p.runner = projections.NewRunner(pool, bus, ps, projections.Config{}, log, p.reg)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); relay.Run(ctx) }()
	go func() { defer wg.Done(); p.runner.Run(ctx) }()
	b.Cleanup(func() { cancel(); wg.Wait() })
	for range 20 {
		if _, err := p.appendAndWait(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	return p
}

func BenchmarkZZSequential(b *testing.B) {
	for round := 0; round < 2; round++ {
		for _, v := range []struct {
			name string
			ps   []projections.Projection
			poll time.Duration
		}{
			{"All() poll=100ms", projections.All(), 0},
			{"Users only poll=100ms", []projections.Projection{projections.Users{}}, 0},
			{"All() poll=5ms", projections.All(), 5 * time.Millisecond},
		} {
			b.Run(fmt.Sprintf("%d", round), func(b *testing.B) {
				p := startPipelineWith(b, v.ps, eventstore.RelayConfig{Poll: v.poll})
				samples := p.sequential(b, 5*time.Second)
				w := durations(samples, sample.wait)
				slow := 0
				for _, d := range w {
					if d > 40*time.Millisecond {
						slow++
					}
				}
				b.Logf("%-24s n=%d wait p50 %.2f p99 %.2f max %.2f ms, >40ms: %d  load %s", v.name, len(w), quantile(w, .5), quantile(w, .99), quantile(w, 1), slow, loadavg())
			})
		}
	}
}

func BenchmarkZZDiag(b *testing.B) {
	pool, _ := testenv.Database(b)
	bus := testenv.NATS(b, benchNATS())
	log := slog.New(slog.DiscardHandler)
	p := &pipeline{pool: pool, reg: prometheus.NewRegistry(), tenant: uuid.New()}
	p.store = eventstore.NewStore(pool, newSealer(b), nil)
	relay := eventstore.NewRelay(p.store, bus, eventstore.RelayConfig{}, log, nil)
	p.runner = projections.NewRunner(pool, bus, projections.All(), projections.Config{}, log, p.reg)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); relay.Run(ctx) }()
	go func() { defer wg.Done(); p.runner.Run(ctx) }()
	b.Cleanup(func() { cancel(); wg.Wait() })
	type mark struct {
		at               time.Time
		pub, users, sess eventstore.Cursor
	}
	var mu sync.Mutex
	var marks []mark
	go func() {
		for ctx.Err() == nil {
			st := p.runner.Statuses()
			m := mark{at: time.Now(), pub: relay.Published(), users: st[0].Checkpoint, sess: st[1].Checkpoint}
			mu.Lock()
			if len(marks) == 0 || marks[len(marks)-1].pub != m.pub || marks[len(marks)-1].users != m.users || marks[len(marks)-1].sess != m.sess {
				marks = append(marks, m)
			}
			mu.Unlock()
			time.Sleep(200 * time.Microsecond)
		}
	}()
	for range 20 {
		p.appendAndWait(context.Background())
	}
	type rec struct {
		s sample
		c eventstore.Cursor
	}
	var recs []rec
	for end := time.Now().Add(8 * time.Second); time.Now().Before(end); {
		id := uuid.New()
		var s sample
		s.start = time.Now()
		c, err := p.store.Append(ctx, "user-"+id.String(), 0, registration(id, p.tenant))
		s.appended = time.Now()
		if err != nil {
			b.Fatal(err)
		}
		if err := p.runner.Wait(ctx, "users", c.Last); err != nil {
			b.Fatal(err)
		}
		s.waited = time.Now()
		recs = append(recs, rec{s, c.Last})
	}
	mu.Lock()
	defer mu.Unlock()
	first := func(f func(mark) bool) time.Time {
		for _, m := range marks {
			if f(m) {
				return m.at
			}
		}
		return time.Time{}
	}
	slow := 0
	for _, r := range recs {
		if r.s.wait() < 30*time.Millisecond {
			continue
		}
		slow++
		if slow > 15 {
			continue
		}
		pub := first(func(m mark) bool { return !m.pub.Before(r.c) })
		us := first(func(m mark) bool { return !m.users.Before(r.c) })
		ss := first(func(m mark) bool { return !m.sess.Before(r.c) })
		b.Logf("slow: wait %.1fms; published +%.1fms, users applied +%.1fms, sessions applied +%.1fms (after append returned)",
			float64(r.s.wait())/1e6, float64(pub.Sub(r.s.appended))/1e6, float64(us.Sub(r.s.appended))/1e6, float64(ss.Sub(r.s.appended))/1e6)
	}
	b.Logf("%d of %d slow; load %s", slow, len(recs), loadavg())
}

// A transaction with an xid, open across an append, ends 5 ms after it.
func BenchmarkZZHeldXmin(b *testing.B) {
	for _, poll := range []time.Duration{0, 5 * time.Millisecond} {
		p := startPipelineWith(b, []projections.Projection{projections.Users{}}, eventstore.RelayConfig{Poll: poll})
		ctx := context.Background()
		var w []time.Duration
		for range 60 {
			tx, err := p.pool.Begin(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := tx.Exec(ctx, `SELECT pg_current_xact_id()`); err != nil {
				b.Fatal(err)
			}
			id := uuid.New()
			c, err := p.store.Append(ctx, "user-"+id.String(), 0, registration(id, p.tenant))
			if err != nil {
				b.Fatal(err)
			}
			appended := time.Now()
			time.Sleep(5 * time.Millisecond)
			if err := tx.Commit(ctx); err != nil {
				b.Fatal(err)
			}
			if err := p.runner.Wait(ctx, "users", c.Last); err != nil {
				b.Fatal(err)
			}
			w = append(w, time.Since(appended))
		}
		b.Logf("relay poll %v: other tx ends 5ms after the append; wait p50 %.1f p99 %.1f max %.1f ms", poll, quantile(w, .5), quantile(w, .99), quantile(w, 1))
	}
}

func BenchmarkZZEncodeUUIDs(b *testing.B) {
	m := pgtype.NewMap()
	ids := make([]uuid.UUID, 10000)
	pids := make([]pgtype.UUID, 10000)
	for i := range ids {
		ids[i] = uuid.New()
		pids[i] = pgtype.UUID{Bytes: ids[i], Valid: true}
	}
	b.Run("[]uuid.UUID", func(b *testing.B) {
		for b.Loop() {
			if _, err := m.Encode(pgtype.UUIDArrayOID, pgtype.BinaryFormatCode, ids, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	m2 := pgtype.NewMap()
	m2.TryWrapEncodePlanFuncs = append([]pgtype.TryWrapEncodePlanFunc{tryWrapGoogleUUID}, m2.TryWrapEncodePlanFuncs...)
	b.Run("[]uuid.UUID+wrap", func(b *testing.B) {
		for b.Loop() {
			if _, err := m2.Encode(pgtype.UUIDArrayOID, pgtype.BinaryFormatCode, ids, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	one, _ := m.Encode(pgtype.UUIDArrayOID, pgtype.BinaryFormatCode, pids, nil)
	two, _ := m2.Encode(pgtype.UUIDArrayOID, pgtype.BinaryFormatCode, ids, nil)
	if string(one) != string(two) {
		b.Fatal("different encodings")
	}
	raw := make([][16]byte, len(ids))
	for i := range ids {
		raw[i] = ids[i]
	}
	b.Run("[][16]byte", func(b *testing.B) {
		for b.Loop() {
			if _, err := m.Encode(pgtype.UUIDArrayOID, pgtype.BinaryFormatCode, raw, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("[]pgtype.UUID", func(b *testing.B) {
		for b.Loop() {
			if _, err := m.Encode(pgtype.UUIDArrayOID, pgtype.BinaryFormatCode, pids, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}

type googleUUIDEncodePlan struct{ next pgtype.EncodePlan }

func (p *googleUUIDEncodePlan) SetNext(n pgtype.EncodePlan) { p.next = n }
func (p *googleUUIDEncodePlan) Encode(v any, buf []byte) ([]byte, error) {
	return p.next.Encode(pgtype.UUID{Bytes: v.(uuid.UUID), Valid: true}, buf)
}

func tryWrapGoogleUUID(v any) (pgtype.WrappedEncodePlanNextSetter, any, bool) {
	if id, ok := v.(uuid.UUID); ok {
		return &googleUUIDEncodePlan{}, pgtype.UUID{Bytes: id, Valid: true}, true
	}
	return nil, nil, false
}

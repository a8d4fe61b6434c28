package commands

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/authd/authd/codes"
	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/mail"
	"github.com/authd/authd/password"
	"github.com/authd/authd/ratelimit"
	"github.com/authd/authd/revocation"
	"github.com/authd/authd/testenv"
)

// pathKey marks the context of the request whose statements a tracer
// records.
type pathKey struct{}

// statements records the SQL each marked request sends, batches included.
type statements struct {
	mu  sync.Mutex
	sql map[string][]string
}

func (s *statements) record(ctx context.Context, sql string) {
	path, ok := ctx.Value(pathKey{}).(string)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sql[path] = append(s.sql[path], strings.Join(strings.Fields(sql), " "))
}

func (s *statements) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	s.record(ctx, d.SQL)
	return ctx
}

func (s *statements) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (s *statements) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	return ctx
}

func (s *statements) TraceBatchQuery(ctx context.Context, _ *pgx.Conn, d pgx.TraceBatchQueryData) {
	s.record(ctx, "[batch] "+d.SQL)
}

func (s *statements) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

// tracedApp is the commands over a fresh database whose statements st
// records, with real parts throughout and no worker draining its queue, so
// that what each command hands off stays there to be counted.
func tracedApp(t *testing.T) (*App, *statements) {
	t.Helper()
	_, url := testenv.Database(t)
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	st := &statements{sql: map[string][]string{}}
	cfg.ConnConfig.Tracer = st
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	limiter := ratelimit.New(pool, time.Now)
	app := New(Deps{
		Store:    eventstore.NewStore(pool, testenv.Sealer(t), prometheus.NewRegistry()),
		Hasher:   password.NewHasher(password.OWASP(), 2, 8),
		Codes:    codes.New(pool, bytes.Repeat([]byte{3}, codes.KeySize), time.Now),
		Mail:     mail.NewLog(testenv.Logger(t)),
		Throttle: limiter,
		Limits:   limiter,
		Revoked:  revocation.New(time.Now),
		Log:      testenv.Logger(t),
		Now:      time.Now,
		Product:  "authd",
	})
	return app, st
}

// addUser appends a verified account for email with password pw.
func addUser(t *testing.T, a *App, email, pw string) uuid.UUID {
	t.Helper()
	hash, err := a.d.Hasher.Hash(t.Context(), pw)
	if err != nil {
		t.Fatal(err)
	}
	id, tenant := uuid.New(), uuid.New()
	reg := &domain.UserRegistered{UserID: id, TenantID: tenant, Email: email, Name: "Owner"}
	reg.Secret.PasswordHash = hash
	c := a.newChange(Request{IP: "192.0.2.1"})
	if err := c.add(domain.UserStream(id), 0, tenant, id, reg, &domain.EmailVerified{UserID: id}); err != nil {
		t.Fatal(err)
	}
	c.write.Claims = []eventstore.Claim{{Scope: emailScope, Key: email, Owner: id.String()}}
	if _, err := a.commit(t.Context(), c); err != nil {
		t.Fatal(err)
	}
	return id
}

// An address with an account and one without must not be told apart by
// how long /login (wrong password) or /otp/send take: both run the same
// statements, in the same order, and hand the same number of jobs to the
// background queue. What each path does is compared, never its time.
func TestUnknownAddressesDoTheSameWorkAsKnownOnes(t *testing.T) {
	t.Parallel()
	a, st := tracedApp(t)
	addUser(t, a, "owner@example.com", "correct horse battery staple")
	r := Request{IP: "198.51.100.7", UserAgent: "probe", RequestID: "r"}

	run := func(path string, do func(ctx context.Context) error) (sql []string, handoffs int) {
		t.Helper()
		before := len(a.jobs)
		ctx := context.WithValue(t.Context(), pathKey{}, path)
		if err := do(ctx); err != nil && err != ErrInvalidCredentials {
			t.Fatalf("%s: %v", path, err)
		}
		st.mu.Lock()
		defer st.mu.Unlock()
		return st.sql[path], len(a.jobs) - before
	}
	compare := func(what string, known, unknown func(ctx context.Context) error) {
		t.Helper()
		for round := range 2 { // the second time, with the throttle's rows in place
			k, kh := run(fmt.Sprintf("%s known %d", what, round), known)
			u, uh := run(fmt.Sprintf("%s unknown %d", what, round), unknown)
			if len(k) == 0 {
				t.Fatalf("%s: no statements recorded", what)
			}
			if !slices.Equal(k, u) {
				t.Errorf("%s, round %d: the statements differ\nknown address:\n  %s\nunknown address:\n  %s",
					what, round+1, strings.Join(k, "\n  "), strings.Join(u, "\n  "))
			}
			if kh != uh || kh != 1 {
				t.Errorf("%s, round %d: handed off %d jobs for the known address and %d for the unknown one; want 1 each", what, round+1, kh, uh)
			}
		}
	}
	compare("login with a wrong password",
		func(ctx context.Context) error {
			_, err := a.Login(ctx, "owner@example.com", "wrong password", r)
			return err
		},
		func(ctx context.Context) error {
			_, err := a.Login(ctx, "nobody@example.com", "wrong password", r)
			return err
		})
	compare("otp/send",
		func(ctx context.Context) error { return a.SendCode(ctx, "owner@example.com", PurposeLogin, r) },
		func(ctx context.Context) error { return a.SendCode(ctx, "nobody@example.com", PurposeLogin, r) })
}

// Package testenv gives each test its own Postgres database and its own
// JetStream stream on the real servers, so tests run in parallel and a missing
// service fails the test loudly instead of skipping it.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/authd/authd/internal/pgpool"
	"github.com/authd/authd/migrations"
)

// PostgresURL is the server tests use; AUTHD_TEST_POSTGRES overrides it.
func PostgresURL() string {
	if u := os.Getenv("AUTHD_TEST_POSTGRES"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
}

const startPostgres = "start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"

// Database creates a fresh, migrated database for the test and drops it when
// the test ends. It returns a pool on it and its URL.
func Database(t testing.TB) (*pgxpool.Pool, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := "authd_test_" + Suffix()
	url := withDatabase(t, name)
	if err := migrations.EnsureDatabase(ctx, url); err != nil {
		t.Fatalf("Postgres is not reachable at %s (%v); %s", PostgresURL(), err, startPostgres)
	}
	t.Cleanup(func() { dropDatabase(t, name) })
	pool, err := pgpool.Open(ctx, url, 20)
	if err != nil {
		t.Fatalf("open test database: %v", err)
	}
	t.Cleanup(pool.Close)
	if err := migrations.Up(ctx, pool, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatalf("migrate test database: %v", err)
	}
	return pool, url
}

// OneConnection opens a pool of a single connection on url, so that every
// statement of the test runs in one session, and closes it when the test
// ends.
func OneConnection(t testing.TB, url string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgpool.Open(context.Background(), url, 1)
	if err != nil {
		t.Fatalf("open one connection: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// Plans says how many generic and custom plans Postgres has made, in the
// session of a OneConnection pool, for the prepared statements whose text
// contains fragment.
func Plans(t testing.TB, pool *pgxpool.Pool, fragment string) (generic, custom int64) {
	t.Helper()
	if err := pool.QueryRow(context.Background(), `SELECT coalesce(sum(generic_plans), 0), coalesce(sum(custom_plans), 0)
		FROM pg_prepared_statements WHERE strpos(statement, $1) > 0`, fragment).Scan(&generic, &custom); err != nil {
		t.Fatalf("count the plans of %q: %v", fragment, err)
	}
	return generic, custom
}

func withDatabase(t testing.TB, name string) string {
	t.Helper()
	cfg, err := pgx.ParseConfig(PostgresURL())
	if err != nil {
		t.Fatalf("parse AUTHD_TEST_POSTGRES: %v", err)
	}
	return fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable", cfg.User, cfg.Host, cfg.Port, name)
}

func dropDatabase(t testing.TB, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, PostgresURL())
	if err != nil {
		t.Errorf("drop test database %s: %v", name, err)
		return
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		t.Errorf("drop test database %s: %v", name, err)
	}
}

// Suffix is a short random name part for per-test databases and streams.
func Suffix() string {
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	return strings.ToLower(hex.EncodeToString(b))
}

// Package pgpool opens authd's Postgres connection pool with the session
// settings the event log relies on, and tells which of Postgres' failures
// mean "not now" rather than "wrong".
package pgpool

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Open connects to url and checks the connection.
func Open(ctx context.Context, url string, maxConns int32) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse DATABASE_URL: %w", err)
	}
	// Session settings every authd connection gets. The relay reads only
	// below the oldest running transaction, so one transaction left open
	// would stall the publication of every event: these bound how long any
	// can stay open.
	for k, v := range map[string]string{
		"statement_timeout":                   "30s",
		"idle_in_transaction_session_timeout": "10s",
		"lock_timeout":                        "10s",
		"application_name":                    "authd",
		// authd's statements are short. Postgres' planner, misled by a
		// small table never analyzed (stream_erasures, empty), priced the
		// purge's check high enough to JIT-compile it: 20-80 ms of
		// compiling at every relay checkpoint save (up to four a second),
		// for a query that read no row.
		"jit": "off",
	} {
		if _, set := cfg.ConnConfig.RuntimeParams[k]; !set {
			cfg.ConnConfig.RuntimeParams[k] = v
		}
	}
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open postgres pool: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to postgres at %s:%d/%s: %w", cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Database, err)
	}
	return pool, nil
}

// Unavailable reports whether err says that Postgres could not do the work
// for now rather than that the work was wrong: a deadlock or serialization
// failure that retries did not get past, a lock or statement timeout, too
// many connections, a server shutting down or not reachable. Such a failure
// deserves "retry shortly", not an internal error.
func Unavailable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "40001", "40P01", // serialization_failure, deadlock_detected
			"55P03",                   // lock_not_available (lock_timeout)
			"57014",                   // query_canceled (statement_timeout)
			"53300",                   // too_many_connections
			"57P01", "57P02", "57P03": // admin_shutdown, crash_shutdown, cannot_connect_now
			return true
		}
		return false
	}
	var connectErr *pgconn.ConnectError
	return errors.As(err, &connectErr)
}

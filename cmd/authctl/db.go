package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/authd/authd/internal/config"
	"github.com/authd/authd/internal/pgpool"
	"github.com/authd/authd/internal/seal"
)

// connectTimeout bounds the wait for Postgres to answer at all, so a wrong
// DATABASE_URL fails in seconds rather than hanging the operator's shell.
const connectTimeout = 15 * time.Second

// openDB connects to the database. The pool is small: every command runs its
// queries one after the other.
func openDB(ctx context.Context, databaseURL string) (*pgxpool.Pool, error) {
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	return pgpool.Open(ctx, withAppName(databaseURL), 4)
}

// withAppName names authctl's sessions in pg_stat_activity (pgpool would call
// them authd), unless the URL names them itself. Only URL-form DSNs are
// touched: the query string is appended to, never re-encoded.
func withAppName(dsn string) string {
	if !strings.HasPrefix(dsn, "postgres://") && !strings.HasPrefix(dsn, "postgresql://") {
		return dsn
	}
	base, query, _ := strings.Cut(dsn, "?")
	if strings.Contains(base, "#") || strings.Contains(query, "#") {
		return dsn
	}
	q, err := url.ParseQuery(query)
	if err != nil || q.Has("application_name") {
		return dsn
	}
	if query == "" {
		return base + "?application_name=authctl"
	}
	return dsn + "&application_name=authctl"
}

// schemaHint explains a missing table: the database was never migrated.
func schemaHint(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P01" { // undefined_table
		return fmt.Errorf("%w (is the database migrated? run: authctl migrate)", err)
	}
	return err
}

// openSealedDB is openSealer and openDB, for the commands that read what
// authd sealed in the database; the caller closes the pool.
func openSealedDB(ctx context.Context, cfg config.Config) (*seal.Sealer, *pgxpool.Pool, error) {
	sealer, err := openSealer(cfg)
	if err != nil {
		return nil, nil, err
	}
	pool, err := openDB(ctx, cfg.DatabaseURL)
	if err != nil {
		return nil, nil, err
	}
	return sealer, pool, nil
}

// openSealer is authd's master key, for the commands that open what authd
// sealed: keys, and the personal fields of events (events ls, projections
// rebuild, check). Without it they refuse to run rather than show or
// rebuild from events whose personal fields they cannot read.
func openSealer(cfg config.Config) (*seal.Sealer, error) {
	keys, created, err := cfg.SealingKeys()
	if err != nil {
		return nil, err
	}
	if created {
		// Development: there was no key authd generated in the same data dir.
		return nil, fmt.Errorf("no AUTHD_MASTER_KEY and no dev key in %s: run authctl with authd's environment", cfg.DataDir)
	}
	return seal.New(keys...)
}

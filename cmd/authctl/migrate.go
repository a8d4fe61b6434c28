package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/authd/authd/migrations"
)

func setupMigrate(*flag.FlagSet) func(context.Context, *cli, []string) error {
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) > 0 {
			return usagef("takes no arguments, got %q", args)
		}
		cfg, err := c.loadConfig()
		if err != nil {
			return err
		}
		name := "(unknown)"
		if pc, err := pgx.ParseConfig(cfg.DatabaseURL); err == nil {
			name = pc.Database
		}
		if err := migrations.EnsureDatabase(ctx, cfg.DatabaseURL); err != nil {
			return err
		}
		pool, err := openDB(ctx, cfg.DatabaseURL)
		if err != nil {
			return err
		}
		defer pool.Close()

		rec := &migrationRecorder{out: c.stdout}
		if err := migrations.Up(ctx, pool, slog.New(rec)); err != nil {
			return err
		}
		if rec.err != nil {
			return fmt.Errorf("print applied migrations: %w", rec.err)
		}
		left, err := migrations.Pending(ctx, pool)
		if err != nil {
			return err
		}
		if left > 0 {
			return fmt.Errorf("database %q still lacks %d migrations after applying them", name, left)
		}
		applied := "nothing to apply"
		if rec.applied > 0 {
			applied = fmt.Sprintf("%d applied", rec.applied)
		}
		_, err = fmt.Fprintf(c.stdout, "database %q is up to date (%s)\n", name, applied)
		return err
	}
}

// migrationRecorder is the slog handler migrations.Up logs to: it prints
// each migration applied. migrations.Up only logs what it applied, so this is
// how authctl learns it.
type migrationRecorder struct {
	out     io.Writer
	applied int
	err     error
}

func (r *migrationRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (r *migrationRecorder) Handle(_ context.Context, rec slog.Record) error {
	var (
		file     string
		version  int64
		duration time.Duration
	)
	rec.Attrs(func(a slog.Attr) bool {
		v := a.Value.Resolve()
		switch {
		case a.Key == "file":
			file = v.String()
		case a.Key == "version" && v.Kind() == slog.KindInt64:
			version = v.Int64()
		case a.Key == "duration" && v.Kind() == slog.KindDuration:
			duration = v.Duration()
		}
		return true
	})
	if rec.Message != "migration applied" {
		return nil
	}
	r.applied++
	if _, err := fmt.Fprintf(r.out, "applied %s (version %d, %s)\n", file, version, duration.Round(time.Millisecond)); err != nil && r.err == nil {
		r.err = err
	}
	return nil
}

func (r *migrationRecorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *migrationRecorder) WithGroup(string) slog.Handler      { return r }

package testenv

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Statements records the SQL that code sends to Postgres through a pool it
// traces, under the label of the context each statement ran with, so a test
// can compare what two paths of a command do (the same statements, the same
// number of times) instead of timing them. Statements of a pipelined batch
// count one each, like separate ones.
type Statements struct {
	mu      sync.Mutex
	byLabel map[string][]string
}

type statementsLabel struct{}

// NewStatements returns an empty recorder.
func NewStatements() *Statements {
	return &Statements{byLabel: map[string][]string{}}
}

// Label returns ctx with the label that the statements run with it are
// recorded under; unlabelled statements (a background job's) are not.
func (s *Statements) Label(ctx context.Context, label string) context.Context {
	return context.WithValue(ctx, statementsLabel{}, label)
}

// Of returns the statements recorded under label, in order, each with its
// whitespace collapsed.
func (s *Statements) Of(label string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.byLabel[label])
}

// Pool opens a pool on url whose statements s records, and closes it when
// the test ends.
func (s *Statements) Pool(t testing.TB, url string, maxConns int32) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatalf("parse %s: %v", url, err)
	}
	cfg.MaxConns = maxConns
	cfg.ConnConfig.Tracer = s
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatalf("open a traced pool: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func (s *Statements) record(ctx context.Context, sql string) {
	label, ok := ctx.Value(statementsLabel{}).(string)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.byLabel[label] = append(s.byLabel[label], strings.Join(strings.Fields(sql), " "))
}

// TraceQueryStart records a statement sent on its own (pgx.QueryTracer).
func (s *Statements) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	s.record(ctx, data.SQL)
	return ctx
}

// TraceQueryEnd is part of pgx.QueryTracer.
func (s *Statements) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// TraceBatchStart is part of pgx.BatchTracer.
func (s *Statements) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	return ctx
}

// TraceBatchQuery records each statement of a batch (pgx.BatchTracer).
func (s *Statements) TraceBatchQuery(ctx context.Context, _ *pgx.Conn, data pgx.TraceBatchQueryData) {
	s.record(ctx, data.SQL)
}

// TraceBatchEnd is part of pgx.BatchTracer.
func (s *Statements) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

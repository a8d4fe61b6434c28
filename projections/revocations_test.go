package projections

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/authd/authd/internal/testenv"
)

// explain returns the plan of a query with sequential scans off, as the
// planner would choose on a log of millions of events.
func explain(t *testing.T, sql string, args ...any) string {
	t.Helper()
	pool, _ := testenv.Database(t)
	ctx := context.Background()
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SET enable_seqscan = off`); err != nil {
		t.Fatal(err)
	}
	rows, err := conn.Query(ctx, `EXPLAIN `+sql, args...)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(plan, "\n")
}

// The backstop's read finds the revocations through their partial index,
// not by reading every event.
func TestRevocationsAreReadThroughTheirIndex(t *testing.T) {
	t.Parallel()
	if plan := explain(t, revocationsSQL, "0"); !strings.Contains(plan, "events_revocations_by_tx") {
		t.Fatalf("the revocations are not read through their index:\n%s", plan)
	}
}

// On a log of millions of events, the resets and deletions are found
// through their partial index, not by reading every event.
func TestUserCutsAreReadThroughTheirIndex(t *testing.T) {
	t.Parallel()
	if plan := explain(t, userCutsSQL, time.Now()); !strings.Contains(plan, "events_user_cuts") {
		t.Fatalf("the password resets and deletions are not read through their index:\n%s", plan)
	}
}

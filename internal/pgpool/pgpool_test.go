package pgpool_test

import (
	"context"
	"testing"

	"github.com/authd/authd/internal/pgpool"
	"github.com/authd/authd/internal/testenv"
)

// Every connection of the pool runs without JIT: a query the planner
// misprices (the purge's check over a table never analyzed) otherwise costs
// tens of milliseconds of compiling each time it runs.
func TestSessionsRunWithoutJIT(t *testing.T) {
	t.Parallel()
	_, url := testenv.Database(t)
	pool, err := pgpool.Open(context.Background(), url, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var jit string
	if err := pool.QueryRow(context.Background(), `SHOW jit`).Scan(&jit); err != nil {
		t.Fatal(err)
	}
	if jit != "off" {
		t.Errorf("jit = %q on an authd connection, want off", jit)
	}
}

//go:build chaos

package chaos

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/authd/authd/internal/testenv"
)

// pgVersion is the Postgres major version of the machine's clusters.
const pgVersion = "15"

// pgCluster is a Postgres cluster of the suite's own, which it may restart
// without disturbing the machine's shared one that other tests use.
type pgCluster struct {
	name string
	port int
}

// startPostgres creates and starts a cluster with trust authentication on a
// free port, and drops it when the test ends, whatever the outcome.
func startPostgres(t *testing.T) *pgCluster {
	t.Helper()
	c := &pgCluster{name: "chaos" + testenv.Suffix(), port: testenv.FreePort(t)}
	// Three authd instances hold about 15 connections each, authctl and
	// the suite a few more. fsync off: the suite restarts Postgres cleanly,
	// never pulls its power, and the machine is shared.
	run(t, "pg_createcluster", pgVersion, c.name, "-p", fmt.Sprint(c.port),
		"-o", "max_connections=150", "-o", "fsync=off", "--", "-A", "trust")
	t.Cleanup(func() {
		if out, err := exec.Command("pg_dropcluster", "--stop", pgVersion, c.name).CombinedOutput(); err != nil {
			t.Errorf("pg_dropcluster %s: %v: %s", c.name, err, out)
		}
	})
	run(t, "pg_ctlcluster", pgVersion, c.name, "start")
	return c
}

// url is a database of the cluster.
func (c *pgCluster) url(database string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.port, database)
}

// restart stops Postgres (fast: open transactions are rolled back and every
// connection is closed) and starts it again.
func (c *pgCluster) restart(t *testing.T) {
	t.Helper()
	run(t, "pg_ctlcluster", pgVersion, c.name, "restart", "-m", "fast")
}

// terminateBackends ends every connection to database but the one asking,
// as an operator's pg_terminate_backend or a failover would, and says how
// many it ended.
func (c *pgCluster) terminateBackends(t *testing.T, database string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.url("postgres"))
	if err != nil {
		t.Fatalf("connect to the chaos cluster: %v", err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))
		FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`, database).Scan(&n); err != nil {
		t.Fatalf("terminate the backends of %s: %v", database, err)
	}
	return n
}

// run runs a command, failing the test with its output when it fails.
func run(t *testing.T, name string, args ...string) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}
